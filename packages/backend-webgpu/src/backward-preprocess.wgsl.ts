/**
 * Backward preprocess (FA2's compute_dot_do_o): per (t, h) the pair (lse, Δ = rowsum(dOut ⊙ out)), so the
 * dK/dV and dQ passes read both with one load. stats: [T, Hq, 2] f32.
 */
import { commonWgsl } from './common.wgsl.js';

export const backwardPreprocessWgsl = /* wgsl */ `
${commonWgsl}
override WG: u32 = 64;

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> out: array<f32>;   // [T, Hq, D]
@group(0) @binding(2) var<storage, read> dOut: array<f32>;  // [T, Hq, D]
@group(0) @binding(3) var<storage, read> lse: array<f32>;   // [T, Hq]
@group(0) @binding(4) var<storage, read_write> stats: array<f32>; // [T, Hq, 2]

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let i = itemOf(wid) * WG + lid; // (t, h)
  if (i >= P.T * P.Hq) { return; }
  var delta = 0.0;
  for (var d = 0u; d < P.D; d++) { delta += dOut[i * P.D + d] * out[i * P.D + d]; }
  stats[2u * i] = lse[i];
  stats[2u * i + 1u] = delta;
}
`;
