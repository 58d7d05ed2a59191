/**
 * Routing (SPEC §2–3). `centroids`: per (global block, kv head, d) the f32 mean of the block's actual keys.
 * `topk`: fused tiled routing (FlashMoBA's flash_topk): a workgroup takes 64 query rows of one head and
 * streams the sequence's centroids in tiles of 64: S = Q Cᵀ with 256 invocations holding 4 × 4 register tiles
 * (head dim staged DK at a time), then S goes through workgroup memory (SH centroids at a time) to one owner
 * invocation per row that keeps the row's running top-k (insertion into sorted slots), visiting candidates in
 * ascending block order. Scores are raw q·c; exact ties go to the higher block; NaN is never selected;
 * causally the own block is forced and only earlier blocks compete. No [T, NB] buffer. This single-owner kernel
 * is unstable.routeKernel 'owner' and the path for more than 16 competing slots; route-split.wgsl.ts is the default.
 */
import { commonWgsl } from './common.wgsl.js';
import { type StorageKind, tensorRead } from './storage.wgsl.js';

/**
 * Bindings of both routing shaders (this one and route-split.wgsl.ts): q and k are read through `qAt`, `kAt`
 * (storage.wgsl.ts), and `queryTile` decodes a query tile of the geometry.
 */
export function routeBindingsWgsl(kind: StorageKind): string {
  return /* wgsl */ `
@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> geom: array<u32>;
${tensorRead('q', 2, kind)}// [Tq, Hq, D]
${tensorRead('k', 3, kind)}// [Tk, Hkv, D]
@group(0) @binding(4) var<storage, read_write> cent: array<f32>;   // [totalBlocks, Hkv, D]
@group(0) @binding(5) var<storage, read_write> indices: array<i32>; // [T, Hq, topk]

// Query tile number tile of the geometry: query rows [r0, r1) of one sequence, which has nBlocks blocks and
// whose first block is global block base; row r sits at local key position r − start (start: the tile's origin,
// geometry.ts; the sequence's first key row for self-attention; u32 wrapping with fewer queries than keys).
struct QueryTile { r0: u32, r1: u32, start: u32, nBlocks: u32, base: u32 }
fn queryTile(tile: u32) -> QueryTile {
  let sq = P.seqsOff + 4u * geom[P.qTilesOff + 4u * tile + 2u];
  return QueryTile(geom[P.qTilesOff + 4u * tile], geom[P.qTilesOff + 4u * tile + 1u], geom[P.qTilesOff + 4u * tile + 3u], geom[sq + 3u], geom[sq + 2u]);
}
`;
}

