/**
 * Storage dtypes and their conversion to and from f32. f16 and bf16 are raw bit patterns in a
 * Uint16Array; encoding a number (f64 or f32) rounds its exact value once to nearest, ties to even, and keeps
 * NaN a NaN. The names say f32 for history: `f32ToF16(x)` takes any JS number.
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

/**
 * A number -> bf16 bits, the exact value rounded once to nearest, ties to even (an f64 is not rounded to f32
 * first); overflow gives ±Inf. NaN stays a quiet NaN with its high payload bits, as in f32.
 */
export function f32ToBf16(x: number): number {
  f32[0] = x;
  if (f32[0] === x) { // an f32 (the common case): round its bits
    const b = u32[0]!;
    return ((b + 0x7fff + ((b >>> 16) & 1)) >>> 16) & 0xffff; // adding 0x7fff plus the lowest kept bit: ties to even
  }
  if (x !== x) return ((u32[0]! >>> 16) | 0x0040) & 0xffff;
  return encode(x, 7, 127, BF16_OVERFLOW);
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

/** A number -> f16 bits, the exact value rounded once to nearest, ties to even; overflow gives ±Inf, NaN a quiet NaN. */
export function f32ToF16(x: number): number {
  f32[0] = x;
  return f32[0] === x ? f16FromF32Bits(u32[0]!) : encode(x, 10, 15, 65520); // an f32 (the common case), or any number
}

/** f32 bits -> f16 bits, round to nearest even (the f32 fast path of f32ToF16). */
function f16FromF32Bits(b: number): number {
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

const f64 = new Float64Array(1);
const w32 = new Uint32Array(f64.buffer);
/** Index of the f64's high (sign, exponent) word in `w32`: 1 on little-endian machines. */
const HI = new Uint8Array(Uint16Array.of(1).buffer)[0] === 1 ? 1 : 0;
/** POW2[n + 160] = 2^n exactly, for n in [-160, 160]. */
const POW2 = new Float64Array(321);
POW2[160] = 1;
for (let i = 1; i <= 160; i++) {
  POW2[160 + i] = POW2[159 + i]! * 2;
  POW2[160 - i] = POW2[161 - i]! / 2;
}

/** `m >= 0` rounded to an integer, ties to even (exact: m < 2^53 and m - floor(m) is exact). */
function rint(m: number): number {
  const f = Math.floor(m);
  const d = m - f;
  return d > 0.5 || (d === 0.5 && f % 2 === 1) ? f + 1 : f;
}

/**
 * A number -> the bits of the nearest value of a binary format with `mbits` stored mantissa bits, exponent
 * bias `bias` and `overflow` the magnitude from which it rounds to infinity, rounding the exact (f64) value once.
 * Every step is exact: scaling by a power of two and `rint` on a value below 2^12.
 */
function encode(x: number, mbits: number, bias: number, overflow: number): number {
  f64[0] = x;
  const hi = w32[HI]!;
  const sign = (hi >>> 16) & 0x8000;
  const inf = sign | (((2 * bias + 1) << mbits) & 0x7fff);
  if (x !== x) return inf | (1 << (mbits - 1)); // quiet NaN
  const a = x < 0 ? -x : x;
  if (a >= overflow) return inf; // also ±Infinity
  const e = ((hi >>> 20) & 0x7ff) - 1023; // the f64's unbiased exponent (-1023 for f64 zero / subnormals)
  if (e < 1 - bias) return sign | rint(a * POW2[160 + bias - 1 + mbits]!); // subnormal: units of 2^(1-bias-mbits); may carry to the smallest normal
  const m = rint(a * POW2[160 + mbits - e]!); // in [2^mbits, 2^(mbits+1)]: a carry bumps the exponent, as it should
  return sign | (((e + bias) << mbits) + m - (1 << mbits));
}

/** The bf16 overflow threshold: the midpoint between the largest finite bf16, (2 - 2^-7)·2^127, and 2^128. */
const BF16_OVERFLOW = (2 - 2 ** -8) * 2 ** 127;

/** Rounds an f32/f64 value once to the nearest value representable in `dtype` (as a number). */
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
