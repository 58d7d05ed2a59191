/**
 * sync() (SPEC §7): it resolves only once the work already submitted to the device has completed (a sync that
 * returned at once would resolve before a completion callback registered earlier), and it is E_DEVICE after
 * destroy(); the host time per op (hostTimings) is recorded and cleared.
 */
import { hostTensor, uniformSeqlens } from '@moba/core';
import { beforeAll, describe, expect, it } from 'vitest';
import { type WebGpuBackend, createWebGpuBackend } from '../src/index.js';
import { webgpuUnavailable } from './gate.js';

describe('webgpu sync', () => {
  let unavailable: string | null = null;
  beforeAll(async () => {
    unavailable = await webgpuUnavailable();
  });

  /** Uploads q, k, v [T, H, D] of small random values, routes and runs a forward (results left queued). */
  async function submitWork(b: WebGpuBackend): Promise<void> {
    const [T, H, D] = [1024, 2, 64];
    const data = () => Float32Array.from({ length: T * H * D }, (_, i) => Math.sin(i * 0.37) * 0.5);
    const [q, k, v] = [await b.upload(hostTensor('f32', [T, H, D], data())), await b.upload(hostTensor('f32', [T, H, D], data())), await b.upload(hostTensor('f32', [T, H, D], data()))];
    const layout = { cuSeqlens: uniformSeqlens(1, T) };
    const cfg = { blockSize: 64, topk: 4 };
    const r = await b.route(q, k, layout, cfg);
    await b.forward(q, k, v, r, layout, cfg);
  }

  it('waits for the work submitted before it', async (t) => {
    if (unavailable) return t.skip(unavailable);
    const b = await createWebGpuBackend();
    try {
      await submitWork(b);
      let done = false;
      void b.device.queue.onSubmittedWorkDone().then(() => { done = true; });
      await b.sync();
      expect(done).toBe(true);
    } finally {
      await b.destroy();
    }
  });

  it('records host time per op (encode and error wait) until clearTimings()', async (t) => {
    if (unavailable) return t.skip(unavailable);
    const b = await createWebGpuBackend();
    try {
      await submitWork(b);
      const h = b.hostTimings();
      const keys = [...h.keys()];
      expect(keys.some((k) => k.endsWith(' encode')) && keys.some((k) => k.endsWith(' errors'))).toBe(true);
      for (const ms of h.values()) expect(Number.isFinite(ms) && ms >= 0).toBe(true);
      b.clearTimings();
      expect(b.hostTimings().size).toBe(0);
    } finally {
      await b.destroy();
    }
  });

  it('is E_DEVICE after destroy()', async (t) => {
    if (unavailable) return t.skip(unavailable);
    const b = await createWebGpuBackend();
    await submitWork(b);
    await b.destroy();
    await expect(b.sync()).rejects.toMatchObject({ code: 'E_DEVICE' });
  });
});
