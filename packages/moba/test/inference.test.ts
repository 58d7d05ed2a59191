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
