/**
 * How device tensors are stored, and the WGSL accessors every kernel loads and stores them with. Compute is f32;
 * storage follows the dtype: f32 tensors are `array<f32>`, f16 and bf16 tensors hold 16 bits per element, two per
 * u32 word (element i in word i >> 1, the low half for even i; byte length 4·⌈n/2⌉), copied to and from the host
 * as they are. Decoding and encoding are integer code of core WGSL, so 16-bit storage works on every adapter:
 * the `f16` WGSL extension (feature `shader-f16`, absent on the H200's Dawn/Vulkan adapter) is never needed.
 *
 * API (stable: other kernels switch to it by replacing their binding declaration and loads/stores):
 *   StorageKind = 'f32' | 'f16' | 'bf16'             the storage of a tensor (its dtype)
 *   storageBytes(n, kind)                           bytes of a tensor of n elements (at least 4)
 *   tensorRead(name, binding, kind)                 `var<storage, read> name` and
 *     fn <name>At(i: u32) -> f32                     element i
 *     fn <name>At2(i: u32) -> vec2<f32>              elements i, i + 1 (i even: one word)
 *   tensorWrite(name, binding, kind, { remap? })    `var<storage, read_write> name` and
 *     fn <name>Put(i: u32, x: f32)                   stores element i rounded to the kind (nearest even; NaN stays
 *                                                    NaN; f16 overflow gives ±∞). 16-bit: atomicOr into the word, so
 *                                                    each element is written at most once into a zeroed buffer
 *     fn <name>Put2(i: u32, a: f32, b: f32)          elements i, i + 1 (i even, i + 1 < n): one word store
 *     fn <name>At(i: u32) -> f32                     element i as stored (reading back a running sum)
 *   remap (f32 only): a WGSL `fn(u32) -> u32` applied to every index (an accumulation window, backward.ts).
 *   storageWgsl                                     the shared helpers below; commonWgsl includes them.
 * The rounding is exactly that of core's f32ToF16 / f32ToBf16 (and of the former in-place round pass), so a
 * 16-bit output holds the bits the host would have made from the f32 result.
 */
import type { DType } from '@moba/core';

/** The storage of a device tensor: its dtype. */
export type StorageKind = DType;

/** Bytes of a device tensor of `n` elements stored as `kind` (at least 4, a whole word). */
export function storageBytes(n: number, kind: StorageKind): number {
  return Math.max(4, kind === 'f32' ? 4 * n : 4 * Math.ceil(n / 2));
}

const decode = (kind: StorageKind): string => (kind === 'f16' ? 'decodeF16' : 'decodeBf16');
const encode = (kind: StorageKind): string => (kind === 'f16' ? 'encodeF16' : 'encodeBf16');

/** A read-only tensor binding with `<name>At(i)` and `<name>At2(i)` (i even). */
export function tensorRead(name: string, binding: number, kind: StorageKind): string {
  const decl = `@group(0) @binding(${binding}) var<storage, read> ${name}`;
  if (kind === 'f32') {
    return `${decl}: array<f32>;
fn ${name}At(i: u32) -> f32 { return ${name}[i]; }
fn ${name}At2(i: u32) -> vec2<f32> { return vec2<f32>(${name}[i], ${name}[i + 1u]); }
`;
  }
  const dec = decode(kind);
  return `${decl}: array<u32>; // ${kind}, two per word
fn ${name}At(i: u32) -> f32 { return ${dec}((${name}[i >> 1u] >> ((i & 1u) << 4u)) & 0xffffu); }
fn ${name}At2(i: u32) -> vec2<f32> { let w = ${name}[i >> 1u]; return vec2<f32>(${dec}(w & 0xffffu), ${dec}(w >> 16u)); }
`;
}

export interface WriteOptions {
  /** A WGSL function `fn(u32) -> u32` applied to every element index (f32 storage only). */
  readonly remap?: string;
}

