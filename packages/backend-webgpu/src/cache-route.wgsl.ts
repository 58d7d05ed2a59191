/**
 * KV cache routing (SPEC §3, §9), the first launch of an attend: one workgroup of 256 invocations per (query row,
 * kv head, chunk of ≤ ROUTE_HEADS of its query heads), so no launch merges ranges afterwards. The 64 quads of
 * invocations are spread over the chunk's heads (⌊64 / heads⌋ quads each, the rest idle); per step the quads of a
 * head take the next 4 blocks each, in block order. A quad scores its 4 blocks with the head's query slice in
 * registers: lane k of the quad reads the centroid's vec4 number k, k + 4, … (D % 4 == 0; else dims k, k + 4, …
 * scalar), so 8 quads of a subgroup read 8 runs of 64 contiguous bytes per load and the loads of the 4 blocks
 * (D / 16 vec4 each, constant D: unrolled) are in flight together; the heads of a chunk read the same centroids in
 * the same step (cache hits). Lane k's partial of a block: its products summed per component in vec4 order, then
 * (x + y) + (z + w); the score (p0 + p1) + (p2 + p3): the same fixed order whatever the batch or the head count.
 * Then lane k of the quad owns the quad's block k: every invocation keeps a private sorted top-K list (K a
 * constant of the shader variant, ≥ the k competing blocks; constant-bound branchless insertion: registers), and
 * after the last step the lists of a head are merged in a tree through workgroup memory (the comparator is total:
 * a higher score, then a higher block; so the result is the exact top-k whatever the merge order). NaN and −∞ never
 * enter. Causal: only the completed blocks before the own block floor(t / B) compete, the own block is forced and
 * counts inside k; non-causal: every block, the open one with centroid sum / count. A dense row (k ≥ its eligible
 * blocks) writes every finite block in block order instead (a prefix count per step). Writes sel `[Tq, Hq, topk]`
 * ascending, −1 padded.
 */
import { commonWgsl } from './common.wgsl.js';
import { type StorageKind, tensorRead } from './storage.wgsl.js';

/** Query heads of one routing workgroup (the host makes ⌈G / ROUTE_HEADS⌉ chunks of a kv head's G query heads). */
export const ROUTE_HEADS = 16;
/** Invocations of a routing workgroup. */
export const ROUTE_WG = 256;
/** The private list lengths of the routing variants. */
export const ROUTE_LISTS = [8, 16, 32, 64] as const;

/** The list length of the routing variant for k competing blocks (dense rows do not use the list). */
export function routeList(kSel: number): number {
  return ROUTE_LISTS.find((k) => k >= kSel) ?? ROUTE_LISTS[0];
}

/** Words of the attend table's header (cache.ts writes them in this order). */
export const ATTEND_HEADER = ['RS', 'C', 'rowsOff', 'entriesOff', 'pagesOff', 'headChunks', 'ppb'] as const;

