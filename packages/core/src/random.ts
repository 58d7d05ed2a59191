import { f32ToBf16, f32ToF16 } from './dtype.js';
/** Small seeded PRNG (mulberry32) and normal sampler, so tests, demos and benches are reproducible. */
export class Rng {
  private s: number;
  constructor(seed: number) {
    this.s = seed >>> 0;
  }
  /** Uniform in [0, 1). */
  next(): number {
    let t = (this.s = (this.s + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  /** Integer in [lo, hi]. */
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.next() * (hi - lo + 1));
  }
  /** Standard normal (Box–Muller). */
  normal(): number {
    const u = 1 - this.next();
    const v = this.next();
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
  }
  /**
   * Approximately N(0, std²) samples for benchmark inputs of billions of elements, where only the scale matters:
   * each is the sum of the four bytes of one xorshift32 draw seeded from this generator (Irwin–Hall: 1021 levels,
   * exact mean and variance, tails cut at ±3.45σ), stored as f32 or as f16/bf16 bits. About 10× faster than
   * `normals` followed by a conversion.
   */
  fastNormals(n: number, dtype: 'f32' | 'f16' | 'bf16', std = 1): Float32Array | Uint16Array {
    const k = std / Math.sqrt((4 * (256 * 256 - 1)) / 12);
    const levels = Float32Array.from({ length: 1021 }, (_, i) => (i - 510) * k);
    const table = dtype === 'f32' ? levels : Uint16Array.from(levels, (x) => (dtype === 'bf16' ? f32ToBf16(x) : f32ToF16(x)));
    const out = dtype === 'f32' ? new Float32Array(n) : new Uint16Array(n);
    let x = Math.floor(this.next() * 4294967295) | 1; // xorshift32 state: never 0
    for (let i = 0; i < n; i++) {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      out[i] = table[(x & 255) + ((x >>> 8) & 255) + ((x >>> 16) & 255) + ((x >>> 24) & 255)]!;
    }
    return out;
  }
  /** Fills a new Float32Array with N(0, std²) samples. */
  normals(n: number, std = 1): Float32Array {
    const out = new Float32Array(n);
    for (let i = 0; i < n; i++) out[i] = this.normal() * std;
    return out;
  }
}
