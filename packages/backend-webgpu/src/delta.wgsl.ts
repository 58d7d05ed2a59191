/**
 * The Δ pass of the backward (FA2's compute_dot_do_o): per (t, h) the pair (lse, Δ = rowsum(dOut ⊙ out)), so the
 * dK/dV pass reads both with one load. 16 invocations per row read it coalesced (dims lane, lane + 16, …); their
 * 16 partial sums are added in a fixed order, so Δ is reproducible. They go to the start of the backward's
 * `work` buffer: [T, Hq, 2] f32.
 */
import { commonWgsl } from './common.wgsl.js';
import { type StorageKind, tensorRead } from './storage.wgsl.js';

/** `kind`: the storage of out and dOut (storage.wgsl.ts). */
export function deltaWgsl(kind: StorageKind): string {
  return /* wgsl */ `
${commonWgsl}
const LANES: u32 = 16u;
const ROWS: u32 = 16u; // rows per workgroup (256 invocations)

@group(0) @binding(0) var<uniform> P: Params;
${tensorRead('out', 1, kind)}// [T, Hq, D]
${tensorRead('dOut', 2, kind)}// [T, Hq, D]
@group(0) @binding(3) var<storage, read> lse: array<f32>;   // [T, Hq]
@group(0) @binding(4) var<storage, read_write> stats: array<f32>; // work: [T, Hq, 2] first

var<workgroup> part: array<f32, 256>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let r = lid / LANES;
  let lane = lid % LANES;
  let i = itemOf(wid) * ROWS + r; // (t, h)
  var s = 0.0;
  var bad = false; // a non-finite dOut or out makes Δ NaN (tested on the bits: WGSL may assume finite math)
  if (i < P.T * P.Hq) {
    for (var d = lane; d < P.D; d += LANES) {
      let g = dOutAt(i * P.D + d);
      let o = outAt(i * P.D + d);
      bad = bad || notFinite(g) || notFinite(o);
      s += g * o;
    }
  }
  part[lid] = select(s, nanF(), bad);
  workgroupBarrier();
  if (lane != 0u || i >= P.T * P.Hq) { return; }
  var delta = 0.0;
  var dBad = false;
  for (var x = 0u; x < LANES; x++) { delta += part[r * LANES + x]; dBad = dBad || isNan(part[r * LANES + x]); }
  stats[2u * i] = lse[i];
  stats[2u * i + 1u] = select(delta, nanF(), dBad);
}
`;
}
