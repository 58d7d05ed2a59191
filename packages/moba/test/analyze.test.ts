/**
 * `analyzeRouting` and `moba analyze`: recall = 1 when topk covers every block (every dense method); recall, top-1
 * hit rate, attended fraction and output error against a brute-force float64 computation with a full T × T score
 * matrix (small T, two sequences, GQA, with and without kconv); the CLI's flag errors; the report, JSON and SVG.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { type HostTensor, Rng, createBackend, hostTensor, resolveConfig, toFloat64 } from '../src/index.js';
import { keysOf, referenceKconv } from '@moba/core/reference';
import { analyzeRouting, quantile } from '../src/analyze.js';
import { uniformKconvWeight } from '../src/analyze-cli.js';
import { main } from '../src/main.js';
import { wellFormed } from './xml.js';

const dir = mkdtempSync(join(tmpdir(), 'moba-analyze-'));
const cpu = await createBackend('cpu', { threads: 1 });
afterAll(async () => {
  rmSync(dir, { recursive: true, force: true });
  await cpu.destroy();
});

const T = 256, Hq = 4, Hkv = 2, D = 16;
const rng = new Rng(7);
const rand = (H: number, std = 1): HostTensor<'f32'> => hostTensor('f32', [T, H, D], rng.normals(T * H * D, std));
const q = rand(Hq, 2); // std 2: peaked softmax, so recall is far from the attended fraction
const k = rand(Hkv);
const v = rand(Hkv);
const cuSeqlens = Int32Array.from([0, 100, T]);

/** Brute force, float64, full T × T scores: recall per (row, head), attended fraction, top-1 hits, out error. */
async function bruteForce(B: number, topk: number, w: HostTensor | null) {
  const kh = w ? referenceKconv(toFloat64(k), toFloat64(w), Hkv * D, w.shape[1]!, { cuSeqlens }) : toFloat64(k);
  const kUsed = w ? await cpu.kconv(await cpu.upload(k), await cpu.upload(w), { cuSeqlens }) : await cpu.upload(k);
  const cfg = resolveConfig({ blockSize: B, topk }, D);
  const r = await cpu.route(await cpu.upload(q), kUsed, { cuSeqlens }, cfg);
  const idx = await cpu.routingIndices(r);
  const qh = toFloat64(q), vh = toFloat64(v);
  const S = new Float64Array(T * T); // the T × T scores the library never holds
  const recalls: number[] = [];
  let attended = 0, causal = 0, hits = 0, num = 0, den = 0;
  for (let h = 0; h < Hq; h++) {
    const g = Math.floor(h / (Hq / Hkv));
    for (let t = 0; t < T; t++) for (let p = 0; p < T; p++) {
      let dot = 0;
      for (let d = 0; d < D; d++) dot += qh[(t * Hq + h) * D + d]! * kh[(p * Hkv + g) * D + d]!;
      S[t * T + p] = dot;
    }
    for (let t = 0; t < T; t++) {
      const s = t < 100 ? { start: 0, len: 100 } : { start: 100, len: T - 100 };
      const keys = keysOf(idx, s, Hq, cfg, t, h);
      let all = 0, sel = 0, best = -Infinity, arg = -1;
      const o = new Float64Array(D), od = new Float64Array(D);
      for (let p = s.start; p <= t; p++) {
        const e = Math.exp(S[t * T + p]! * cfg.scale);
        all += e;
        for (let d = 0; d < D; d++) od[d]! += e * vh[(p * Hkv + g) * D + d]!;
        if (S[t * T + p]! > best) { best = S[t * T + p]!; arg = p; }
      }
      for (const p of keys) {
        const e = Math.exp(S[t * T + p]! * cfg.scale);
        sel += e;
        for (let d = 0; d < D; d++) o[d]! += e * vh[(p * Hkv + g) * D + d]!;
      }
      recalls.push(sel / all);
      attended += keys.length;
      causal += t - s.start + 1;
      const hb = Math.floor((arg - s.start) / B);
      if (keys.some((p) => Math.floor((p - s.start) / B) === hb)) hits++;
      for (let d = 0; d < D; d++) {
        num += (o[d]! / sel - od[d]! / all) ** 2;
        den += (od[d]! / all) ** 2;
      }
    }
  }
  cpu.dispose(r);
  const sorted = Float64Array.from(recalls).sort();
  return {
    recall: { mean: recalls.reduce((a, x) => a + x, 0) / recalls.length, p10: quantile(sorted, 0.1), p1: quantile(sorted, 0.01) },
    attendedFraction: attended / causal, top1HitRate: hits / (T * Hq), outRelRms: Math.sqrt(num / den),
  };
}

