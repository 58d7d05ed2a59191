// Non-finite values (issue #11, docs/api.md "Non-finite values"): the scale must be finite in f32, and the
// reference's rule: a non-finite score (q or an attended key non-finite) makes the row's out and lse NaN, and so
// its dq and the dk, dv of every key it attends; a non-finite value makes out non-finite, lse stays finite.
import { describe, expect, it } from 'vitest';
import { MobaError, resolveConfig } from '../src/index.js';
import { referenceBackward, referenceForward } from '../src/reference/index.js';

describe('scale', () => {
  it('rejects a scale that is Infinity in f32, accepts the largest finite f32', () => {
    for (const scale of [3.5e38, 3.4028235677973366e38, Infinity]) {
      expect(() => resolveConfig({ blockSize: 2, topk: 1, scale }, 4)).toThrow(MobaError);
    }
    expect(resolveConfig({ blockSize: 2, topk: 1, scale: 3.4028234663852886e38 }, 4).scale).toBe(3.4028234663852886e38);
  });
});

describe('reference, T = 2, D = 1, B = 2, top-1, causal', () => {
  const shape = { T: 2, Hq: 1, Hkv: 1, D: 1, dtype: 'f32' as const };
  const layout = { cuSeqlens: Int32Array.from([0, 2]) };
  const cfg = resolveConfig({ blockSize: 2, topk: 1 }, 1);
  const idx = new Int32Array(2);
  const run = (q: number[], k: number[], v: number[], dOut: number[]) => {
    const [q64, k64, v64, d64] = [q, k, v, dOut].map((a) => Float64Array.from(a)) as [Float64Array, Float64Array, Float64Array, Float64Array];
    const f = referenceForward(q64, k64, v64, idx, shape, layout, cfg);
    return { ...f, ...referenceBackward(q64, k64, v64, f.out, f.lse, d64, idx, shape, layout, cfg) };
  };
  it('k = [1, -Inf]: row 1 is poisoned (out, lse, dq NaN; dk, dv of keys 0 and 1 NaN); row 0 stays finite', () => {
    const r = run([1, 1], [1, -Infinity], [1, 2], [1, 1]);
    expect(Array.from(r.out)).toEqual([1, NaN]);
    expect(Number.isNaN(r.lse[1])).toBe(true);
    expect(Number.isFinite(r.dq[0])).toBe(true);
    expect([r.dq[1], r.dk[0], r.dk[1], r.dv[0], r.dv[1]].every(Number.isNaN)).toBe(true);
  });
  it('q = [+Inf], k = [-1] (every score -Inf): NaN, not an empty row', () => {
    const shape1 = { ...shape, T: 1 };
    const l1 = { cuSeqlens: Int32Array.from([0, 1]) };
    const f = referenceForward(Float64Array.of(Infinity), Float64Array.of(-1), Float64Array.of(1), new Int32Array(1), shape1, l1, cfg);
    expect(Number.isNaN(f.out[0]) && Number.isNaN(f.lse[0])).toBe(true);
  });
  it('v = [1, NaN]: out[1] NaN, lse finite, dv = [1.5, 0.5]', () => {
    const r = run([1, 1], [1, 1], [1, NaN], [1, 1]);
    expect(r.out[0]).toBe(1);
    expect(Number.isNaN(r.out[1])).toBe(true);
    expect(Number.isFinite(r.lse[1])).toBe(true);
    expect(r.dv[0]).toBeCloseTo(1.5, 12);
    expect(r.dv[1]).toBeCloseTo(0.5, 12);
  });
});
