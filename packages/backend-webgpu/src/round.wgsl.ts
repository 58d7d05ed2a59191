/**
 * Rounds an f32 buffer in place to the values of a 16-bit dtype (mode 1: f16, 2: bf16), so that outputs of
 * f16/bf16 problems hold exactly what a 16-bit tensor would (round to nearest even; NaN stays NaN).
 */
import { commonWgsl } from './common.wgsl.js';

export const roundWgsl = /* wgsl */ `
${commonWgsl}
override WG: u32 = 64;

@group(0) @binding(0) var<uniform> P: Params; // nItems = elements, mode = 1 (f16) or 2 (bf16)
@group(0) @binding(1) var<storage, read_write> x: array<f32>;

fn toBf16(v: f32) -> f32 {
  let b = bitcast<u32>(v);
  if (isNan(v)) { return v; }
  return bitcast<f32>((b + 0x7fffu + ((b >> 16u) & 1u)) & 0xffff0000u); // ties to even
}

// f16 by hand (pack2x16float's rounding is implementation-defined): quantum 2^(e−10), subnormals 2^−24,
// WGSL round() is ties-to-even; |v| ≥ 65520 rounds to ±∞ as in IEEE.
fn toF16(v: f32) -> f32 {
  if (isNan(v)) { return v; }
  let a = abs(v);
  if (a >= 65520.0) { return bitcast<f32>(select(0x7f800000u, 0xff800000u, v < 0.0)); }
  let e = max(i32((bitcast<u32>(a) >> 23u) & 0xffu) - 127, -14);
  let r = ldexp(round(ldexp(a, 10 - e)), e - 10);
  return select(r, -r, v < 0.0);
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let i = itemOf(wid) * WG + lid;
  if (i >= P.nItems) { return; }
  let v = x[i];
  if (P.mode == 2u) { x[i] = toBf16(v); } else { x[i] = toF16(v); }
}
`;
