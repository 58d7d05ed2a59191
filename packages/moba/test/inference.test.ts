/**
 * Inference through moba-ts: `createCache` + `mobaStep` (prefill, then decode) on the CPU backend against the
 * float64 reference on the whole sequences so far (SPEC §8), the step's errors, and examples/decode as a user runs it.
 */
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { MobaError, Rng, createBackend, createCache, errorStats, hostTensor, mobaStep, resolveConfig, toFloat64 } from '../src/index.js';
import { referenceForward, referenceRoute } from '@moba/core/reference';
import { createReferenceBackend } from '@moba/testkit';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const catchErr = async (f: () => Promise<unknown>): Promise<MobaError> => {
  try {
    await f();
  } catch (e) {
    if (e instanceof MobaError) return e;
    throw e;
  }
  throw new Error('no error');
};

describe('mobaStep (SPEC §8, §9)', () => {
  it('prefill of two prompts, then decode steps, equal the reference on the whole sequences', async () => {
    const [Hq, Hkv, D, B, topk] = [4, 2, 16, 8, 3];
    const rng = new Rng(3);
    const b = await createBackend('cpu', { threads: 1 });
    const cache = await createCache(b, { Hkv, D, dtype: 'f32', blockSize: B, capacityTokens: 512 });
    const seqs = [cache.newSequence(), cache.newSequence()];
    const keys: number[][] = [[], []];
    const vals: number[][] = [[], []];
    let lens = [37, 21];
    let worst = 0;
    for (let step = 0; step < 6; step++) {
      const T = lens[0]! + lens[1]!;
      const q = rng.normals(T * Hq * D);
      const k = rng.normals(T * Hkv * D);
      const v = rng.normals(T * Hkv * D);
      const cu = Int32Array.of(0, lens[0]!, T);
      const { out, lse } = await mobaStep(b, cache, { seqs, q: hostTensor('f32', [T, Hq, D], q), k: hostTensor('f32', [T, Hkv, D], k), v: hostTensor('f32', [T, Hkv, D], v), cuSeqlens: cu }, { topk });
      const got = toFloat64(await b.download(out));
      b.dispose(out, lse);
      // the reference: the whole key sequences so far, queries = the new tokens (bottom-right aligned)
      const row = Hkv * D;
      for (let s = 0; s < 2; s++) {
        keys[s]!.push(...Array.from(k.subarray(cu[s]! * row, cu[s + 1]! * row)));
        vals[s]!.push(...Array.from(v.subarray(cu[s]! * row, cu[s + 1]! * row)));
      }
      const cuK = Int32Array.of(0, keys[0]!.length / row, (keys[0]!.length + keys[1]!.length) / row);
      const layout = { cuSeqlensQ: cu, cuSeqlensK: cuK };
      const shape = { T, Tk: cuK[2]!, Hq, Hkv, D, dtype: 'f32' as const };
      const cfg = resolveConfig({ blockSize: B, topk }, D);
      const [qf, kf, vf] = [Float64Array.from(q), Float64Array.from([...keys[0]!, ...keys[1]!]), Float64Array.from([...vals[0]!, ...vals[1]!])];
      const ref = referenceForward(qf, kf, vf, referenceRoute(qf, kf, shape, layout, cfg), shape, layout, cfg);
      worst = Math.max(worst, errorStats(got, ref.out).maxAbs);
      expect(cache.length(seqs[0]!)).toBe(cuK[1]);
      lens = [1, 1]; // decode
    }
    expect(worst).toBeLessThan(1e-5); // f32 against f64, D = 16
    await cache.destroy();
    await b.destroy();
  });

  it('refuses bad steps naming the parameter; a full pool is E_MEMORY and leaves the cache unchanged', async () => {
    const b = await createBackend('cpu', { threads: 1 });
    const cache = await createCache(b, { Hkv: 1, D: 4, dtype: 'f32', blockSize: 4, capacityTokens: 8 });
    const s = cache.newSequence();
    const t = (n: number, h = 1) => hostTensor('f32', [n, h, 4], new Float32Array(n * h * 4).fill(0.5));
    await mobaStep(b, cache, { seqs: [s], q: t(5), k: t(5), v: t(5), cuSeqlens: Int32Array.of(0, 5) }, { topk: 2 });
    const before = await cache.read(s);
    const full = await catchErr(() => mobaStep(b, cache, { seqs: [s], q: t(4), k: t(4), v: t(4), cuSeqlens: Int32Array.of(0, 4) }, { topk: 2 }));
    expect([full.code, full.param]).toEqual(['E_MEMORY', 'capacity']);
    expect(await cache.read(s)).toEqual(before);
    expect((await catchErr(() => mobaStep(b, cache, { seqs: [s], q: t(2), k: t(1), v: t(1) }, { topk: 2 }))).param).toBe('q.shape');
    expect((await catchErr(() => mobaStep(b, cache, { seqs: [s], q: t(1), k: t(1), v: t(1), cuseqlens: Int32Array.of(0, 1) } as never, { topk: 2 }))).message).toMatch(/did you mean 'cuSeqlens'/);
    expect((await catchErr(() => mobaStep(b, cache, { seqs: [99], q: t(1), k: t(1), v: t(1) }, { topk: 2 }))).param).toBe('seqs[0]');
    const other = createReferenceBackend();
    expect((await catchErr(() => mobaStep(other, cache, { seqs: [s], q: t(1), k: t(1), v: t(1) }, { topk: 2 }))).code).toBe('E_UNSUPPORTED');
    const none = createReferenceBackend({ caps: { kvCache: false } });
    expect((await catchErr(() => createCache(none, { Hkv: 1, D: 4, dtype: 'f32', blockSize: 4, capacityTokens: 8 }))).code).toBe('E_UNSUPPORTED');
    await cache.destroy();
    await b.destroy();
  });

  it('examples/decode runs: a prefill step and 32 decode steps', async () => {
    const out = await new Promise<string>((res, rej) =>
      execFile(process.execPath, ['--conditions=@moba/source', '--import', 'tsx', 'examples/decode/index.ts'], { cwd: ROOT }, (e, so, se) => (e ? rej(new Error(`${e.message}\n${se}`)) : res(so))),
    );
    expect(out).toContain('step 0: lengths 3000, 1234, out 4234×8×64');
    expect(out).toContain('step 32: lengths 3032, 1266, out 2×8×64');
  });
});

