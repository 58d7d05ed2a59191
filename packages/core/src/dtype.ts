/**
 * Storage dtypes and their conversion to and from f32. f16 and bf16 are raw bit patterns in a
 * Uint16Array; conversion from f32 rounds to nearest, ties to even, and keeps NaN a NaN.
 */
export type DType = 'f32' | 'f16' | 'bf16';
export const DTYPES: readonly DType[] = ['f32', 'f16', 'bf16'];

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** bf16 bits -> f32 value (exact). */
export function bf16ToF32(bits: number): number {
  u32[0] = (bits & 0xffff) << 16;
  return f32[0]!;
}

/** f32 value -> bf16 bits, round to nearest even. NaN stays a (quiet) NaN. */
export function f32ToBf16(x: number): number {
  f32[0] = x;
  const b = u32[0]!;
  if ((b & 0x7f800000) === 0x7f800000 && (b & 0x007fffff) !== 0) return ((b >>> 16) | 0x0040) & 0xffff;
  // add 0x7fff plus the lowest kept bit: ties go to the even neighbour
  return ((b + 0x7fff + ((b >>> 16) & 1)) >>> 16) & 0xffff;
}

/** f16 bits -> f32 value (exact). */
export function f16ToF32(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1;
  const exp = (bits >>> 10) & 0x1f;
  const frac = bits & 0x3ff;
  if (exp === 0) return sign * frac * 2 ** -24; // zero / subnormal
  if (exp === 0x1f) return frac ? NaN : sign * Infinity;
  return sign * (1 + frac / 1024) * 2 ** (exp - 15);
}

/** f32 value -> f16 bits, round to nearest even; overflow gives ±Inf, NaN gives a quiet NaN. */
export function f32ToF16(x: number): number {
  f32[0] = x;
  const b = u32[0]!;
  const sign = (b >>> 16) & 0x8000;
  const exp = (b >>> 23) & 0xff;
  let mant = b & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  const e = exp - 127 + 15; // rebiased exponent
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    // subnormal (or underflow to zero): shift the implicit-1 mantissa right, round to nearest even
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e; // 13 + (1 - e)
    const half = 1 << (shift - 1);
    const rest = mant & ((1 << shift) - 1);
    let m = mant >>> shift;
    if (rest > half || (rest === half && (m & 1))) m++;
    return sign | m; // m may carry into the exponent field: that is the correct result
  }
  const rest = mant & 0x1fff;
  let out = (e << 10) | (mant >>> 13);
  if (rest > 0x1000 || (rest === 0x1000 && (out & 1))) out++; // may carry into exp / to Inf: correct
  return sign | out;
}

/** Rounds an f32/f64 value to the nearest value representable in `dtype` (as a number). */
export function roundTo(dtype: DType, x: number): number {
  if (dtype === 'f32') return Math.fround(x);
  if (dtype === 'f16') return f16ToF32(f32ToF16(x));
  return bf16ToF32(f32ToBf16(x));
}

/** Machine epsilon (unit roundoff × 2) of each dtype. */
export function dtypeEps(dtype: DType): number {
  return dtype === 'f32' ? 2 ** -23 : dtype === 'f16' ? 2 ** -10 : 2 ** -7;
}

/** Bytes per element of each storage dtype. */
export function dtypeBytes(dtype: DType): number {
  return dtype === 'f32' ? 4 : 2;
}