/** `kind`: the storage of q and k (storage.wgsl.ts). */
export function routeWgsl(kind: StorageKind): string {
  return /* wgsl */ `
${commonWgsl}
override TM: u32 = 64;       // centroids kernel: invocations per workgroup
override DK: u32 = 16u;      // head dims per S staging step
override SH: u32 = 64u;      // centroids of S in workgroup memory at once
override STAGE4: u32 = 512u; // DK · 128 / 4
const RT: u32 = 64u;         // rows per topk workgroup (ROUTE_ROWS)
const CT: u32 = 64u;         // centroids per tile
const MAXK: u32 = 64u;       // caps.maxTopk

${routeBindingsWgsl(kind)}

@compute @workgroup_size(TM)
fn centroids(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let i = itemOf(wid) * TM + lid;
  if (i >= P.totalBlocks * P.Hkv * P.D) { return; }
  let g = i / (P.Hkv * P.D);
  let hd = i % (P.Hkv * P.D);
  let start = geom[P.blocksOff + 4u * g];
  let len = geom[P.blocksOff + 4u * g + 1u];
  var s = 0.0;
  for (var t = start; t < start + len; t++) { s += kAt(t * P.Hkv * P.D + hd); }
  cent[i] = s / f32(len); // mean over the block's actual tokens (a partial last block included)
}

var<workgroup> stage: array<vec4<f32>, STAGE4>; // Q [DK][RT/4], C [DK][CT/4]: vec4 over rows / centroids
var<workgroup> sS: array<vec4<f32>, 16u * SH>;  // S of SH centroids: [RT][SH/4]

@compute @workgroup_size(256)
fn topk(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let tile = itemOf(wid);
  let h = wid.z;
  if (tile >= P.nItems) { return; } // uniform: the whole workgroup leaves
  let D = P.D;
  let hk = h / (P.Hq / P.Hkv);
  let qt = queryTile(tile);
  let r0 = qt.r0;
  let r1 = qt.r1;
  let start = qt.start;
  let nBlocks = qt.nBlocks;
  let base = qt.base;
  let causal = P.causal != 0u;
  let tx = lid % 16u;
  let ty = lid / 16u;
  // the row this invocation owns (lid < RT)
  let row = r0 + lid;
  let owner = lid < RT && row < r1;
  let cb = (min(row, r1 - 1u) - start) / P.blockSize; // current block
  // Candidates: causal, blocks before the current one (its own block is forced); else every block.
  let limit = select(nBlocks, cb, causal);
  let slots = select(P.topk, P.topk - 1u, causal);
  let tileLimit = select(nBlocks, (r1 - 1u - start) / P.blockSize, causal); // the tile's last row sees most

  var topVal: array<f32, MAXK>;
  var topIdx: array<u32, MAXK>;
  var n = 0u;
  var kth = negInf(); // topVal[slots − 1] once the list is full (a register: most candidates stop at it)
  for (var j0 = 0u; j0 < tileLimit; j0 += CT) {
    // -- S = Q Cᵀ: rows ty·4 + i, centroids j0 + tx·4 + j --
    var s = mat4x4<f32>();
    for (var d0 = 0u; d0 < D; d0 += DK) {
      workgroupBarrier();
      for (var e = lid; e < DK * (RT / 4u); e += 256u) {
        let d = d0 + e % DK;
        var x = vec4<f32>(0.0);
        for (var i = 0u; i < 4u; i++) {
          let r = r0 + (e / DK) * 4u + i;
          if (r < r1 && d < D) { x[i] = qAt((r * P.Hq + h) * D + d); }
        }
        stage[(e % DK) * (RT / 4u) + e / DK] = x;
      }
      // centroid groups past tileLimit are never read (below), so not staged
      for (var e = lid; e < DK * min(CT / 4u, (tileLimit - j0 + 3u) / 4u); e += 256u) {
        let d = d0 + e % DK;
        var x = vec4<f32>(0.0);
        for (var i = 0u; i < 4u; i++) {
          let j = j0 + (e / DK) * 4u + i;
          if (j < tileLimit && d < D) { x[i] = cent[((base + j) * P.Hkv + hk) * D + d]; }
        }
        stage[DK * (RT / 4u) + (e % DK) * (CT / 4u) + e / DK] = x;
      }
      workgroupBarrier();
      if (j0 + tx * 4u < tileLimit && r0 + ty * 4u < r1) { // padding: no arithmetic
        for (var dd = 0u; dd < DK; dd++) {
          let a = stage[dd * (RT / 4u) + ty];
          let b = stage[DK * (RT / 4u) + dd * (CT / 4u) + tx];
          s[0] = fma(vec4<f32>(a.x), b, s[0]);
          s[1] = fma(vec4<f32>(a.y), b, s[1]);
          s[2] = fma(vec4<f32>(a.z), b, s[2]);
          s[3] = fma(vec4<f32>(a.w), b, s[3]);
        }
      }
    }
    // -- each owner merges its row's candidates, SH centroids at a time, in ascending block order --
    for (var c0 = 0u; c0 < CT; c0 += SH) {
      workgroupBarrier();
      if (tx * 4u >= c0 && tx * 4u < c0 + SH) {
        for (var i = 0u; i < 4u; i++) { sS[(ty * 4u + i) * (SH / 4u) + (tx * 4u - c0) / 4u] = s[i]; }
      }
      workgroupBarrier();
      if (owner && slots > 0u) {
        for (var jj = 0u; jj < SH; jj++) {
          let j = j0 + c0 + jj;
          if (j >= limit) { break; }
          let sc = sS[lid * (SH / 4u) + jj / 4u][jj % 4u];
          if (isNan(sc)) { continue; } // NaN never selected
          // later (higher) blocks win ties, so ">=" moves a candidate before equal scores
          if (n == slots && sc < kth) { continue; } // not in the top k
          var pos = 0u;
          while (pos < n && sc < topVal[pos]) { pos++; }
          var m = min(n, slots - 1u);
          while (m > pos) { topVal[m] = topVal[m - 1u]; topIdx[m] = topIdx[m - 1u]; m--; }
          topVal[pos] = sc;
          topIdx[pos] = j;
          n = min(n + 1u, slots);
          kth = topVal[slots - 1u];
        }
      }
    }
  }
  if (!owner) { return; }
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
}
