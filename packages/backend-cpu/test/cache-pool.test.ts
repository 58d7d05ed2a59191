/**
 * The CPU KV cache's pool (SPEC §9): bitwise invariance to chunking, batch composition and thread count;
 * E_MEMORY on a full pool leaves the cache unchanged and usable; freed pages are reused cleanly; fork shares
 * full pages and diverges correctly after appends to either side.
 */
import { type KVCache, Rng, hostTensor } from '@moba/core';
import { afterAll, describe, expect, it } from 'vitest';
import type { CpuBackend } from '../src/index.js';
import { appendChunk, attendHost, backendPool, contentDiffs, randomChunk, randomTensor, sameBits, type Chunk } from './cache-model.js';

const Hkv = 2;
const D = 8;
const B = 8;
const pool = backendPool();
afterAll(() => pool.destroyAll());
const backend = pool.backend;

/** A cache with kconv W = 3 (f16), `pages` pages; the same weight for every cache of a test. */
async function makeCache(b: CpuBackend, pages: number): Promise<KVCache> {
  const w = randomTensor(new Rng(3), 'f32', Hkv * D, 3, 1, 0.5);
  const wd = await b.upload(hostTensor('f32', [Hkv * D, 3], w.data));
  const cache = await b.createCache({ Hkv, D, dtype: 'f16', blockSize: B, capacityTokens: pages * B, kconvWeight: wd });
  b.dispose(wd); // copied at creation
  return cache;
}

/** Slices rows [r0, r1) of a chunk's one-sequence data as a new one-sequence chunk. */
function rows(ch: Chunk, r0: number, r1: number): Chunk {
  const n = Hkv * D;
  const part = (t: Chunk['k']): Chunk['k'] => ({ dtype: t.dtype, shape: [r1 - r0, Hkv, D], data: t.data.slice(r0 * n, r1 * n) } as Chunk['k']);
  return { k: part(ch.k), v: part(ch.v), cu: Int32Array.of(0, r1 - r0) };
}

