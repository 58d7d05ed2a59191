/**
 * Buffer recycling (buffers.ts): size classes, reuse, the cap and its eviction, trim and destroy on real
 * GPUBuffers; and ops on a backend whose recycled buffers hold NaN garbage (tuning.poisonRecycled) giving
 * bitwise the results of a backend that recycles nothing. A missing adapter skips, unless MOBA_REQUIRE names webgpu.
 */
import { type HostTensor, hostTensor, uniformSeqlens } from '@moba/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BufferPool, POISON_WORD, USAGE, sizeClass } from '../src/buffers.js';
import { openDevice } from '../src/device.js';
import { type WebGpuBackend, createWebGpuBackend } from '../src/index.js';
import { unavailableBecause } from './gate.js';

describe('sizeClass', () => {
  it('is at least 256 bytes, holds the request, and wastes at most 25%', () => {
    expect([0, 1, 16, 256].map(sizeClass)).toEqual([256, 256, 256, 256]);
    expect([257, 320, 321, 384, 448, 449, 512, 1000].map(sizeClass)).toEqual([320, 320, 384, 384, 448, 512, 512, 1024]);
    for (let n = 257; n < 1 << 22; n = Math.ceil(n * 1.07)) {
      const c = sizeClass(n);
      expect(c).toBeGreaterThanOrEqual(n);
      expect(c).toBeLessThanOrEqual(1.25 * n);
      expect(c % 64).toBe(0);
    }
  });
});

describe('webgpu buffer recycling', () => {
  let device: GPUDevice | null = null;
  let unavailable: string | null = null;
  beforeAll(async () => {
    try {
      device = (await openDevice()).device;
    } catch (e) {
      unavailable = unavailableBecause(e);
    }
  });
  afterAll(() => device?.destroy());

  async function words(pool: BufferPool, b: GPUBuffer, n: number): Promise<number[]> {
    return [...new Uint32Array(await pool.read(b, 4 * n))];
  }

  it('reuses a freed temporary of the same class, cleared unless overwritten; caps, evicts the oldest, trims, destroys', async (t) => {
    if (unavailable) return t.skip(unavailable);
    const pool = new BufferPool(device!, device!.limits);
    pool.poolCapBytes = 4096;
    const a = pool.buffer('a', 1000, undefined, true);
    expect([a.size, pool.sizeOf(a), pool.inUseBytes]).toEqual([1024, 1000, 1024]);
    device!.queue.writeBuffer(a, 0, new Uint32Array(250).fill(7));
    pool.free(a);
    expect([pool.pooledBytes, pool.pooledBuffers, pool.inUseBytes]).toEqual([1024, 1, 0]);
    const b = pool.buffer('b', 900, undefined, true); // same class: the same buffer, zeroed
    expect(b).toBe(a);
    expect([pool.sizeOf(b), pool.pooledBytes]).toEqual([900, 0]);
    expect(await words(pool, b, 225)).toEqual(new Array(225).fill(0));
    pool.poisonFreed = true;
    pool.free(b);
    const c = pool.buffer('c', 1024, undefined, true, true); // overwritten: not cleared, so the poison shows
    expect(c).toBe(a);
    expect(await words(pool, c, 4)).toEqual(new Array(4).fill(POISON_WORD));
    const d = pool.buffer('d', 2048, undefined, true);
    const e = pool.buffer('e', 2048, undefined, true);
    const u = pool.uniforms('u', [1, 2, 3]);
    expect([u.size, pool.sizeOf(u), u.usage]).toEqual([256, 16, USAGE.UNIFORM | USAGE.COPY_DST]);
    pool.free(c, d, e, u); // over 4096: c (the oldest) is destroyed to keep e, then d to keep u
    expect([pool.pooledBytes, pool.pooledBuffers]).toEqual([2048 + 256, 2]);
    expect(pool.heldBuffers).toBe(pool.pooledBuffers);
    expect(pool.buffer('f', 4096 + 16, undefined, true).size).toBe(5120);
    pool.trim();
    expect([pool.pooledBytes, pool.pooledBuffers, pool.heldBuffers]).toEqual([0, 0, 1]);
    pool.destroy();
    expect([pool.heldBuffers, pool.inUseBytes]).toEqual([0, 0]);
  });

  /** forward, backward and a cache append + attend; every result downloaded as bytes. */
  async function run(b: WebGpuBackend, T: number, seed: number): Promise<Uint8Array[]> {
    const H = 2, D = 16, cfg = { blockSize: 8, topk: 2 };
    const layout = { cuSeqlens: uniformSeqlens(2, T / 2) };
    const t = (k: number): HostTensor => hostTensor('f32', [T, H, D], Float32Array.from({ length: T * H * D }, (_, i) => Math.sin(0.37 * i + seed + k)));
    const [q, k, v] = await Promise.all([b.upload(t(0)), b.upload(t(1)), b.upload(t(2))]);
    const r = await b.route(q, k, layout, cfg);
    const f = await b.forward(q, k, v, r, layout, cfg);
    const g = await b.backward(q, k, v, f.out, f.lse, q, r, layout, cfg);
    const cache = await b.createCache!({ Hkv: H, D, dtype: 'f32', blockSize: 8, capacityTokens: 4 * T, maxSequences: 2 });
    const s = [cache.newSequence(), cache.newSequence()];
    await cache.append(s, k, v, layout.cuSeqlens);
    const a = await cache.attend(s, q, layout.cuSeqlens, { topk: 2, causal: true });
    const outs = [f.out, f.lse, g.dq, g.dk, g.dv, a.out, a.lse];
    const bytes = await Promise.all(outs.map(async (x) => new Uint8Array(Float32Array.from((await b.download(x)).data as ArrayLike<number>).buffer)));
    b.dispose(q, k, v, r, ...outs);
    await cache.destroy();
    return bytes;
  }

  it('ops on recycled NaN-filled buffers give bitwise the results on fresh ones', async (t) => {
    if (unavailable) return t.skip(unavailable);
    const fresh = await createWebGpuBackend({ device: device!, bufferCacheBytes: 0 });
    const poisoned = await createWebGpuBackend({ device: device!, tuning: { poisonRecycled: true } });
    try {
      const want = await run(fresh, 32, 1);
      expect(fresh.pooledBuffers).toBe(0);
      await run(poisoned, 64, 5); // fills the cache with larger buffers of every kind, then poisons them
      await run(poisoned, 40, 9);
      expect(poisoned.pooledBuffers).toBeGreaterThan(10);
      const got = await run(poisoned, 32, 1);
      got.forEach((g, i) => expect(Buffer.from(g).equals(Buffer.from(want[i]!)), `result ${i}`).toBe(true));
    } finally {
      await fresh.destroy();
      await poisoned.destroy();
    }
  }, 300_000);
});
