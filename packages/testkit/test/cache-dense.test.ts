/**
 * A cache attend's topk contract (core's CacheShell, SPEC §9): a topk above the longest attended sequence's block
 * count selects every block, so the shell clamps it to that count; above `caps.maxCacheTopk` only that dense case
 * is accepted, and only when `caps.cacheDense` says so.
 */
import { type Backend, type KVCache, MobaError, hostTensor } from '@moba/core';
import { afterEach, describe, expect, it } from 'vitest';
import { createReferenceBackend } from '../src/reference-backend.js';

const D = 4;
let open: Backend[] = [];
afterEach(async () => {
  for (const b of open) await b.destroy();
  open = [];
});

/** A cache of blockSize 2 holding one sequence of `n` tokens (keys and values i / 7 per element). */
async function setup(caps: { maxCacheTopk: number; cacheDense: boolean }, n: number): Promise<{ b: Backend; cache: KVCache; seq: number }> {
  const b = createReferenceBackend({ caps });
  open.push(b);
  const cache = await b.createCache!({ Hkv: 1, D, dtype: 'f32', blockSize: 2, capacityTokens: 64, maxSequences: 2 });
  const seq = cache.newSequence();
  const data = Float32Array.from({ length: n * D }, (_, i) => Math.sin(i) / 7);
  const k = await b.upload(hostTensor('f32', [n, 1, D], data));
  const v = await b.upload(hostTensor('f32', [n, 1, D], data.map((x) => 2 * x)));
  await cache.append([seq], k, v, Int32Array.of(0, n));
  b.dispose(k, v);
  return { b, cache, seq };
}

async function attendOut(b: Backend, cache: KVCache, seq: number, topk: number): Promise<Float32Array> {
  const q = await b.upload(hostTensor('f32', [1, 1, D], Float32Array.of(0.3, -0.2, 0.5, 0.1)));
  const r = await cache.attend([seq], q, Int32Array.of(0, 1), { topk });
  const out = (await b.download(r.out)).data as Float32Array;
  b.dispose(q, r.out, r.lse);
  return out;
}

async function errorOf(p: Promise<unknown>): Promise<MobaError> {
  try {
    await p;
  } catch (e) {
    if (e instanceof MobaError) return e;
    throw e;
  }
  throw new Error('expected a MobaError');
}

describe('cache attend topk above maxCacheTopk', () => {
  it('cacheDense: a topk covering every block is accepted and equals topk = the block count', async () => {
    const { b, cache, seq } = await setup({ maxCacheTopk: 2, cacheDense: true }, 11); // 6 blocks
    const all = await attendOut(b, cache, seq, 6);
    expect(await attendOut(b, cache, seq, 1_000_000)).toEqual(all);
    expect(await attendOut(b, cache, seq, 7)).toEqual(all);
  });

  it('cacheDense: a partial topk above maxCacheTopk is E_UNSUPPORTED naming topk', async () => {
    const { b, cache, seq } = await setup({ maxCacheTopk: 2, cacheDense: true }, 11);
    const e = await errorOf(attendOut(b, cache, seq, 4));
    expect(e.code).toBe('E_UNSUPPORTED');
    expect(e.param).toBe('topk');
    expect(e.message).toContain('caps.maxCacheTopk = 2');
    expect(e.message).toContain('topk >= 6');
  });

  it('without cacheDense every topk above maxCacheTopk is refused, the dense one included', async () => {
    const { b, cache, seq } = await setup({ maxCacheTopk: 2, cacheDense: false }, 11);
    for (const topk of [3, 6, 1000]) {
      const e = await errorOf(attendOut(b, cache, seq, topk));
      expect(e.code).toBe('E_UNSUPPORTED');
      expect(e.param).toBe('topk');
    }
    expect((await attendOut(b, cache, seq, 2)).length).toBe(D); // still usable
  });
});
