/**
 * The needle experiment (src/needle.ts, docs/routing-quality.md): the predicted hit rate's limits and a Monte
 * Carlo check of the formula, the generator planting the gap it says, a tiny routed run inside a binomial band of
 * the prediction (the model holds exactly for Gaussian keys), and the command's flag errors.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { UsageError } from '@moba/testkit';
import { MobaError, Rng } from '../src/index.js';
import { needleMu, noiseProblem, normalTail, paperSnr, plantNeedles, predictHitRate, runNeedle, wilson } from '../src/needle.js';
import { needleCommand } from '../src/needle-cli.js';

const dir = mkdtempSync(join(tmpdir(), 'moba-needle-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('predictHitRate', () => {
  it('has the stated limits', () => {
    expect(predictHitRate(40, 500, 10)).toBeGreaterThan(1 - 1e-9); // Δμ → ∞
    expect(predictHitRate(-40, 500, 10)).toBeLessThan(1e-9);
    for (const [m, k] of [[100, 11], [31, 2], [1023, 64], [5, 3]] as const) {
      expect(predictHitRate(0, m, k)).toBeCloseTo((k - 1) / m, 5); // chance: k−1 slots among m exchangeable blocks
    }
    expect(predictHitRate(0.3, 4, 5)).toBe(1); // every eligible block fits
    expect(predictHitRate(5, 4, 1)).toBe(0); // topk 1: only the own block
    let prev = 0;
    for (const mu of [-1, 0, 0.5, 1, 2, 3]) {
      const p = predictHitRate(mu, 64, 5);
      expect(p).toBeGreaterThan(prev);
      prev = p;
    }
  });

  it('matches a Monte Carlo of the order statistics it models', () => {
    const rng = new Rng(7);
    const [m, k, mu, n] = [20, 4, 1.2, 20000];
    let hits = 0;
    for (let i = 0; i < n; i++) {
      const x = mu + rng.normal();
      let above = 0;
      for (let j = 0; j < m - 1; j++) if (rng.normal() > x) above++;
      if (above <= k - 2) hits++;
    }
    const [lo, hi] = wilson(hits, n, 3.29);
    const p = predictHitRate(mu, m, k);
    expect(p).toBeGreaterThanOrEqual(lo);
    expect(p).toBeLessThanOrEqual(hi);
  });

  it('normal tail and the SNR relations', () => {
    expect(normalTail(0)).toBeCloseTo(0.5, 7);
    expect(normalTail(1.959963985)).toBeCloseTo(0.025, 6);
    expect(normalTail(-3) + normalTail(3)).toBeCloseTo(1, 7);
    expect(needleMu(1, 128, 32)).toBeCloseTo(Math.SQRT2 * paperSnr(1, 128, 32), 12);
    expect(() => predictHitRate(Number.NaN, 4, 2)).toThrow(MobaError);
    expect(() => predictHitRate(1, 0, 2)).toThrow(/m = 0/);
  });
});

describe('generator', () => {
  it('plants needles with the stated score gap, outside the own block, invisible to the other rows', () => {
    const [T, H, rows, d, B, delta] = [2048, 2, 32, 32, 32, 1.5];
    const base = noiseProblem(T, H, rows, d, 3);
    const p = plantNeedles(base, B, delta, 1, 4);
    const gaps: number[] = [];
    let cross = 0;
    for (let a = 0; a < rows; a++) {
      for (let h = 0; h < H; h++) {
        const pos = p.needle[a * H + h]!;
        expect(Math.floor(pos / B)).toBeLessThan(Math.floor((T - rows + a) / B));
        const qo = (a * H + h) * d;
        const score = (k: Float32Array, t: number): number => {
          let s = 0;
          for (let c = 0; c < d; c++) s += base.q[qo + c]! * k[(t * H + h) * d + c]!;
          return s;
        };
        let mean = 0;
        for (let t = 0; t < T; t++) if (t !== pos) mean += score(p.k, t);
        gaps.push(score(p.k, pos) - mean / (T - 1));
        for (let b = 0; b < rows; b++) {
          if (b === a) continue;
          const other = p.needle[b * H + h]!;
          if (other !== pos) cross = Math.max(cross, Math.abs(score(p.k, other) - score(base.k, other)));
        }
      }
    }
    const m = gaps.reduce((x, y) => x + y, 0) / gaps.length;
    // each gap is Δμ plus a key's score noise (std 1/sqrt(d)): the mean of 64 within 4 standard errors
    expect(Math.abs(m - delta)).toBeLessThan((4 / Math.sqrt(d)) / Math.sqrt(gaps.length));
    expect(cross).toBeLessThan(1e-5); // orthonormal queries: another row's needle moves no score of this row
  });

  it('checks its arguments', () => {
    expect(() => noiseProblem(100, 1, 40, 32, 1)).toThrow(/rows = 40/);
    expect(() => plantNeedles(noiseProblem(100, 1, 4, 8, 1), 4, 1, 5, 1)).toThrow(/span = 5/);
  });
});

describe('routed run', () => {
  it('measures a hit rate within a binomial band of the prediction (Gaussian keys: the model is exact)', async () => {
    const r = await runNeedle({
      backend: 'cpu', threads: 1, tokens: 2048, rows: 256, trials: 1, deltas: [0, 1], headDims: [32], blockSizes: [32],
      fraction: 1 / 8, span: 4, kconv: 0, kconvDelta: 0, seed: 5,
    });
    expect(r.cells).toHaveLength(2);
    for (const c of r.cells) {
      expect(c.topk).toBe(8);
      expect(c.rows).toBe(256);
      const [lo, hi] = wilson(c.hits, c.rows, 3.29);
      expect(c.predicted).toBeGreaterThanOrEqual(lo);
      expect(c.predicted).toBeLessThanOrEqual(hi);
    }
    expect(r.cells[0]!.predicted).toBeCloseTo(r.cells[0]!.chance, 4); // Δμ = 0 predicts chance
    expect(r.cells[1]!.measured).toBeGreaterThan(r.cells[0]!.measured + 0.2);
  });

  it('prints the table, writes the SVG and rejects bad flags', async () => {
    let out = '';
    const io = { stdout: { write: (s: string) => (out += s) }, stderr: { write: () => true } };
    const svg = join(dir, 'n.svg');
    const args = ['--tokens', '1024', '--rows', '64', '--head-dims', '16', '--block-sizes', '16,32', '--delta', '1', '--kconv-delta', '1',
      '--fraction', '0.125', '--span', '4', '--threads', '1', '--svg', svg];
    expect(await needleCommand(args, io)).toBe(0);
    expect(out).toMatch(/needle routing on cpu/);
    expect(out.split('\n').filter((l) => /^\s+16\s+(16|32)\s/.test(l))).toHaveLength(2);
    const text = readFileSync(svg, 'utf8');
    expect(text.startsWith('<svg')).toBe(true);
    expect(text.match(/<polyline/g)).toHaveLength(2);
    const bad = async (a: string[], re: RegExp): Promise<void> => {
      await expect(needleCommand(a, io)).rejects.toThrow(UsageError);
      await expect(needleCommand(a, io)).rejects.toThrow(re);
    };
    await bad(['--delta', '1,x'], /--delta x/);
    await bad(['--tokens', '4096', '--block-sizes', '512'], /topk 1/);
    await bad(['--kconv-delta', '3'], /--kconv-delta 3/);
    await bad(['--span', '32', '--block-sizes', '16'], /--span 32/);
    await bad(['--head-dim', '64'], /unknown flag --head-dim/);
    await bad(['--threads', '2', '--backend', 'webgpu'], /--threads/);
  });
});