/** The routing shader for head dim D, list length K and the query's storage kind. */
export function cacheRouteWgsl(kind: StorageKind, D: number, K: number): string {
  const v4 = D % 4 === 0;
  const NI = v4 ? Math.ceil(D / 16) : Math.ceil(D / 4); // per lane: vec4s (or dims) of one centroid
  const cent = v4
    ? `@group(0) @binding(3) var<storage, read> pm: array<vec4<f32>>;`
    : `@group(0) @binding(3) var<storage, read> pm: array<f32>;`;
  // lane k4's partial of the centroid at element offset `off` (a multiple of 4 when v4), `cnt`: the open block's count
  const partial = v4
    ? `var a = vec4<f32>(0.0);
    for (var i = 0u; i < NI; i++) {
      let v = k4 + 4u * i;
      if (v < NV) {
        var c = pm[off / 4u + v];
        if (!full) { c = c / cnt; }
        a += qv[i] * c;
      }
    }
    return (a.x + a.y) + (a.z + a.w);`
    : `var a = 0.0;
    for (var i = 0u; i < NI; i++) {
      let d = k4 + 4u * i;
      if (d < D) {
        var c = pm[off + d];
        if (!full) { c = c / cnt; }
        a += qv[i] * c;
      }
    }
    return a;`;
  return /* wgsl */ `
${commonWgsl}
const HW: u32 = ${ROUTE_HEADS}u;
const K: u32 = ${K}u;
const D: u32 = ${D}u;
const NV: u32 = ${v4 ? D / 4 : D}u;
const NI: u32 = ${NI}u;
const CAP: u32 = 1024u;

@group(0) @binding(0) var<uniform> P: Params;    // T = Tq, Hq, Hkv, D, blockSize, topk, causal, nItems
@group(0) @binding(1) var<storage, read> tab: array<u32>;
${tensorRead('q', 2, kind)}
${cent}
@group(0) @binding(4) var<storage, read_write> sel: array<i32>;
fn C() -> u32 { return tab[1]; }
fn rowOf(r: u32, f: u32) -> u32 { return tab[tab[2] + 2u * r + f]; }
fn ent(e: u32, f: u32) -> u32 { return tab[tab[3] + 2u * e + f]; }
fn pageOf(e: u32, j: u32) -> u32 { return tab[tab[4] + ent(e, 1u) + j]; }

var<workgroup> sc: array<f32, ${ROUTE_WG * 4}>; // [quad, block of the quad, lane] partials
var<workgroup> fl: array<u32, ${ROUTE_WG}>;     // dense: finite flags of a step, per lane (block order per head)
var<workgroup> mS: array<f32, CAP>;             // tree merge: lists written by one half of a head's lanes
var<workgroup> mI: array<i32, CAP>;
var<private> qv: array<${v4 ? 'vec4<f32>' : 'f32'}, NI>;
var<private> topV: array<f32, K>;
var<private> topI: array<i32, K>;

// (s, j) ranks above (s2, j2): a higher score, or an equal one with a higher block index.
fn better(s: f32, j: i32, s2: f32, j2: i32) -> bool { return s > s2 || (s == s2 && j > j2); }

// (s, j) into the sorted list (best first), the worst entry dropped; constant bounds, no dynamic index left.
fn insert(s: f32, j: i32) {
  for (var x = 0u; x < K - 1u; x++) {
    let i = K - 1u - x;
    let up = better(s, j, topV[i - 1u], topI[i - 1u]);
    let here = better(s, j, topV[i], topI[i]);
    topV[i] = select(select(topV[i], s, here), topV[i - 1u], up);
    topI[i] = select(select(topI[i], j, here), topI[i - 1u], up);
  }
  if (better(s, j, topV[0], topI[0])) { topV[0] = s; topI[0] = j; }
}

fn part(k4: u32, off: u32, full: bool, cnt: f32) -> f32 {
  ${partial}
}

@compute @workgroup_size(${ROUTE_WG})
fn route(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let item = itemOf(wid);
  if (item >= P.nItems) { return; }
  let chunks = tab[5];
  let hc = item % chunks;
  let kvh = (item / chunks) % P.Hkv;
  let r = item / chunks / P.Hkv;
  let G = P.Hq / P.Hkv;
  let heads = min(HW, G - hc * HW);
  let qph = 64u / heads;     // quads per head
  let L = 4u * qph;          // lanes per head
  let x = lid >> 2u;
  let k4 = lid & 3u;
  let hh = min(x / qph, heads - 1u);
  let on = x < heads * qph;  // the idle quads compute nothing
  let qx = x % qph;
  let idx = lid - hh * L;    // this lane within its head
  let h = kvh * G + hc * HW + hh;
  let B = P.blockSize;
  let e = rowOf(r, 0u);
  let t = rowOf(r, 1u);
  let len = ent(e, 0u);
  let cb = t / B;
  let causal = P.causal != 0u;
  let nElig = select((len + B - 1u) / B, cb, causal);
  let kSel = select(P.topk, P.topk - 1u, causal);
  let dense = kSel >= nElig;
  let o = (r * P.Hq + h) * P.topk;
  let qo = (r * P.Hq + h) * D;
  for (var i = 0u; i < NI; i++) {
    ${v4 ? `let d = 4u * (k4 + 4u * i);
    if (d < D) { qv[i] = vec4<f32>(qAt(qo + d), qAt(qo + d + 1u), qAt(qo + d + 2u), qAt(qo + d + 3u)); }`
    : `let d = k4 + 4u * i;
    if (d < D) { qv[i] = qAt(qo + d); }`}
  }
  for (var i = 0u; i < K; i++) { topV[i] = negInf(); topI[i] = -1; }
  var n = 0u; // dense: blocks written so far
  let kvo = kvh * D;
  for (var base = 0u; base < nElig; base += L) {
    for (var b = 0u; b < 4u; b++) {
      let j = base + 4u * qx + b;
      var p = 0.0;
      if (on && j < nElig) {
        let full = (j + 1u) * B <= len; // a completed block: its centroid; the open one (non-causal): sum / count
        let at = pageOf(e, j) * 2u * C() + kvo;
        p = part(k4, select(at, at + C(), full), full, f32(len - j * B));
      }
      sc[4u * (4u * x + b) + k4] = p;
    }
    workgroupBarrier();
    let j = base + 4u * qx + k4; // lane k4 owns the quad's block k4
    let pp = 4u * (4u * x + k4);
    let s = (sc[pp] + sc[pp + 1u]) + (sc[pp + 2u] + sc[pp + 3u]);
    let ok = on && j < nElig && !isNan(s) && s != negInf();
    if (dense) { fl[lid] = select(0u, 1u, ok); } else if (ok && better(s, i32(j), topV[K - 1u], topI[K - 1u])) { insert(s, i32(j)); }
    workgroupBarrier();
    if (dense && kSel > 0u) { // every finite block, in block order: the head's flags before this lane, then the step's
      var before = 0u;
      var all = 0u;
      for (var y = 0u; y < L; y++) {
        let f = fl[hh * L + y];
        all += f;
        if (y < idx) { before += f; }
      }
      if (on && ok) { sel[o + n + before] = i32(j); }
      n += all;
    }
  }
  if (!dense) {
    // tree merge of the head's L lists: the upper part of c lists is inserted into the lower one, in batches that fit
    let wb = max(1u, CAP / (heads * K));
    for (var c = L; c > 1u; c = (c + 1u) / 2u) {
      let half = (c + 1u) / 2u;
      for (var w0 = 0u; w0 < c - half; w0 += wb) {
        let w = idx - half; // a writer: its list's slot in this batch
        if (on && idx >= half && idx < c && w >= w0 && w < w0 + wb) {
          let m = (hh * wb + w - w0) * K;
          for (var i = 0u; i < K; i++) { mS[m + i] = topV[i]; mI[m + i] = topI[i]; }
        }
        workgroupBarrier();
        if (on && idx >= w0 && idx < min(w0 + wb, c - half)) {
          let m = (hh * wb + idx - w0) * K;
          for (var i = 0u; i < K; i++) { // sorted: stop at the first that does not enter
            let js = mI[m + i];
            if (js < 0 || !better(mS[m + i], js, topV[K - 1u], topI[K - 1u])) { break; }
            insert(mS[m + i], js);
          }
        }
        workgroupBarrier();
      }
    }
    if (on && idx == 0u) { for (var i = 0u; i < K; i++) { mI[hh * K + i] = select(-1, topI[i], i < kSel); } }
    workgroupBarrier();
    if (on) {
      for (var i = 0u; i < kSel; i++) { if (mI[hh * K + i] >= 0) { n++; } }
      for (var i = idx; i < kSel; i += L) { // ascending block order: the rank of each selected block
        let j = mI[hh * K + i];
        if (j < 0) { continue; }
        var pos = 0u;
        for (var y = 0u; y < kSel; y++) { let jy = mI[hh * K + y]; if (jy >= 0 && jy < j) { pos++; } }
        sel[o + pos] = j;
      }
    }
  }
  if (!on) { return; }
  if (causal && idx == 0u) { sel[o + n] = i32(cb); } // after every eligible block (all < cb)
  for (var i = select(n, n + 1u, causal) + idx; i < P.topk; i += L) { sel[o + i] = -1; }
}
`;
}