describe('analyzeRouting', () => {
  it.each(['auto', 'forward', 'reference'] as const)('gives recall 1 and a dense output when topk covers every block (dense %s)', async (dense) => {
    const w = uniformKconvWeight(Hkv * D, 3, 'f32');
    const r = await analyzeRouting(cpu, { q, k, v, cuSeqlens }, { blockSizes: [16, 32], topks: [10], kconv: [null, w] }, { dense, sampleRows: 64 });
    expect(r.dense).toBe(dense === 'auto' ? 'denseForward' : dense);
    expect(r.rows).toHaveLength(4);
    for (const x of r.rows) {
      for (const s of [x.recall.mean, x.recall.p10, x.recall.p1]) expect(Math.abs(s - 1)).toBeLessThan(1e-6);
      expect(x.top1HitRate).toBe(1);
      expect(x.attendedFraction).toBe(1);
      expect(x.outRelRms).toBeLessThan(1e-5);
    }
  });

  it('matches a brute-force float64 computation (two sequences, GQA, with and without kconv)', async () => {
    const w = uniformKconvWeight(Hkv * D, 4, 'f32');
    const r = await analyzeRouting(cpu, { q, k, v, cuSeqlens }, { blockSizes: [8, 32], topks: [2, 3], kconv: [null, w] }, { sampleRows: T });
    expect(r.sampledRows).toBe(T);
    expect(r.vFromK).toBe(false);
    expect(r.rows.map((x) => [x.blockSize, x.topk, x.kconv])).toEqual([[8, 2, 0], [8, 3, 0], [32, 2, 0], [32, 3, 0], [8, 2, 4], [8, 3, 4], [32, 2, 4], [32, 3, 4]]);
    for (const x of r.rows) {
      const bf = await bruteForce(x.blockSize, x.topk, x.kconv ? w : null);
      expect(bf.recall.mean).toBeLessThan(0.95); // not trivial
      expect(x.recall.mean).toBeCloseTo(bf.recall.mean, 5);
      expect(x.recall.p10).toBeCloseTo(bf.recall.p10, 5);
      expect(x.recall.p1).toBeCloseTo(bf.recall.p1, 5);
      expect(x.attendedFraction).toBeCloseTo(bf.attendedFraction, 12);
      expect(x.top1HitRate).toBe(bf.top1HitRate);
      expect(Math.abs(x.outRelRms - bf.outRelRms)).toBeLessThan(1e-4 * bf.outRelRms + 1e-6);
      expect(x.flops.savings).toBeCloseTo(x.flops.dense / x.flops.moba, 12);
    }
  });

  it('uses v = k without v, and the reference dense pass agrees with denseForward', async () => {
    const a = await analyzeRouting(cpu, { q, k }, { blockSizes: [16], topks: [3] }, { sampleRows: 0 });
    const b = await analyzeRouting(cpu, { q, k, v: k }, { blockSizes: [16], topks: [3] }, { sampleRows: 0, dense: 'reference' });
    expect(a.vFromK).toBe(true);
    expect(a.rows[0]!.top1HitRate).toBeNull();
    expect(Math.abs(a.rows[0]!.recall.mean - b.rows[0]!.recall.mean)).toBeLessThan(1e-6);
    expect(Math.abs(a.rows[0]!.outRelRms - b.rows[0]!.outRelRms)).toBeLessThan(1e-5);
  });

  it('rejects bad grids and inputs with a MobaError naming the parameter', async () => {
    await expect(analyzeRouting(cpu, { q, k }, { blockSizes: [], topks: [2] })).rejects.toMatchObject({ code: 'E_RANGE', param: 'blockSizes' });
    await expect(analyzeRouting(cpu, { q, k }, { blockSizes: [16], topks: [0] })).rejects.toMatchObject({ code: 'E_RANGE', param: 'topks[0]' });
    const bad = hostTensor('f32', [T, Hkv, D], Float32Array.from(k.data as Float32Array).fill(NaN, 5, 6));
    await expect(analyzeRouting(cpu, { q, k: bad }, { blockSizes: [16], topks: [2] })).rejects.toMatchObject({ code: 'E_RANGE', param: 'k' });
    await expect(analyzeRouting(cpu, { q, k }, { blockSizes: [16], topks: [2], kconv: [hostTensor('f32', [3, 2])] })).rejects.toMatchObject({ code: 'E_SHAPE' });
  });
});


async function run(...argv: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = '', stderr = '';
  const code = await main(argv, { stdout: { write: (s: string) => (stdout += s) }, stderr: { write: (s: string) => (stderr += s) } });
  return { code, stdout, stderr };
}

