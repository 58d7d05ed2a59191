/**
 * Packs heads [hLo, hHi) of an f32 accumulation window [T, accHeads, D] (accIndex in common.wgsl.ts) into a
 * 16-bit output [T, Hq, D] (Hq: the output's heads), rounding as every 16-bit store does, and clears them in
 * the window for the next heads. Used only where a 16-bit output is summed across passes (forward.ts,
 * backward.ts); one invocation per element (atomicOr: words may straddle heads packed at different times).
 */
import { commonWgsl } from './common.wgsl.js';
import { type StorageKind, tensorWrite } from './storage.wgsl.js';

export function packWgsl(kind: StorageKind): string {
  return /* wgsl */ `
${commonWgsl}
override WG: u32 = 64;

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read_write> acc: array<f32>; // [T, accHeads, D]
${tensorWrite('dst', 2, kind)}// [T, Hq, D]

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let nh = P.hHi - P.hLo;
  let y = itemOf(wid) * WG + lid;
  if (y >= P.T * nh * P.D) { return; }
  let x = y / P.D;
  let i = ((x / nh) * P.Hq + P.hLo + x % nh) * P.D + y % P.D;
  let a = accIndex(i, P.Hq);
  dstPut(i, acc[a]);
  acc[a] = 0.0;
}
`;
}
