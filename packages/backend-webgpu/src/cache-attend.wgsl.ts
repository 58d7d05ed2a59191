/**
 * KV cache attend (SPEC §3, §4, §8, §9), two entry points of one shader (the merge is cache-merge.wgsl.ts):
 *   route:  one workgroup per (query row, kv head, chunk of ≤ ROUTE_HEADS of its query heads): the centroids of
 *           the eligible blocks are staged up to TB blocks at a time into workgroup memory (one load for all the
 *           heads of the chunk, rows padded so the scoring reads no bank twice), each (head, block) score (raw dot,
 *           f32) is split over 4 invocations (dims d ≡ k mod 4, in d order; the 4 partials added in a fixed order),
 *           so all 64 invocations score even for one head, and the owner invocation of each query head keeps its
 *           exact top-k by insertion in block order (ties to the higher block;
 *           NaN and −∞ never enter); a row whose k holds all its candidates (dense, so any k above 64) writes every
 *           finite one as it comes, in block order. Causal: the own block floor(t / B) is forced and counts inside
 *           k, only earlier (completed) blocks compete; non-causal: every block, the open one with centroid sum / count. Writes sel `[Tq, Hq, k]` ascending, −1 padded.
 *           Split (long sequences, k ≤ 64): the blocks in `splits` ranges of `range`, one workgroup each, each writing
 *           its range's exact top-k (score bits, block) to sel `[Tq, Hq, splits, k, 2]`.
 *   choose: (split routing only) one workgroup per (query row, query head) merges the ranges' candidates into the
 *           same selection as unsplit (the scores are the same dots, the order total), once for all the row's slots
 *           and pool groups, written over the start of the row's candidates.
 *   attend: one workgroup per (query row, query head, selected slot): the block's keys in chunks of 64 (one score
 *           per invocation), an online softmax in the log2 domain whose chunk max and sums every invocation
 *           computes in the same order, each invocation accumulating its head dims; the causal mask at t in the own
 *           block. Writes the partial (m, l, acc[D]) f32; an empty slot writes m = −∞, l = 0; a non-finite score l = NaN.
 * Nothing depends on the other rows of the batch: a sequence's result is the same alone or batched.
 */
import { poolBindings, poolGeometry } from './cache-pool.wgsl.js';
import { commonWgsl } from './common.wgsl.js';
import { type StorageKind, tensorRead } from './storage.wgsl.js';

/** Most centroids staged per routing step, the staging's floats, and the largest head dim it holds. */
export const ROUTE_TB = 16;
const STAGE = 16 * 132;
/** Query heads of one routing workgroup (the host makes ⌈G / ROUTE_HEADS⌉ chunks of a kv head's G query heads). */
export const ROUTE_HEADS = 16;
export const MAX_D = 256;

/** Words of the attend table's header (cache.ts writes them in this order). */
export const ATTEND_HEADER = ['RS', 'C', 'rowsOff', 'entriesOff', 'pagesOff', 'headChunks', 'ppb', 'splits', 'range', 'selStride'] as const;

/** Most routing candidates an attend workgroup merges (splits × k). */
export const MAX_CANDIDATES = 512;

