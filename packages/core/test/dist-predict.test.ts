// predictContextParallel (issue 15): sane, monotonic behaviour of the pure model.
import { describe, expect, it } from 'vitest';
import { predictContextParallel } from '../src/index.js';

const base = { N: 1 << 20, Hq: 32, Hkv: 8, D: 128, B: 512, topk: 8, linkGBps: 300, tflops: 400 };

describe('predictContextParallel', () => {
  it('compute per GPU halves when G doubles; bytes per GPU grow with G and stay under the full K/V volume', () => {
    let prev = predictContextParallel({ ...base, G: 8 });
    const full = Math.ceil(base.N / base.B) * base.B * base.Hkv * base.D * (2 * 2 + 4 * 2) + Math.ceil(base.N / base.B) * base.Hkv * base.D * 2;
    for (const G of [16, 32, 64]) {
      const p = predictContextParallel({ ...base, G });
      expect(p.flopsPerGpu).toBeCloseTo(prev.flopsPerGpu / 2, -3);
      expect(p.bytesPerGpu).toBeGreaterThan(prev.bytesPerGpu);
      expect(p.bytesPerGpu).toBeLessThan(full);
      expect(p.seconds).toBe(p.commSeconds + p.computeSeconds);
      prev = p;
    }
  });
  it('a faster link, a smaller remote fraction and overlap never make it slower; K/V bytes scale with the fraction', () => {
    const a = predictContextParallel({ ...base, G: 16 });
    expect(predictContextParallel({ ...base, G: 16, linkGBps: 600 }).seconds).toBeLessThan(a.seconds);
    const half = predictContextParallel({ ...base, G: 16, remoteFraction: 0.5 });
    expect(half.kvBytes).toBe(a.kvBytes / 2);
    expect(half.gradBytes).toBe(a.gradBytes / 2);
    expect(predictContextParallel({ ...base, G: 16, overlap: true }).seconds).toBe(Math.max(a.commSeconds, a.computeSeconds));
    const one = predictContextParallel({ ...base, G: 1 });
    expect(one.bytesPerGpu).toBe(0);
  });
  it('caps K/V at what the rank selects (topk = 1: own block only, nothing remote)', () => {
    expect(predictContextParallel({ ...base, G: 8, topk: 1 }).kvBytes).toBe(0);
  });
  it('names the parameter in its errors', () => {
    for (const [k, v] of [['G', 0], ['G', 2000], ['N', 1.5], ['linkGBps', 0], ['tflops', -1], ['remoteFraction', 2]] as const) {
      expect(() => predictContextParallel({ ...base, G: 8, [k]: v })).toThrow(expect.objectContaining({ param: k }));
    }
  });
});