/** A writable tensor binding with `<name>Put(i, x)`, `<name>Put2(i, a, b)` (i even) and `<name>At(i)`. */
export function tensorWrite(name: string, binding: number, kind: StorageKind, opts: WriteOptions = {}): string {
  const decl = `@group(0) @binding(${binding}) var<storage, read_write> ${name}`;
  if (kind === 'f32') {
    const ix = (i: string): string => (opts.remap ? `${opts.remap}(${i})` : i);
    return `${decl}: array<f32>;
fn ${name}Put(i: u32, x: f32) { ${name}[${ix('i')}] = x; }
fn ${name}Put2(i: u32, a: f32, b: f32) { ${name}[${ix('i')}] = a; ${name}[${ix('i + 1u')}] = b; }
fn ${name}At(i: u32) -> f32 { return ${name}[${ix('i')}]; }
`;
  }
  if (opts.remap) throw new Error(`tensorWrite(${name}): remap needs f32 storage, not ${kind}`);
  const [dec, enc] = [decode(kind), encode(kind)];
  return `${decl}: array<atomic<u32>>; // ${kind}, two per word; zeroed before the first store
fn ${name}Put(i: u32, x: f32) { atomicOr(&${name}[i >> 1u], ${enc}(x) << ((i & 1u) << 4u)); }
fn ${name}Put2(i: u32, a: f32, b: f32) { atomicStore(&${name}[i >> 1u], ${enc}(a) | (${enc}(b) << 16u)); }
fn ${name}At(i: u32) -> f32 { return ${dec}((atomicLoad(&${name}[i >> 1u]) >> ((i & 1u) << 4u)) & 0xffffu); }
`;
}

/**
 * Shared helpers (need commonWgsl's isNan and nanF): 16-bit decode and encode, and the rounding of an f32 to
 * the nearest f16 / bf16 value.
 */
export const storageWgsl = /* wgsl */ `
// bf16 bits → f32: the high half of an f32 (exact, NaN payloads kept).
fn decodeBf16(h: u32) -> f32 { return bitcast<f32>(h << 16u); }

// f16 bits → f32 by hand (exact; unpack2x16float leaves NaN and, on some drivers, subnormals to the
// implementation): subnormals m·2^−24, NaN as the canonical quiet NaN.
fn decodeF16(h: u32) -> f32 {
  let s = (h & 0x8000u) << 16u;
  let e = (h >> 10u) & 0x1fu;
  let m = h & 0x3ffu;
  if (e == 0u) { return bitcast<f32>(s | bitcast<u32>(f32(m) * 5.9604644775390625e-8)); }
  if (e == 31u) { return select(bitcast<f32>(s | 0x7f800000u), nanF(), m != 0u); }
  return bitcast<f32>(s | ((e + 112u) << 23u) | (m << 13u));
}

// The nearest bf16 value (ties to even); NaN stays NaN.
fn roundToBf16(v: f32) -> f32 {
  let b = bitcast<u32>(v);
  if (isNan(v)) { return v; }
  return bitcast<f32>((b + 0x7fffu + ((b >> 16u) & 1u)) & 0xffff0000u);
}

// The nearest f16 value, by hand (pack2x16float's rounding is implementation-defined): quantum 2^(e−10),
// subnormals 2^−24, WGSL round() is ties-to-even; |v| ≥ 65520 rounds to ±∞ as in IEEE.
fn roundToF16(v: f32) -> f32 {
  if (isNan(v)) { return v; }
  let a = abs(v);
  if (a >= 65520.0) { return bitcast<f32>(select(0x7f800000u, 0xff800000u, v < 0.0)); }
  let e = max(i32((bitcast<u32>(a) >> 23u) & 0xffu) - 127, -14);
  let r = ldexp(round(ldexp(a, 10 - e)), e - 10);
  return select(r, -r, v < 0.0);
}

// f32 → bf16 bits (core's f32ToBf16): NaN keeps its high half with the quiet bit set.
fn encodeBf16(v: f32) -> u32 {
  let b = bitcast<u32>(roundToBf16(v));
  return select(b >> 16u, ((b >> 16u) | 0x40u) & 0xffffu, isNan(v));
}

// f32 → f16 bits (core's f32ToF16) of the rounded value, which f16 holds exactly: NaN → sign | 0x7e00.
fn encodeF16(v: f32) -> u32 {
  let b = bitcast<u32>(roundToF16(v));
  let s = (b >> 16u) & 0x8000u;
  let e = (b >> 23u) & 0xffu;
  let m = b & 0x7fffffu;
  if (e == 0xffu) { return s | select(0x7c00u, 0x7e00u, m != 0u); }
  if (e >= 113u) { return s | ((e - 112u) << 10u) | (m >> 13u); }
  if (e >= 103u) { return s | ((m | 0x800000u) >> (126u - e)); } // subnormal: exact shift
  return s; // zero
}
`;