/** The attend shader for a pool of n buffers per keys and values. */
export function cacheAttendWgsl(kind: StorageKind, n: number): string {
  return /* wgsl */ `
${commonWgsl}
const TB: u32 = ${ROUTE_TB}u;
const HW: u32 = ${ROUTE_HEADS}u;
const STAGE: u32 = ${STAGE}u;
const MAXK: u32 = 64u;
const MAXC: u32 = ${MAX_CANDIDATES}u;

@group(0) @binding(0) var<uniform> P: Params;    // T = Tq, Hq, Hkv, D, blockSize, topk, causal, scaleLog2, nItems
@group(0) @binding(1) var<storage, read> tab: array<u32>;
${tensorRead('q', 2, kind)}
@group(0) @binding(3) var<storage, read> pm: array<f32>;
@group(0) @binding(4) var<storage, read_write> sel: array<i32>;
@group(0) @binding(5) var<storage, read_write> part: array<f32>;
${poolBindings('kp', 6, n, kind, false)}
${poolBindings('vp', 6 + n, n, kind, false)}
${poolGeometry('tab[6]', 'P.blockSize * tab[0]', n)}
fn RS() -> u32 { return tab[0]; }
fn C() -> u32 { return tab[1]; }
// query row r: entry, key position t
fn rowOf(r: u32, f: u32) -> u32 { return tab[tab[2] + 2u * r + f]; }
// entry e: length, first word of its page list
fn ent(e: u32, f: u32) -> u32 { return tab[tab[3] + 2u * e + f]; }
fn pageOf(e: u32, j: u32) -> u32 { return tab[tab[4] + ent(e, 1u) + j]; }

var<workgroup> cent: array<f32, ${STAGE}>;            // [tb, DS] centroids, rows padded to DS (cstride)
var<workgroup> sc: array<f32, ${4 * ROUTE_HEADS * ROUTE_TB}>; // [heads, TB, 4] partial scores

// (s, j) ranks above (s2, j2): a higher score, or an equal one with a higher block index.
fn better(s: f32, j: i32, s2: f32, j2: i32) -> bool { return s > s2 || (s == s2 && j > j2); }

// The staging row stride: D rounded up to 32 floats, plus 4. The 4 lanes of a (head, block) pair read dims
// d = 4i + k, 8 pairs of consecutive blocks per 32 lanes: banks 4b + k + 4i (mod 32), all distinct.
fn cstride(D: u32) -> u32 { return (D + 31u) / 32u * 32u + 4u; }

@compute @workgroup_size(64)
fn route(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let item = itemOf(wid);
  if (item >= P.nItems) { return; }
  let chunks = tab[5];
  let splits = tab[7];
  let sp = item % splits;
  let hc = (item / splits) % chunks;
  let kvh = (item / splits / chunks) % P.Hkv;
  let r = item / splits / chunks / P.Hkv;
  let G = P.Hq / P.Hkv;
  let gi = hc * HW + lid;
  let mine = lid < HW && gi < G;
  let h = kvh * G + gi;
  let B = P.blockSize;
  let D = P.D;
  let DS = cstride(D);
  let e = rowOf(r, 0u);
  let t = rowOf(r, 1u);
  let len = ent(e, 0u);
  let cb = t / B;
  let causal = P.causal != 0u;
  let nElig = select((len + B - 1u) / B, cb, causal);
  let kSel = select(P.topk, P.topk - 1u, causal);
  let dense = kSel >= nElig && splits == 1u; // every finite score is selected, in block order: written as they come
  let o = (r * P.Hq + h) * tab[9];
  let j0 = min(nElig, sp * tab[8]); // this workgroup's blocks [j0, j1)
  let j1 = min(nElig, j0 + tab[8]);
  var topV: array<f32, MAXK>;
  var topI: array<i32, MAXK>;
  var n = 0u;
  let tb = min(TB, STAGE / DS);     // blocks per step: as many centroids as the staging holds, at most TB
  let heads = min(HW, G - hc * HW); // query heads of this workgroup
  let k4 = lid & 3u;                // this lane's dims of a pair: d = 4i + k4
  let q0 = (r * P.Hq + kvh * G + hc * HW) * D;
  for (var base = j0; base < j1; base += tb) {
    let nb = min(tb, j1 - base);
    for (var b = 0u; b < nb; b++) { // block by block: its page and its scale looked up once, the dims coalesced
      let j = base + b;
      let at = pageOf(e, j) * 2u * C() + kvh * D;
      let full = (j + 1u) * B <= len; // a completed block: its centroid; the open one (non-causal): sum / count
      let off = select(at, at + C(), full);
      let cnt = f32(len - j * B);
      for (var d = lid; d < D; d += 64u) {
        let c = pm[off + d];
        cent[b * DS + d] = select(c / cnt, c, full);
      }
    }
    workgroupBarrier();
    // every (head, block) pair scored by 4 lanes, 16 pairs at a time: lane k4 sums d = k4, k4 + 4, ... in d order;
    // the head's owner adds the 4 partials in a fixed order (the same whatever the batch, split or head count)
    for (var x = lid >> 2u; x < heads * nb; x += 16u) {
      let hh = x / nb;
      let b = x - hh * nb;
      let qo = q0 + hh * D;
      let co = b * DS;
      var s = 0.0;
      for (var d = k4; d < D; d += 4u) { s += qAt(qo + d) * cent[co + d]; }
      sc[(hh * TB + b) * 4u + k4] = s;
    }
    workgroupBarrier();
    if (mine && kSel > 0u) {
      for (var b = 0u; b < nb; b++) { // each head inserts its scores in block order
        let j = base + b;
        let p = (lid * TB + b) * 4u;
        let s = (sc[p] + sc[p + 1u]) + (sc[p + 2u] + sc[p + 3u]);
        if (isNan(s) || s == negInf()) { continue; }
        if (dense) { sel[o + n] = i32(j); n++; continue; }
        var at = n;
        if (n < kSel) { n++; } else if (better(s, i32(j), topV[kSel - 1u], topI[kSel - 1u])) { at = kSel - 1u; } else { continue; }
        while (at > 0u && better(s, i32(j), topV[at - 1u], topI[at - 1u])) {
          topV[at] = topV[at - 1u];
          topI[at] = topI[at - 1u];
          at--;
        }
        topV[at] = s;
        topI[at] = i32(j);
      }
    }
    workgroupBarrier();
  }
  if (!mine) { return; }
  if (splits > 1u) { // this range's top-k (score bits, block), unordered, −1 padded: attend merges the ranges
    let c0 = o + 2u * sp * kSel;
    for (var i = 0u; i < kSel; i++) {
      sel[c0 + 2u * i] = bitcast<i32>(topV[i]);
      sel[c0 + 2u * i + 1u] = select(-1, topI[i], i < n);
    }
    return;
  }
  if (!dense) {
    for (var i = 1u; i < n; i++) { // ascending block order
      let j = topI[i];
      var at = i;
      while (at > 0u && topI[at - 1u] > j) { topI[at] = topI[at - 1u]; at--; }
      topI[at] = j;
    }
    for (var i = 0u; i < n; i++) { sel[o + i] = topI[i]; }
  }
  if (causal) { sel[o + n] = i32(cb); n++; } // after every eligible block (all < cb)
  for (var i = n; i < P.topk; i++) { sel[o + i] = -1; }
}

var<workgroup> sS: array<f32, 64>;
var<workgroup> sBlock: i32;
var<workgroup> cS: array<f32, MAXC>;
var<workgroup> cI: array<i32, MAXC>;
var<workgroup> cF: array<u32, MAXC>;
var<workgroup> nChosen: atomic<u32>;

// Split routing, once per (query row r, query head h) between route and attend: the kSel best of the ranges'
// candidates (a total order: exactly the unsplit top-k), ascending, then the own block cb when causal, -1 past the
// end, written over the first topk words of the row's candidates (read into workgroup memory first).
@compute @workgroup_size(64)
fn choose(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let item = itemOf(wid);
  if (item >= P.nItems) { return; }
  let causal = P.causal != 0u;
  let kSel = select(P.topk, P.topk - 1u, causal);
  let nc = tab[7] * kSel;
  let o = item * tab[9];
  for (var x = lid; x < nc; x += 64u) { cS[x] = bitcast<f32>(sel[o + 2u * x]); cI[x] = sel[o + 2u * x + 1u]; }
  workgroupBarrier();
  for (var x = lid; x < nc; x += 64u) {
    let j = cI[x];
    var rank = 0u;
    if (j >= 0) {
      for (var y = 0u; y < nc; y++) { if (cI[y] >= 0 && better(cS[y], cI[y], cS[x], j)) { rank++; } }
    }
    let chosen = j >= 0 && rank < kSel;
    cF[x] = select(0u, 1u, chosen);
    if (chosen) { atomicAdd(&nChosen, 1u); }
  }
  workgroupBarrier();
  let nSel = atomicLoad(&nChosen);
  for (var x = lid; x < nc; x += 64u) {
    if (cF[x] != 0u) {
      var pos = 0u;
      for (var y = 0u; y < nc; y++) { if (cF[y] != 0u && cI[y] < cI[x]) { pos++; } }
      sel[o + pos] = cI[x];
    }
  }
  if (causal && lid == 0u) { sel[o + nSel] = i32(rowOf(item / P.Hq, 1u) / P.blockSize); }
  for (var i = select(nSel, nSel + 1u, causal) + lid; i < P.topk; i += 64u) { sel[o + i] = -1; }
}

@compute @workgroup_size(64)
fn attend(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let item = itemOf(wid);
  if (item >= P.nItems) { return; }
  let D = P.D;
  let B = P.blockSize;
  let r = item / (P.Hq * P.topk);
  let h = (item / P.topk) % P.Hq;
  let kvh = h / (P.Hq / P.Hkv);
  let causal = P.causal != 0u;
  let e = rowOf(r, 0u);
  let t = rowOf(r, 1u);
  if (lid == 0u) { sBlock = sel[(r * P.Hq + h) * tab[9] + item % P.topk]; } // split: as \`choose\` left it
  let j = workgroupUniformLoad(&sBlock);
  let po = item * (D + 2u);
  if (j < 0) {
    if (P.mode != 0u) { return; } // written by the first group's dispatch
    for (var d = lid; d < D + 2u; d += 64u) { part[po + d] = select(0.0, negInf(), d == 0u); }
    return;
  }
  let len = ent(e, 0u);
  let page = pageOf(e, u32(j));
  if (!inGroup(page)) { return; }
  let pb = poolBuf(page);
  let pbase = poolBase(page) + kvh * D;
  let p0 = u32(j) * B;
  var p1 = min(p0 + B, len);
  if (causal && u32(j) == t / B) { p1 = t + 1u; } // the own block, masked at t
  var m = negInf();
  var l = 0.0;
  var acc = vec4<f32>(0.0);
  var bad = false;
  let qo = (r * P.Hq + h) * D;
  for (var c0 = p0; c0 < p1; c0 += 64u) {
    let p = c0 + lid;
    var s = negInf();
    if (p < p1) {
      let ko = pbase + (p - p0) * RS();
      var dot = 0.0;
      if ((D & 1u) == 0u) { // two dims per load (one word of 16-bit storage: qo, ko even), in d order
        for (var d = 0u; d < D; d += 2u) { let qq = qAt2(qo + d); let kk = kpAt2(pb, ko + d); dot += qq.x * kk.x; dot += qq.y * kk.y; }
      } else { for (var d = 0u; d < D; d++) { dot += qAt(qo + d) * kpAt(pb, ko + d); } }
      s = dot * P.scaleLog2;
    }
    sS[lid] = s;
    workgroupBarrier();
    let cnt = min(64u, p1 - c0);
    var cm = m;
    for (var i = 0u; i < cnt; i++) {
      bad = bad || notFinite(sS[i]);
      cm = max(cm, sS[i]);
    }
    let alpha = exp2(m - cm);
    l *= alpha;
    acc *= alpha;
    for (var i = 0u; i < cnt; i++) {
      let pe = exp2(sS[i] - cm);
      l += pe;
      let vo = pbase + (c0 + i - p0) * RS();
      for (var u = 0u; u < 4u; u++) {
        let d = lid + 64u * u;
        if (d < D) { acc[u] += pe * vpAt(pb, vo + d); }
      }
    }
    m = cm;
    workgroupBarrier();
  }
  if (lid == 0u) { part[po] = m; part[po + 1u] = select(l, nanF(), bad); }
  for (var u = 0u; u < 4u; u++) {
    let d = lid + 64u * u;
    if (d < D) { part[po + 2u + d] = acc[u]; }
  }
}
`;
}
