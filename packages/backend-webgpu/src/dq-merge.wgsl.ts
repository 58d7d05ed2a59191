/**
 * Backward dQ merge: per (t, h, d), dq = scale · Σ over the row's slots (in slot order) and over the 64-key
 * sub-tiles of each selected block (in order) of the dQ partials the dK/dV pass stored (backward-dkdv.wgsl.ts).
 * No float atomics: each sum has one owner and a fixed order, so dq is bitwise reproducible. One invocation per
 * (t, h, 4 dims) of the pass's heads; a pass holding part of a head's entries (Params) merges a contiguous run of
 * each row's slots, the running sum kept (unscaled) in dq.
 */
import { commonWgsl } from './common.wgsl.js';
import { type StorageKind, tensorWrite } from './storage.wgsl.js';

/**
 * `kind`: the storage of dq; `acc`: dq is an f32 accumulation window of one head instead (accIndex in
 * common.wgsl.ts), for 16-bit outputs of passes that hold part of a head's entries (backward.ts packs it).
 */
export function dqMergeWgsl(kind: StorageKind, acc = false): string {
  return /* wgsl */ `
${commonWgsl}
override WG: u32 = 64;
override CM: u32 = 64; // rows per chunk (CHUNK_ROWS)
const KT: u32 = 64u;   // keys per dK/dV workgroup

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> indices: array<i32>;    // [T, Hq, topk]
@group(0) @binding(2) var<storage, read> collected: array<u32>;  // CollectedLayout (geometry included)
@group(0) @binding(3) var<storage, read> work: array<vec4<f32>>; // (lse, Δ), dq partials [passCap + CM, subs, paddedD] per entry of the pass
${tensorWrite('dq', 4, acc ? 'f32' : kind, acc ? { remap: 'dqAcc' } : {})}// [T, Hq, D]
fn dqAcc(i: u32) -> u32 { return accIndex(i, P.Hq); }

// One invocation per (row, 4 dims) of the pass's heads.
@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let D = P.D;
  let Dq = paddedD() / 4u;
  let y = itemOf(wid) * WG + lid;
  if (y >= P.T * (P.hHi - P.hLo) * Dq) { return; }
  let hg = P.hHi - P.hLo;
  let row = (y / Dq / hg) * P.Hq + P.hLo + (y / Dq) % hg; // t · Hq + h, h in [hLo, hHi)
  let d4 = y % Dq;
  let base0 = collected[P.hLo * P.totalBlocks]; // first entry of head hLo
  let t = row / P.Hq;
  let h = row % P.Hq;
  let blockBase = collected[P.seqsOff + 4u * collected[P.rowSeqOff + t] + 2u];
  let subs = (P.blockSize + KT - 1u) / KT;
  let dqOff4 = dqPartialsOffset() / 4u;
  let base = row * P.topk;
  var acc = vec4<f32>(0.0);
  var bad = vec4<bool>(false);
  var first = true; // no slot merged yet in this pass
  var n = 0u;
  var last = 0u;    // slots of this pass end here
  for (var s = 0u; s < P.topk; s++) {
    let j = indices[base + s];
    if (j < 0) { break; }
    n = s + 1u;
    let g = blockBase + u32(j);
    let e = collected[P.entryOfOff + base + s];
    if (P.passWhole == 0u) { // part of the head's entries: skip another pass's
      let off = collected[h * P.totalBlocks + g];
      if (off + (e - off) / CM * CM - base0 - P.passE0 >= P.passCap) { continue; }
    }
    if (first && s > 0u) { // earlier passes' running sum
      for (var c = 0u; c < 4u; c++) { if (4u * d4 + c < D) { acc[c] = dqAt(row * D + 4u * d4 + c); } }
      bad = isNan4(acc);
    }
    first = false;
    last = s + 1u;
    let at = dqOff4 + (e - base0 - P.passE0) * subs * Dq + d4;
    let nSub = (collected[P.blocksOff + 4u * g + 1u] + KT - 1u) / KT; // sub-tiles of this (maybe shorter) block
    for (var u = 0u; u < nSub; u++) {
      let x = work[at + u * Dq];
      bad = bad | isNan4(x);
      acc += select(x, vec4<f32>(0.0), bad);
    }
  }
  var o = vec4<f32>(0.0); // no keys: 0
  if (n > 0u) {
    if (first) { return; }
    o = select(select(P.scale * acc, acc, last < n), vec4<f32>(nanF()), bad); // unscaled while later passes add
  }
  // whole words (pairs from an even index) at once
  let i0 = row * D + 4u * d4;
  let nd = D - 4u * d4;
  for (var c = 0u; c < 4u; c += 2u) {
    if (c + 1u < nd && ((i0 + c) & 1u) == 0u) { dqPut2(i0 + c, o[c], o[c + 1u]); continue; }
    if (c < nd) { dqPut(i0 + c, o[c]); }
    if (c + 1u < nd) { dqPut(i0 + c + 1u, o[c + 1u]); }
  }
}
`;
}
