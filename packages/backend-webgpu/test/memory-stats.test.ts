/**
 * Live and pooled buffers apart (issue #11: `liveBuffers` read 27 before and after disposing everything, the reuse
 * pool included): after a problem is disposed only the binding placeholders are in use, the rest is pooled, and
 * memoryStats() tells the caller's bytes, the scratch (placeholders), the pool and the peak apart. A missing adapter
 * skips, unless MOBA_REQUIRE names webgpu.
 */
import { MobaError, hostTensor, uniformSeqlens } from '@moba/core';
import { beforeAll, describe, expect, it } from 'vitest';
import { createWebGpuBackend } from '../src/index.js';
import { webgpuUnavailable } from './gate.js';

const T = 16;
const H = 2;
const D = 8;
const cfg = { blockSize: 4, topk: 2 };
const layout = { cuSeqlens: uniformSeqlens(2, T / 2) };
const data = Float32Array.from({ length: T * H * D }, (_, i) => Math.sin(0.37 * i));

describe('webgpu memory accounting', () => {
  let unavailable: string | null = null;
  beforeAll(async () => {
    unavailable = await webgpuUnavailable();
  });

  it('liveBuffers excludes the reuse pool; memoryStats splits live, scratch, pooled and peak', async (t) => {
    if (unavailable) return t.skip(unavailable);
    const b = await createWebGpuBackend();
    try {
      expect([b.liveBuffers, b.pooledBuffers]).toEqual([0, 0]);
      const q = await b.upload(hostTensor('f32', [T, H, D], data));
      expect(b.memoryStats()).toMatchObject({ liveBytes: T * H * D * 4, liveTensors: 1, scratchBytes: 0, pooledBytes: 0 });
      const r = await b.route(q, q, layout, cfg);
      const f = await b.forward(q, q, q, r, layout, cfg);
      const g = await b.backward(q, q, q, f.out, f.lse, q, r, layout, cfg);
      await b.download(g.dq);
      const mid = b.memoryStats();
      expect([mid.liveTensors, mid.liveRoutings]).toEqual([6, 1]);
      b.dispose(q, r, f.out, f.lse, g.dq, g.dk, g.dv);
      const end = b.memoryStats();
      // only the 16-byte binding placeholders (if any was needed) stay in use; every other buffer went to the pool
      expect(b.liveBuffers).toBeLessThan(4);
      expect(b.pooledBuffers).toBeGreaterThan(7);
      expect(end).toMatchObject({ liveBytes: 0, liveTensors: 0, liveRoutings: 0, scratchBytes: 16 * b.liveBuffers });
      expect(end.pooledBytes).toBeGreaterThan(T * H * D * 4);
      expect(end.peakBytes).toBeGreaterThanOrEqual(mid.liveBytes + mid.scratchBytes);
      expect(end.peakBytes).toBeGreaterThan(mid.liveBytes); // the temporaries of backward were counted
      b.resetPeakMemory();
      expect(b.memoryStats().peakBytes).toBe(end.scratchBytes);
    } finally {
      await b.destroy();
    }
    expect([b.liveBuffers, b.pooledBuffers]).toEqual([0, 0]);
    expect(b.memoryStats()).toEqual({ liveBytes: 0, liveTensors: 0, liveRoutings: 0, scratchBytes: 0, pooledBytes: 0, peakBytes: 0 });
  }, 120_000);

  it('flushL2 (a bench helper) leaves tensors and the accounting as they were, and refuses after destroy', async (t) => {
    if (unavailable) return t.skip(unavailable);
    const b = await createWebGpuBackend();
    const q = await b.upload(hostTensor('f32', [T, H, D], data));
    const before = { stats: b.memoryStats(), live: b.liveBuffers, pooled: b.pooledBuffers };
    await b.flushL2();
    await b.flushL2(); // the scratch buffer is made once and cleared again
    expect({ stats: b.memoryStats(), live: b.liveBuffers, pooled: b.pooledBuffers }).toEqual(before);
    expect((await b.download(q)).data).toEqual(data);
    b.dispose(q);
    await b.destroy();
    await expect(b.flushL2()).rejects.toBeInstanceOf(MobaError);
  });
});

