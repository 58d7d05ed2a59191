/**
 * Collect (SPEC §3's key-block-major form): per (query head h, global block g) the ascending list of query
 * rows that chose g. count (u32 atomics: order-free) → exclusive prefix sum → scatter, where one thread per
 * (head, sequence) walks its rows in order, so every list comes out sorted and the result is deterministic.
 * `collected` holds offsets [Hq·NB + 1] then rows.
 */
import { commonWgsl } from './common.wgsl.js';

export const collectWgsl = /* wgsl */ `
${commonWgsl}
override WG: u32 = 256;

@group(0) @binding(0) var<uniform> P: Params;                     // nItems = Hq · totalBlocks (the lists)
@group(0) @binding(1) var<storage, read> geom: array<u32>;
@group(0) @binding(2) var<storage, read> indices: array<i32>;      // [T, Hq, topk]
@group(0) @binding(3) var<storage, read_write> counts: array<atomic<u32>>; // [Hq · NB]
@group(0) @binding(4) var<storage, read_write> collected: array<u32>;      // offsets [Hq·NB + 1], rows

fn listOf(t: u32, h: u32, j: u32) -> u32 {
  let base = geom[P.seqsOff + 4u * geom[P.rowSeqOff + t] + 2u];
  return h * P.totalBlocks + base + j;
}

@compute @workgroup_size(WG)
fn count(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let i = itemOf(wid) * WG + lid; // (t, h)
  if (i >= P.T * P.Hq) { return; }
  for (var s = 0u; s < P.topk; s++) {
    let j = indices[i * P.topk + s];
    if (j >= 0) { atomicAdd(&counts[listOf(i / P.Hq, i % P.Hq, u32(j))], 1u); }
  }
}

var<workgroup> partial: array<u32, WG>;

// One workgroup: each thread sums a contiguous chunk, the chunk sums are scanned, then each chunk is written.
@compute @workgroup_size(WG)
fn scan(@builtin(local_invocation_index) lid: u32) {
  let n = P.nItems;
  let chunk = (n + WG - 1u) / WG;
  let a = min(lid * chunk, n);
  let b = min(a + chunk, n);
  var s = 0u;
  for (var i = a; i < b; i++) { s += atomicLoad(&counts[i]); }
  partial[lid] = s;
  workgroupBarrier();
  // Hillis–Steele inclusive scan of the chunk sums
  for (var off = 1u; off < WG; off <<= 1u) {
    var x = 0u;
    if (lid >= off) { x = partial[lid - off]; }
    workgroupBarrier();
    partial[lid] += x;
    workgroupBarrier();
  }
  var run = partial[lid] - s; // exclusive prefix of this chunk
  for (var i = a; i < b; i++) {
    collected[i] = run;
    run += atomicLoad(&counts[i]);
  }
  if (lid == WG - 1u) { collected[n] = partial[WG - 1u]; }
}

// One thread per (head, sequence): rows visited in ascending order, so each list is sorted.
@compute @workgroup_size(WG)
fn scatter(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let i = itemOf(wid) * WG + lid;
  if (i >= P.Hq * P.nSeqs) { return; }
  let h = i / P.nSeqs;
  let sq = P.seqsOff + 4u * (i % P.nSeqs);
  let start = geom[sq];
  let len = geom[sq + 1u];
  let base = h * P.totalBlocks + geom[sq + 2u];
  let rowsOff = P.nItems + 1u;
  for (var j = 0u; j < geom[sq + 3u]; j++) { atomicStore(&counts[base + j], collected[base + j]); } // cursors
  for (var t = start; t < start + len; t++) {
    for (var s = 0u; s < P.topk; s++) {
      let j = indices[(t * P.Hq + h) * P.topk + s];
      if (j < 0) { continue; }
      let at = atomicLoad(&counts[base + u32(j)]);
      collected[rowsOff + at] = t;
      atomicStore(&counts[base + u32(j)], at + 1u);
    }
  }
}
`;
