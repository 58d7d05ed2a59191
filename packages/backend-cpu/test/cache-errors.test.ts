/**
 * The CPU KV cache's edges: exact routing ties go to the higher block (vs the reference), NaN stays in its row,
 * bad options / ids / shapes / dtypes give the SPEC §7 codes and leave the cache usable, memoryStats counts what
 * is allocated, and destroy ends the cache.
 */
import { type KVCache, MobaError, Rng, fromFloat, hostTensor } from '@moba/core';
import { afterAll, describe, expect, it } from 'vitest';
import { createCpuBackend } from '../src/index.js';
import { appendChunk, attendChecks, attendHost, backendPool, CacheModel, randomChunk, randomTensor } from './cache-model.js';

const pool = backendPool();
afterAll(() => pool.destroyAll());
const backend = pool.backend;

async function code(p: Promise<unknown> | (() => unknown)): Promise<string> {
  try {
    await (typeof p === 'function' ? p() : p);
  } catch (e) {
    if (e instanceof MobaError) return e.code;
    throw e;
  }
  return 'no error';
}

describe('cpu kv cache edges', () => {
  it.each([true, false])('exact ties go to the higher block (causal = %s), as the reference', async (causal) => {
    const b = backend();
    const rng = new Rng(51);
    const [Hkv, D, B] = [1, 4, 4];
    const cache = await b.createCache({ Hkv, D, dtype: 'f32', blockSize: B, capacityTokens: 64 });
    const model = new CacheModel({ Hkv, D, dtype: 'f32', blockSize: B, weight: null, W: 0 });
    const s = cache.newSequence();
    // every block has the same keys (equal centroids, equal scores) but its own values
    const block = rng.normals(B * D);
    const n = 22;
    const k = fromFloat(Array.from({ length: n * D }, (_, i) => block[i % (B * D)]!), 'f32', [n, Hkv, D]);
    const ch = { k, v: randomTensor(rng, 'f32', n, Hkv, D), cu: Int32Array.of(0, n) };
    await appendChunk(b, cache, [s], ch, model);
    const q = randomTensor(rng, 'f32', 3, 2, D);
    const { checks, out } = await attendChecks(b, cache, model, [s], q, Int32Array.of(0, 3), { topk: 3, causal });
    for (const c of checks) expect(c.ok, c.message).toBe(true);
    // the lowest blocks lose: a cache whose block 0 has other values gives the same result
    const other = await b.createCache({ Hkv, D, dtype: 'f32', blockSize: B, capacityTokens: 64 });
    const t = other.newSequence();
    const v2 = ch.v.data.slice();
    for (let i = 0; i < B * D; i++) v2[i] = 100 + i;
    await appendChunk(b, other, [t], { ...ch, v: hostTensor('f32', [n, Hkv, D], v2) });
    expect(Array.from((await attendHost(b, other, [t], q, Int32Array.of(0, 3), { topk: 3, causal })).out.data)).toEqual(Array.from(out.data));
  });

  it('NaN in a query row gives NaN in that row only', async () => {
    const b = backend();
    const rng = new Rng(61);
    const cache = await b.createCache({ Hkv: 1, D: 8, dtype: 'bf16', blockSize: 8, capacityTokens: 128 });
    const [s, t] = [cache.newSequence(), cache.newSequence()];
    await appendChunk(b, cache, [s, t], randomChunk(rng, 'bf16', 1, 8, [40, 17]));
    const q = fromFloat(rng.normals(3 * 2 * 8), 'bf16', [3, 2, 8]);
    const clean = await attendHost(b, cache, [s, t], q, Int32Array.of(0, 2, 3), { topk: 2 });
    const poisoned = { ...q, data: q.data.slice() };
    poisoned.data[1 * 2 * 8 + 3] = 0x7fc0; // bf16 NaN in query row 1, head 0
    const r = await attendHost(b, cache, [s, t], poisoned, Int32Array.of(0, 2, 3), { topk: 2 });
    const lse = Array.from(r.lse.data);
    expect(Number.isNaN(lse[2])).toBe(true);
    expect(lse.filter((_, i) => i !== 2)).toEqual(Array.from(clean.lse.data).filter((_, i) => i !== 2));
  });

  it('a past block of NaN keys is never selected nor read (its centroid is NaN): later rows stay finite', async () => {
    const b = backend();
    const rng = new Rng(65);
    const cache = await b.createCache({ Hkv: 1, D: 8, dtype: 'f32', blockSize: 8, capacityTokens: 128 });
    const s = cache.newSequence();
    const ch = randomChunk(rng, 'f32', 1, 8, [50]);
    ch.k.data.fill(NaN, 8 * 8, 16 * 8); // block 1
    await appendChunk(b, cache, [s], ch);
    const q = randomTensor(rng, 'f32', 4, 2, 8);
    const r = await attendHost(b, cache, [s], q, Int32Array.of(0, 4), { topk: 3 });
    expect(Array.from(r.out.data).every(Number.isFinite)).toBe(true);
    expect(Array.from(r.lse.data).every(Number.isFinite)).toBe(true);
  });

  it('bad options, ids, shapes and dtypes give the SPEC §7 codes and leave the cache usable', async () => {
    const b = backend();
    const rng = new Rng(71);
    const base = { Hkv: 2, D: 8, dtype: 'f16' as const, blockSize: 4, capacityTokens: 64 };
    expect(await code(b.createCache({ ...base, extra: 1 } as never))).toBe('E_RANGE');
    expect(await code(b.createCache({ ...base, capacityTokens: undefined }))).toBe('E_RANGE');
    expect(await code(b.createCache({ ...base, dtype: 'f64' as never }))).toBe('E_DTYPE');
    expect(await code(b.createCache({ ...base, blockSize: 0 }))).toBe('E_RANGE');
    expect(await code(b.createCache({ ...base, D: 1000 }))).toMatch(/E_RANGE|E_UNSUPPORTED/);
    const w = await b.upload(hostTensor('f32', [15, 3]));
    expect(await code(b.createCache({ ...base, kconvWeight: w }))).toBe('E_SHAPE');
    const small = backend({ threads: 1, memoryBytes: 2 ** 20 });
    expect(await code(small.createCache({ ...base, capacityTokens: 1 << 20 }))).toBe('E_MEMORY');
    const cache: KVCache = await b.createCache(base);
    const s = cache.newSequence();
    const up = async (dtype: 'f16' | 'f32', T: number, H: number, D: number) => b.upload(randomTensor(rng, dtype, T, H, D));
    const [k, v] = [await up('f16', 5, 2, 8), await up('f16', 5, 2, 8)];
    const cu = Int32Array.of(0, 5);
    expect(await code(cache.append([99], k, v, cu))).toBe('E_RANGE');
    expect(await code(cache.append([s, s], k, v, Int32Array.of(0, 2, 5)))).toBe('E_RANGE');
    expect(await code(cache.append([s], await up('f16', 5, 3, 8), v, cu))).toBe('E_SHAPE');
    expect(await code(cache.append([s], k, await up('f16', 4, 2, 8), cu))).toBe('E_SHAPE');
    expect(await code(cache.append([s], await up('f32', 5, 2, 8), await up('f32', 5, 2, 8), cu))).toBe('E_DTYPE');
    expect(await code(cache.append([s], k, v, Int32Array.of(0, 4)))).toBe('E_RANGE');
    expect(await code(cache.append([s], k, v, Int32Array.of(0, 2, 5)))).toBe('E_SHAPE');
    expect(cache.length(s)).toBe(0);
    await cache.append([s], k, v, cu);
    const q = await up('f16', 2, 4, 8);
    const cfg = { topk: 2 };
    expect(await code(cache.attend([s], await up('f16', 6, 4, 8), Int32Array.of(0, 6), cfg))).toBe('E_RANGE'); // nq > length
    expect(await code(cache.attend([s], await up('f16', 2, 3, 8), Int32Array.of(0, 2), cfg))).toBe('E_SHAPE');
    expect(await code(cache.attend([s], await up('f16', 2, 4, 7), Int32Array.of(0, 2), cfg))).toBe('E_SHAPE');
    expect(await code(cache.attend([s], await up('f32', 2, 4, 8), Int32Array.of(0, 2), cfg))).toBe('E_DTYPE');
    expect(await code(cache.attend([s], q, Int32Array.of(0, 2), { topk: 2, blockSize: 8 }))).toBe('E_RANGE');
    expect(await code(cache.attend([s], q, Int32Array.of(0, 2), { topk: 0 }))).toBe('E_RANGE');
    expect(await code(cache.attend([s + 1], q, Int32Array.of(0, 2), cfg))).toBe('E_RANGE');
    expect(await code(cache.attend([s], w, Int32Array.of(0, 2), cfg))).toBe('E_SHAPE');
    const r = await cache.attend([s], q, Int32Array.of(0, 2), { ...cfg, blockSize: 4 }); // still usable
    expect(r.out.shape).toEqual([2, 4, 8]);
    expect(r.lse.shape).toEqual([2, 4]);
    const dense = await cache.attend([s], q, Int32Array.of(0, 2), { topk: 5000 }); // beyond maxTopk: caps.maxCacheTopk
    expect(dense.out.shape).toEqual([2, 4, 8]);
  });

  it('memoryStats counts the pool as allocated; destroy ends the cache', async () => {
    const b = backend();
    const w = await b.upload(hostTensor('f32', [16, 4]));
    const cache = await b.createCache({ Hkv: 2, D: 8, dtype: 'f32', blockSize: 4, capacityBytes: 10_000, maxSequences: 3, kconvWeight: w });
    const pageBytes = (2 * 4 * 16 + 2 * 16) * 4;
    expect(cache.kconvWidth).toBe(4);
    expect(cache.memoryStats()).toMatchObject({ pages: Math.floor(10_000 / pageBytes), pageBytes, poolBytes: Math.floor(10_000 / pageBytes) * pageBytes, usedPages: 0, metaBytes: 3 * 3 * 16 * 4 + 4 * 16 * 4 });
    const ids = [cache.newSequence(), cache.newSequence(), cache.newSequence()];
    expect(await code(() => cache.newSequence())).toBe('E_MEMORY'); // maxSequences
    cache.free(ids[0]!);
    cache.newSequence();
    await cache.destroy();
    await cache.destroy(); // idempotent
    expect(cache.memoryStats()).toMatchObject({ pages: 0, poolBytes: 0, sequences: 0 });
    expect(await code(() => cache.newSequence())).toBe('E_DEVICE');
    expect(await code(cache.read(ids[1]!))).toBe('E_DEVICE');
    const dead = createCpuBackend({ threads: 1 });
    const orphan = await dead.createCache({ Hkv: 1, D: 4, dtype: 'f32', blockSize: 4, capacityTokens: 8 });
    const o = orphan.newSequence();
    const kv = await dead.upload(hostTensor('f32', [2, 1, 4]));
    await dead.destroy();
    expect(await code(orphan.append([o], kv, kv, Int32Array.of(0, 2)))).toBe('E_DEVICE'); // the backend is gone
    expect(await code(dead.createCache({ Hkv: 1, D: 4, dtype: 'f32', blockSize: 4, capacityTokens: 8 }))).toBe('E_DEVICE');
  });
});
