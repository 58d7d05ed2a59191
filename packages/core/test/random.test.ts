import { describe, expect, it } from 'vitest';
import { Rng, bf16ToF32, f16ToF32 } from '../src/index.js';

describe('Rng.fastNormals', () => {
  const n = 1 << 18;
  const moments = (x: ArrayLike<number>): [number, number] => {
    let s = 0, s2 = 0;
    for (let i = 0; i < x.length; i++) { s += x[i]!; s2 += x[i]! * x[i]!; }
    return [s / x.length, s2 / x.length - (s / x.length) ** 2];
  };
  it('has mean 0 and variance std² in every dtype, and stays within the Irwin–Hall range', () => {
    const f32 = new Rng(7).fastNormals(n, 'f32', 2) as Float32Array;
    const bf = Array.from(new Rng(7).fastNormals(n, 'bf16', 2) as Uint16Array, bf16ToF32);
    const hf = Array.from(new Rng(7).fastNormals(n, 'f16', 2) as Uint16Array, f16ToF32);
    for (const x of [f32, bf, hf]) {
      const [mean, variance] = moments(x);
      expect(Math.abs(mean)).toBeLessThan(0.02);
      expect(Math.abs(variance - 4) / 4).toBeLessThan(0.02);
      expect(Array.from(x).reduce((a, v) => Math.max(a, Math.abs(v)), 0)).toBeLessThanOrEqual(2 * 3.46);
    }
    // the 16-bit samples are the f32 samples rounded: same draws in every dtype
    expect(Math.abs(bf[123]! - f32[123]!)).toBeLessThanOrEqual(Math.abs(f32[123]!) / 128);
  });
  it('is reproducible from the seed and differs between seeds', () => {
    expect(new Rng(3).fastNormals(64, 'bf16')).toEqual(new Rng(3).fastNormals(64, 'bf16'));
    expect(new Rng(3).fastNormals(64, 'f32')).not.toEqual(new Rng(4).fastNormals(64, 'f32'));
  });
});
