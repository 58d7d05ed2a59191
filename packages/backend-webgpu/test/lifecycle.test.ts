/**
 * Lifecycle and leaks (limits and faults): backends created and destroyed many times, and many
 * problems on one backend, leave no live GPU buffers behind. Every backend runs a real problem (kconv, route,
 * forward, backward, readback) so each op's temporaries are exercised. The adapter is only touched inside
 * tests (never at module top level); a missing adapter skips, unless MOBA_REQUIRE names webgpu.
 */
import { type Backend, type DeviceTensor, hostTensor, uniformSeqlens } from '@moba/core';
import { beforeAll, describe, expect, it } from 'vitest';
import { USAGE } from '../src/buffers.js';
import { GpuContext } from '../src/device.js';
import { type WebGpuBackend, createWebGpuBackend, liveBufferCount } from '../src/index.js';
import { webgpuUnavailable } from './gate.js';

const T = 16;
const H = 2;
const D = 8;
const W = 3;
const cfg = { blockSize: 4, topk: 2 };
const layout = { cuSeqlens: uniformSeqlens(2, T / 2) };
const data = Float32Array.from({ length: T * H * D }, (_, i) => Math.sin(0.37 * i));
const weight = Float32Array.from({ length: H * D * W }, (_, i) => 0.1 * Math.cos(i));

/** One small problem through every op; disposes everything it made and returns the output's first values. */
async function runProblem(b: Backend): Promise<Float32Array> {
  const made: DeviceTensor[] = [];
  const own = <X extends DeviceTensor>(t: X): X => (made.push(t), t);
  const q = own(await b.upload(hostTensor('f32', [T, H, D], data)));
  const w = own(await b.upload(hostTensor('f32', [H * D, W], weight)));
  const k = own(await b.kconv(q, w, layout));
  const r = await b.route(q, k, layout, cfg);
  try {
    const f = await b.forward(q, k, q, r, layout, cfg);
    own(f.out);
    own(f.lse);
    const g = await b.backward(q, k, q, f.out, f.lse, q, r, layout, cfg);
    own(g.dq);
    own(g.dk);
    own(g.dv);
    const kb = await b.kconvBackward(q, w, g.dk, layout);
    own(kb.dk);
    own(kb.dw);
    await b.routingIndices(r);
    return (await b.download(f.out)).data.slice(0, 4) as Float32Array;
  } finally {
    b.dispose(r, ...made);
  }
}

describe('webgpu lifecycle', () => {
  let unavailable: string | null = null;
  beforeAll(async () => {
    unavailable = await webgpuUnavailable();
  });

  it('creates and destroys 100 backends, each on its own device, without live-buffer growth', async (t) => {
    if (unavailable) return t.skip(unavailable);
    const base = liveBufferCount();
    let first: Float32Array | null = null;
    for (let i = 0; i < 100; i++) {
      const b = await createWebGpuBackend();
      const out = await runProblem(b);
      first ??= out;
      expect(out).toEqual(first); // same answer on every fresh device
      await b.destroy();
      expect(b.liveBuffers).toBe(0);
      expect(liveBufferCount()).toBe(base);
    }
  });

  it('runs 100 problems on one backend with dispose: live buffers stay flat; use after destroy is E_DEVICE', async (t) => {
    if (unavailable) return t.skip(unavailable);
    const b = await createWebGpuBackend();
    // warm-up: the lazily made placeholders, and the pool of freed buffers kept for reuse (BufferPool.free)
    // fills up to what one problem needs at once
    for (let i = 0; i < 3; i++) await runProblem(b);
    const steady = [b.liveBuffers, b.pooledBuffers];
    for (let i = 0; i < 100; i++) {
      await runProblem(b);
      expect([b.liveBuffers, b.pooledBuffers]).toEqual(steady);
    }
    await b.destroy();
    expect(b.liveBuffers).toBe(0);
    await expect(b.upload(hostTensor('f32', [1, 1, 1]))).rejects.toMatchObject({ code: 'E_DEVICE' });
  });

  it('the pool of freed buffers keeps the newest within its cap, destroys the oldest, and reuses by size', async (t) => {
    if (unavailable) return t.skip(unavailable);
    const owner = await createWebGpuBackend();
    const ctx = new GpuContext(owner.device, false);
    const pool = ctx.buffers;
    try {
      pool.poolCapBytes = 3 * 1024;
      const [a, b, c] = [pool.buffer('a', 1024), pool.buffer('b', 1024), pool.buffer('c', 1024)];
      pool.free(a, b, c);
      expect([pool.pooledBytes, pool.heldBuffers, pool.liveBuffers, pool.pooledBuffers]).toEqual([3 * 1024, 3, 0, 3]);
      const big = pool.buffer('big', 2048); // not in the pool: a new buffer
      expect([pool.heldBuffers, pool.liveBuffers, pool.inUseBytes]).toEqual([4, 1, 2048]);
      pool.free(big); // makes room by destroying a and b, the oldest
      expect([pool.pooledBytes, pool.heldBuffers, pool.pooledBuffers]).toEqual([3 * 1024, 2, 2]);
      expect(pool.buffer('again', 2048)).toBe(big); // reused: same size and usage
      expect(pool.buffer('c again', 1024)).toBe(c);
      expect(pool.pooledBytes).toBe(0);
      pool.free(pool.buffer('too big', 4096, USAGE.STORAGE | USAGE.COPY_DST)); // over the cap: destroyed at once
      expect([pool.heldBuffers, pool.liveBuffers]).toEqual([2, 2]);
      expect(pool.peakBytes).toBe(2048 + 1024 + 4096); // 'again', 'c again' and 'too big' in use at once
    } finally {
      ctx.destroy();
      await owner.destroy();
    }
  });

  it('100 backends on a caller-owned device: destroy() frees their buffers and leaves the device usable', async (t) => {
    if (unavailable) return t.skip(unavailable);
    const owner: WebGpuBackend = await createWebGpuBackend();
    try {
      const base = liveBufferCount();
      const expected = await runProblem(owner);
      for (let i = 0; i < 100; i++) {
        const b = await createWebGpuBackend({ device: owner.device });
        const held = await b.upload(hostTensor('f32', [T, H, D], data)); // left for destroy() to free
        expect(held.shape).toEqual([T, H, D]);
        expect(await runProblem(b)).toEqual(expected);
        await b.destroy();
        expect(b.liveBuffers).toBe(0);
      }
      expect(liveBufferCount()).toBe(base + owner.liveBuffers + owner.pooledBuffers); // only the owner's placeholders and pool remain
      expect(await runProblem(owner)).toEqual(expected); // the shared device was not destroyed
    } finally {
      await owner.destroy();
    }
  });
});