describe('cpu kv cache pool', () => {
  it('is bitwise invariant to chunking, batch composition and thread count', async () => {
    const rng = new Rng(11);
    const long = randomChunk(rng, 'f16', Hkv, D, [72]);
    const other = randomChunk(rng, 'f16', Hkv, D, [30, 9]);
    const q = randomTensor(rng, 'f16', 5, 4, D);
    const results = [];
    for (const b of [backend(), backend({ threads: 2, minParallelWork: 0 })]) {
      // A: the sequence alone, in chunks 3 + 50 + 1 + 1 + 17; attended alone
      const a = await makeCache(b, 40);
      const x = a.newSequence();
      let r = 0;
      for (const n of [3, 50, 1, 1, 17]) await appendChunk(b, a, [x], rows(long, r, (r += n)));
      const alone = await attendHost(b, a, [x], q, Int32Array.of(0, 5), { topk: 3 });
      // B: two other sequences first, then the sequence in one chunk; attended between the others
      const c = await makeCache(b, 40);
      const [y, z] = [c.newSequence(), c.newSequence()];
      await appendChunk(b, c, [y, z], other);
      const x2 = c.newSequence();
      await appendChunk(b, c, [x2], long);
      const qq = randomTensor(new Rng(12), 'f16', 8, 4, D);
      qq.data.set(q.data, 2 * 4 * D); // rows 2..6 are x's queries
      const batched = await attendHost(b, c, [z, x2, y], qq, Int32Array.of(0, 2, 7, 8), { topk: 3 });
      expect(contentDiffs(await a.read(x), await c.read(x2), { pages: false })).toEqual([]);
      expect(sameBits(alone.out.data, batched.out.data.subarray(2 * 4 * D, 7 * 4 * D))).toBe(true);
      expect(sameBits(alone.lse.data, batched.lse.data.subarray(2 * 4, 7 * 4))).toBe(true);
      const again = await attendHost(b, a, [x], q, Int32Array.of(0, 5), { topk: 3 });
      expect(sameBits(alone.out.data, again.out.data)).toBe(true); // deterministic
      results.push(alone);
    }
    expect(sameBits(results[0]!.out.data, results[1]!.out.data)).toBe(true); // 1 thread = 2 workers
    expect(sameBits(results[0]!.lse.data, results[1]!.lse.data)).toBe(true);
  });

  it('E_MEMORY on a full pool leaves the cache unchanged and usable', async () => {
    const b = backend();
    const rng = new Rng(21);
    const [c1, c2] = [await makeCache(b, 4), await makeCache(b, 4)]; // c2 never sees the failed appends
    const [a1, s1] = [c1.newSequence(), c1.newSequence()];
    const [a2, s2] = [c2.newSequence(), c2.newSequence()];
    const first = randomChunk(rng, 'f16', Hkv, D, [20, 5]); // 3 + 1 pages: the pool is full
    await appendChunk(b, c1, [a1, s1], first);
    await appendChunk(b, c2, [a2, s2], first);
    const before = [await c1.read(a1), await c1.read(s1)];
    const stats = c1.memoryStats();
    expect(stats.freePages).toBe(0);
    // a needs a 4th page; then a fits in its open page but s does not: nothing at all may be written
    for (const [seqs, counts] of [[[a1], [5]], [[a1, s1], [4, 10]]] as const) {
      const ch = randomChunk(rng, 'f16', Hkv, D, counts);
      await expect(appendChunk(b, c1, seqs, ch)).rejects.toMatchObject({ code: 'E_MEMORY' });
    }
    expect(contentDiffs(await c1.read(a1), before[0]!)).toEqual([]);
    expect(contentDiffs(await c1.read(s1), before[1]!)).toEqual([]);
    expect(c1.memoryStats()).toEqual(stats);
    // later appends and attends equal the twin's bitwise
    const next = randomChunk(rng, 'f16', Hkv, D, [4, 3]);
    await appendChunk(b, c1, [a1, s1], next);
    await appendChunk(b, c2, [a2, s2], next);
    expect(contentDiffs(await c1.read(a1), await c2.read(a2))).toEqual([]);
    expect(contentDiffs(await c1.read(s1), await c2.read(s2))).toEqual([]);
    const q = randomTensor(rng, 'f16', 3, 2, D);
    const r1 = await attendHost(b, c1, [a1, s1], q, Int32Array.of(0, 2, 3), { topk: 2 });
    const r2 = await attendHost(b, c2, [a2, s2], q, Int32Array.of(0, 2, 3), { topk: 2 });
    expect(sameBits(r1.out.data, r2.out.data) && sameBits(r1.lse.data, r2.lse.data)).toBe(true);
  });

  it('free returns pages; a reused page holds nothing of its previous sequence', async () => {
    const b = backend();
    const rng = new Rng(31);
    const c = await makeCache(b, 3);
    const old = c.newSequence();
    await appendChunk(b, c, [old], randomChunk(rng, 'f16', Hkv, D, [21]));
    expect(c.memoryStats()).toMatchObject({ usedPages: 3, freePages: 0, sequences: 1, tokens: 21 });
    c.free(old);
    expect(c.memoryStats()).toMatchObject({ usedPages: 0, freePages: 3, sequences: 0, tokens: 0 });
    await expect(c.read(old)).rejects.toMatchObject({ code: 'E_RANGE' });
    const fresh = await makeCache(b, 3);
    const [s, t] = [c.newSequence(), fresh.newSequence()];
    for (const n of [5, 1, 12]) {
      const ch = randomChunk(rng, 'f16', Hkv, D, [n]);
      await appendChunk(b, c, [s], ch);
      await appendChunk(b, fresh, [t], ch);
      expect(contentDiffs(await c.read(s), await fresh.read(t), { pages: false })).toEqual([]);
    }
    const q = randomTensor(rng, 'f16', 4, 4, D);
    const r1 = await attendHost(b, c, [s], q, Int32Array.of(0, 4), { topk: 2, causal: false });
    const r2 = await attendHost(b, fresh, [t], q, Int32Array.of(0, 4), { topk: 2, causal: false });
    expect(sameBits(r1.out.data, r2.out.data) && sameBits(r1.lse.data, r2.lse.data)).toBe(true);
  });

  it('fork shares full pages and diverges correctly after appends to either', async () => {
    const b = backend();
    const rng = new Rng(41);
    const c = await makeCache(b, 12);
    const src = c.newSequence();
    const prefix = randomChunk(rng, 'f16', Hkv, D, [20]); // 2 full pages + 4 tokens
    await appendChunk(b, c, [src], prefix);
    const f = await c.fork(src);
    expect(c.memoryStats()).toMatchObject({ usedPages: 4, sharedPages: 2, sequences: 2, tokens: 40 });
    const [rs, rf] = [await c.read(src), await c.read(f)];
    expect(contentDiffs(rs, rf, { pages: false })).toEqual([]);
    expect(Array.from(rf.pages.subarray(0, 2))).toEqual(Array.from(rs.pages.subarray(0, 2)));
    expect(rf.pages[2]).not.toBe(rs.pages[2]);
    // each side gets its own continuation; each must equal a fresh cache given the same whole history
    const tails = [randomChunk(rng, 'f16', Hkv, D, [13]), randomChunk(rng, 'f16', Hkv, D, [2])];
    await appendChunk(b, c, [f], tails[1]!);
    await appendChunk(b, c, [src], tails[0]!);
    for (const [seq, tail] of [[src, tails[0]!], [f, tails[1]!]] as const) {
      const fresh = await makeCache(b, 12);
      const t = fresh.newSequence();
      await appendChunk(b, fresh, [t], prefix);
      await appendChunk(b, fresh, [t], tail);
      expect(contentDiffs(await c.read(seq), await fresh.read(t), { pages: false })).toEqual([]);
      const q = randomTensor(rng, 'f16', 3, 2, D);
      const r1 = await attendHost(b, c, [seq], q, Int32Array.of(0, 3), { topk: 2 });
      const r2 = await attendHost(b, fresh, [t], q, Int32Array.of(0, 3), { topk: 2 });
      expect(sameBits(r1.out.data, r2.out.data) && sameBits(r1.lse.data, r2.lse.data)).toBe(true);
      await fresh.destroy();
    }
    c.free(src); // the fork keeps the shared pages
    expect(c.memoryStats()).toMatchObject({ sharedPages: 0, usedPages: 3, sequences: 1 });
    expect(contentDiffs(await c.read(f), await c.read(f))).toEqual([]);
    // a fork of a sequence with an open page needs a free page
    const full = await makeCache(b, 1);
    const one = full.newSequence();
    await appendChunk(b, full, [one], randomChunk(rng, 'f16', Hkv, D, [3]));
    await expect(full.fork(one)).rejects.toMatchObject({ code: 'E_MEMORY' });
    expect(full.memoryStats()).toMatchObject({ sequences: 1, usedPages: 1 });
  });
});
