/**
 * Routing (SPEC §2–3). `centroids`: per (global block, kv head, d) the f32 mean of the block's actual keys.
 * `topk`: fused tiled routing (FlashMoBA's flash_topk): a workgroup takes TM query rows of one head and
 * streams the sequence's centroids through workgroup memory in tiles of CT, each thread keeping a running
 * top-k of its row (insertion into sorted slots). Scores are raw q·c; exact ties go to the higher block;
 * NaN is never selected; causally the own block is forced and only earlier blocks compete. No [T, NB] buffer.
 */
import { commonWgsl } from './common.wgsl.js';

export const routeWgsl = /* wgsl */ `
${commonWgsl}
override TM: u32 = 64;       // query rows per workgroup (one per thread)
override CT: u32 = 16;       // centroids per workgroup-memory tile
override CBUF: u32 = 1024;   // CT · D floats
const MAXK: u32 = 64u;       // caps.maxTopk

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> geom: array<u32>;
@group(0) @binding(2) var<storage, read> q: array<f32>;            // [T, Hq, D]
@group(0) @binding(3) var<storage, read> k: array<f32>;            // [T, Hkv, D]
@group(0) @binding(4) var<storage, read_write> cent: array<f32>;   // [totalBlocks, Hkv, D]
@group(0) @binding(5) var<storage, read_write> indices: array<i32>; // [T, Hq, topk]

@compute @workgroup_size(TM)
fn centroids(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let i = itemOf(wid) * TM + lid;
  if (i >= P.totalBlocks * P.Hkv * P.D) { return; }
  let g = i / (P.Hkv * P.D);
  let hd = i % (P.Hkv * P.D);
  let start = geom[P.blocksOff + 4u * g];
  let len = geom[P.blocksOff + 4u * g + 1u];
  var s = 0.0;
  for (var t = start; t < start + len; t++) { s += k[t * P.Hkv * P.D + hd]; }
  cent[i] = s / f32(len); // mean over the block's actual tokens (a partial last block included)
}

var<workgroup> cTile: array<f32, CBUF>; // [CT, D]

@compute @workgroup_size(TM)
fn topk(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let tile = itemOf(wid);
  let h = wid.z;
  if (tile >= P.nItems) { return; } // uniform: the whole workgroup leaves
  let D = P.D;
  let hk = h / (P.Hq / P.Hkv);
  let r0 = geom[P.qTilesOff + 4u * tile];
  let r1 = geom[P.qTilesOff + 4u * tile + 1u];
  let sq = P.seqsOff + 4u * geom[P.qTilesOff + 4u * tile + 2u];
  let start = geom[sq];
  let nBlocks = geom[sq + 3u];
  let base = geom[sq + 2u];
  let causal = P.causal != 0u;
  let row = r0 + lid;
  let inTile = row < r1;
  let cb = (min(row, r1 - 1u) - start) / P.blockSize; // current block
  // Candidates: causal, blocks before the current one (its own block is forced); else every block.
  let limit = select(nBlocks, cb, causal);
  let slots = select(P.topk, P.topk - 1u, causal);
  let tileLimit = select(nBlocks, (r1 - 1u - start) / P.blockSize, causal); // the tile's last row sees most

  var topVal: array<f32, MAXK>;
  var topIdx: array<u32, MAXK>;
  var n = 0u;
  for (var j0 = 0u; j0 < tileLimit; j0 += CT) {
    // -- stage CT centroids of kv head hk in workgroup memory --
    for (var e = lid; e < CT * D; e += TM) {
      let j = j0 + e / D;
      cTile[e] = select(0.0, cent[((base + j) * P.Hkv + hk) * D + e % D], j < tileLimit);
    }
    workgroupBarrier();
    // -- score and insert: later (higher) blocks win ties, so ">=" moves a candidate before equal scores --
    if (inTile && slots > 0u) {
      for (var jj = 0u; jj < CT; jj++) {
        let j = j0 + jj;
        if (j >= limit) { break; }
        var s = 0.0;
        for (var d = 0u; d < D; d++) { s += q[(row * P.Hq + h) * D + d] * cTile[jj * D + d]; }
        if (isNan(s)) { continue; } // NaN never selected
        var pos = 0u;
        while (pos < n && s < topVal[pos]) { pos++; }
        if (pos >= slots) { continue; }
        var m = min(n, slots - 1u);
        while (m > pos) { topVal[m] = topVal[m - 1u]; topIdx[m] = topIdx[m - 1u]; m--; }
        topVal[pos] = s;
        topIdx[pos] = j;
        n = min(n + 1u, slots);
      }
    }
    workgroupBarrier();
  }
  if (!inTile) { return; }
  // -- the selection, ascending, -1 padded --
  if (causal) { topIdx[n] = cb; n++; }
  for (var a = 1u; a < n; a++) {
    let x = topIdx[a];
    var b = a;
    while (b > 0u && topIdx[b - 1u] > x) { topIdx[b] = topIdx[b - 1u]; b--; }
    topIdx[b] = x;
  }
  let out = (row * P.Hq + h) * P.topk;
  for (var i = 0u; i < P.topk; i++) { indices[out + i] = select(-1, i32(topIdx[i]), i < n); }
}
`;