describe('moba decode (CLI)', () => {
  const io = () => {
    const o = { out: '', err: '' };
    return { o, io: { stdout: { write: (s: string) => (o.out += s) }, stderr: { write: (s: string) => (o.err += s) } } };
  };
  it('prefills, decodes, compares with dense and the reference, writes the SVG; JSON has every step', async () => {
    const { main } = await import('../src/main.js');
    const { mkdtempSync, readFileSync } = await import('node:fs');
    const { join } = await import('node:path');
    const { tmpdir } = await import('node:os');
    const svg = join(mkdtempSync(join(tmpdir(), 'moba-decode-')), 'd.svg');
    const a = io();
    const code = await main(['decode', '--tokens', '700', '--steps', '6', '--batch', '2', '--heads', '4', '--kv-heads', '2', '--head-dim', '16', '--block-size', '16', '--kconv', '3', '--chunk', '300', '--check-every', '3', '--threads', '1', '--json', '--svg', svg], a.io);
    expect(code, a.o.err).toBe(0);
    const r = JSON.parse(a.o.out) as { steps: { context: number; denseMs: number | null; maxAbsError?: number }[]; checked: number; worstError: number; errorBound: number };
    expect(r.steps.map((s) => s.context)).toEqual([701, 702, 703, 704, 705, 706]);
    expect(r.steps.every((s) => s.denseMs !== null)).toBe(true);
    expect(r.checked).toBe(2);
    expect(r.worstError).toBeLessThanOrEqual(r.errorBound);
    const text = readFileSync(svg, 'utf8');
    expect(text).toMatch(/^<svg[\s\S]*<polyline[\s\S]*<polyline[\s\S]*<\/svg>\n$/);
  });
  it('a cache whose attend is off fails the reference check (exit 1); bad flags exit 2', async () => {
    const { main } = await import('../src/main.js');
    const { runDecode } = await import('../src/decode.js');
    const { wrapBackend } = await import('../src/index.js');
    const inner = await createBackend('cpu', { threads: 1 });
    const off = wrapBackend(inner, {
      async createCache(o) {
        const c = await inner.createCache!(o);
        const attend = c.attend.bind(c);
        c.attend = async (s, q, cu, cfg) => { // one value of every output nudged
          const r = await attend(s, q, cu, cfg);
          const h = await inner.download(r.out);
          const data = Float32Array.from(h.data as Float32Array);
          data[0] = data[0]! + 1e-3;
          inner.dispose(r.out);
          return { out: await inner.upload(hostTensor('f32', h.shape, data)), lse: r.lse };
        };
        return c;
      },
    });
    const r = await runDecode({ backend: off, tokens: 100, steps: 2, batch: 1, heads: 2, kvHeads: 2, headDim: 8, blockSize: 8, topk: 2, dtype: 'f32', kconv: 0, chunk: 64, checkEvery: 1, dense: false, seed: 2 });
    expect(r.worstError!).toBeGreaterThan(r.errorBound);
    await inner.destroy();
    const a = io();
    expect(await main(['decode', '--heads', '6', '--kv-heads', '4'], a.io)).toBe(2);
    expect(a.o.err).toMatch(/--heads 6 is not a multiple of --kv-heads 4/);
    const b = io();
    expect(await main(['decode', '--backend', 'webgpu', '--threads', '2'], b.io)).toBe(2);
  });
});
