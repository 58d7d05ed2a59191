/**
 * Pure parts of the GPU bench runner and the WGSL FMA kernel: the random inputs' ranges, the kernel's source,
 * and (where a WebGPU adapter exists, e.g. lavapipe) one small FMA measurement checked against the closed form.
 */
import { MobaError, bf16ToF32, f16ToF32 } from '@moba/core';
import { isRequired } from '@moba/testkit/vitest';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fmaShader, measureFmaPeak } from '../fma-peak.js';
import { fillRandom } from '../gpu.js';

describe('fillRandom', () => {
  it('fills bf16, f16 and f32 with seeded values, |x| in [1/8, 2), both signs', () => {
    for (const dtype of ['bf16', 'f16', 'f32'] as const) {
      const a = dtype === 'f32' ? new Float32Array(4096) : new Uint16Array(4096);
      const b = dtype === 'f32' ? new Float32Array(4096) : new Uint16Array(4096);
      fillRandom(a, dtype, 7);
      fillRandom(b, dtype, 7);
      expect(a).toEqual(b);
      const xs = Array.from(a, (x) => (dtype === 'bf16' ? bf16ToF32(x) : dtype === 'f16' ? f16ToF32(x) : x));
      expect(Math.min(...xs.map(Math.abs))).toBeGreaterThanOrEqual(0.125);
      expect(Math.max(...xs.map(Math.abs))).toBeLessThan(2);
      const neg = xs.filter((x) => x < 0).length;
      expect(neg).toBeGreaterThan(1800);
      expect(neg).toBeLessThan(2300);
      fillRandom(b, dtype, 8);
      expect(a).not.toEqual(b);
    }
  });
});

describe('fmaShader', () => {
  it('has CHAINS independent accumulators, each advanced UNROLL times per trip, all stored', () => {
    const src = fmaShader(4, 3);
    expect(src.match(/x2 = fma\(x2, p\.a, p\.b\);/g)).toHaveLength(3);
    expect(src).toContain('out[gid.x] = x0 + x1 + x2 + x3;');
    expect(src).not.toContain('x4');
  });
});

describe('measureFmaPeak on a WebGPU adapter', () => {
  let device: Parameters<typeof measureFmaPeak>[0] | null = null;
  let destroy: (() => Promise<void>) | null = null;
  let unavailable = 'no adapter';
  beforeAll(async () => {
    try {
      const { createWebGpuBackend } = await import('@moba/backend-webgpu');
      const b = await createWebGpuBackend();
      device = b.device;
      destroy = () => b.destroy();
    } catch (e) {
      if (!(e instanceof MobaError && e.code === 'E_DEVICE')) throw e;
      unavailable = e.message;
      if (isRequired('webgpu')) throw new Error(`webgpu is required (MOBA_REQUIRE) but unavailable: ${e.message}`);
    }
  });
  afterAll(async () => {
    await destroy?.();
  });

  it('runs the kernel: x → a·x + b from x0 = c gives 1 + (c − 1)·a^(iters·unroll) per chain', async (t) => {
    if (!device) return t.skip(unavailable);
    const r = await measureFmaPeak(device, { workgroups: 16, targetMs: 5, runs: 3, maxIterations: 256 });
    expect(r.invocations).toBe(16 * 256);
    expect(r.flopsPerDispatch).toBe(r.invocations * r.iterations * r.chains * r.unroll * 2);
    expect(r.gflopsBest).toBeGreaterThanOrEqual(r.gflopsMedian);
    const decay = 0.999 ** (r.iterations * r.unroll);
    const want = Array.from({ length: r.chains }, (_, c) => 1 + (c - 1) * decay).reduce((a, x) => a + x, 0);
    expect(r.sample).toBeCloseTo(want, 2);
  });
});