const SMALL = ['analyze', '--synthetic', 'gaussian', '--tokens', '512', '--heads', '2', '--head-dim', '16', '--block-sizes', '16,32', '--topks', '2,4', '--kconv', '0,3', '--threads', '1'];

describe('moba analyze', () => {
  it.each([
    [[], /give the inputs/],
    [['--q', 'a.npy'], /give the inputs/],
    [['--synthetic', 'gaussian', '--q', 'a.npy'], /--q reads input files/],
    [['--q', __filename, '--k', __filename, '--tokens', '8'], /--tokens applies to --synthetic/],
    [['--q', 'nope.npy', '--k', 'nope.npy'], /--q nope.npy: no such file/],
    [['--q', __filename, '--k', __filename, '--shape', '4,1,2'], /--shape applies to --format raw/],
    [['--q', __filename, '--k', __filename, '--format', 'raw'], /needs --shape/],
    [['--q', __filename, '--k', __filename, '--format', 'raw', '--shape', '4,2'], /three integers/],
    [['--q', __filename, '--k', __filename, '--format', 'npy', '--name-q', 'x'], /safetensors files only/],
    [['--synthetic', 'gaussian', '--backend', 'webgpu', '--threads', '2'], /--threads applies to --backend cpu/],
    [['--synthetic', 'gaussian', '--kconv', '0,65'], /--kconv 65 is invalid/],
    [['--synthetic', 'gaussian', '--topks', '0'], /--topks 0 is invalid/],
    [['--synthetic', 'gaussian', '--svg', '/nonexistent-dir/x.svg'], /folder .* does not exist/],
    [['--synthetic', 'blue'], /--synthetic blue is invalid/],
  ])('exits 2 on bad flags: %j', async (argv, message) => {
    const r = await run('analyze', ...argv);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(message);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stdout).toBe('');
  });

  it('prints --help and lists the command', async () => {
    const r = await run('analyze', '--help');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/usage: moba analyze/);
    expect((await run('--help')).stdout).toMatch(/\n {2}analyze /);
  });

  it('prints the table and writes a well-formed SVG with one curve per (B, kconv)', async () => {
    const svg = join(dir, 'a.svg');
    const r = await run(...SMALL, '--svg', svg);
    expect(r.code).toBe(0);
    const lines = r.stdout.split('\n');
    expect(lines[0]).toMatch(/^moba analyze on cpu: synthetic gaussian, seed 1/);
    const header = lines.findIndex((l) => /B\s+topk\s+kconv\s+recall\s+p10\s+p1\s+top-1\s+attended/.test(l));
    expect(header).toBeGreaterThan(0);
    expect(lines.slice(header + 1).filter((l) => /^\s+\d+\s+\d+\s+(-|\d+)\s+\d/.test(l))).toHaveLength(8);
    expect(r.stdout).toMatch(new RegExp(`wrote ${svg.replace(/[/.]/g, '\\$&')}`));
    const text = readFileSync(svg, 'utf8');
    expect(text.startsWith('<svg')).toBe(true);
    expect(text.trim().endsWith('</svg>')).toBe(true);
    expect(text.match(/<polyline class="curve"/g)).toHaveLength(4);
    expect(wellFormed(text)).toBe(true);
    expect(wellFormed(text.replace('</title>', ''))).toBe(false);
  });

  it('--json prints the result with one row per grid point', async () => {
    const r = await run(...SMALL, '--json', '--no-svg', '--samples', '64');
    expect(r.code).toBe(0);
    const j = JSON.parse(r.stdout);
    expect(j).toMatchObject({ backend: 'cpu', shape: { T: 512, Hq: 2, Hkv: 2, D: 16, dtype: 'f32', sequences: 1 }, vFromK: false, sampledRows: 64, dense: 'denseForward' });
    expect(j.source).toMatch(/synthetic gaussian/);
    expect(j.rows).toHaveLength(8);
    for (const x of j.rows) {
      expect(Object.keys(x).sort()).toEqual(['attendedFraction', 'blockSize', 'bytes', 'flops', 'kconv', 'kconvIndex', 'outRelRms', 'recall', 'top1HitRate', 'topk']);
      expect(x.recall.p1).toBeLessThanOrEqual(x.recall.p10);
      expect(x.recall.p10).toBeLessThanOrEqual(x.recall.mean + 1e-12);
      expect(x.attendedFraction).toBeGreaterThan(0);
      expect(x.attendedFraction).toBeLessThanOrEqual(1);
      expect(x.flops.savings).toBeGreaterThan(1);
    }
  });
});
