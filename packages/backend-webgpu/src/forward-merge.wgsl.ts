/**
 * Forward merge: per (t, h) the partials (o, m, l) of its selected blocks (forward.wgsl.ts), combined in slot
 * order — the FA2 / FlashDecoding rescale: m = max, l = Σ l_s 2^(m_s − m), o = Σ o_s 2^(m_s − m) — then
 * out = o / l, lse = m · scale + ln l (m: the raw row max). `main`: one invocation per (t, h, 4 dims) of the pass's heads, writes out;
 * then `stats`: one per (t, h), writes lse (both compute the same m and l). A pass that holds only part of a
 * head's entries (Params) merges, per row, the contiguous run of slots it holds (a row's entries rise with its
 * slots); between such passes the running state is kept in out (o) and run (m, l; read by `main`, then
 * rewritten by `stats`, so no invocation reads what another rewrites). Empty rows get out = 0, lse = −∞;
 * NaN partials give NaN (m: out and lse; o: out).
 */
import { commonWgsl } from './common.wgsl.js';
import { type StorageKind, tensorWrite } from './storage.wgsl.js';

/**
 * `kind`: the storage of out; `acc`: out is an f32 accumulation window of one head instead (accIndex in
 * common.wgsl.ts), for 16-bit outputs of passes that hold part of a head's entries (forward.ts packs it).
 */
export function forwardMergeWgsl(kind: StorageKind, acc = false): string {
  return /* wgsl */ `
${commonWgsl}
override WG: u32 = 64;
override CM: u32 = 64; // rows per chunk (CHUNK_ROWS)

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> indices: array<i32>;      // [T, Hq, topk]
@group(0) @binding(2) var<storage, read> collected: array<u32>;    // CollectedLayout (geometry included)
@group(0) @binding(3) var<storage, read> part: array<vec4<f32>>;   // [passCap + CM, paddedD] o, [passCap + CM, 2] (m, l): per entry of the pass
${tensorWrite('out', 4, acc ? 'f32' : kind, acc ? { remap: 'outAcc' } : {})}// [T, Hq, D]
@group(0) @binding(5) var<storage, read_write> lse: array<f32>;    // [T, Hq]
@group(0) @binding(6) var<storage, read_write> run: array<f32>;    // [T, Hq, 2] running (m, l) between passes

fn outAcc(i: u32) -> u32 { return accIndex(i, P.Hq); }

// Whether entry e (of row (t, h)'s slot choosing local block j; base: the pass's first head's first entry) lies
// in this pass: its chunk starts there.
fn inPass(t: u32, h: u32, j: i32, e: u32, base: u32) -> bool {
  if (P.passWhole != 0u) { return true; }
  let off = collected[h * P.totalBlocks + collected[P.seqsOff + 4u * collected[P.rowSeqOff + t] + 2u] + u32(j)];
  let start = off + (e - off) / CM * CM;
  return start - base - P.passE0 < P.passCap; // wraps when below the range
}

// The pass's x-th row (t, h), h in [hLo, hHi).
fn passRow(x: u32) -> u32 {
  let hg = P.hHi - P.hLo;
  return (x / hg) * P.Hq + P.hLo + x % hg;
}

struct Merged {
  slots: u32,         // the row's slots; 0: no keys
  first: u32,         // this pass's slots: [first, last)
  last: u32,
  m: f32,
  l: f32,
  o: vec4<f32>,       // dims 4·d4 .. + 3 (when asked for)
  badRow: bool,       // NaN in a score: out and lse
  badOut: vec4<bool>, // NaN in v: out only
}

// (m, l) of entry e (partial index) from the vec4 holding it.
fn statsOf(e: u32) -> vec2<f32> {
  let at = (P.passCap + CM) * paddedD() + 2u * e; // a multiple of 2; the stats section starts on a vec4
  let x = part[at / 4u];
  return select(x.xy, x.zw, (at & 2u) != 0u);
}

// The row's state after this pass's slots; o of dims 4·d4 .. + 3 when withO.
fn merge(row: u32, d4: u32, withO: bool) -> Merged {
  let t = row / P.Hq;
  let h = row % P.Hq;
  let base = row * P.topk;
  let e0 = collected[P.hLo * P.totalBlocks] + P.passE0; // entry at partial index 0
  var r = Merged(0u, P.topk, 0u, negInf(), 0.0, vec4<f32>(0.0), false, vec4<bool>(false));
  for (var s = 0u; s < P.topk; s++) {
    let j = indices[base + s];
    if (j < 0) { break; }
    r.slots = s + 1u;
    if (inPass(t, h, j, collected[P.entryOfOff + base + s], e0 - P.passE0)) { r.first = min(r.first, s); r.last = s + 1u; }
  }
  if (r.first >= r.last) { return r; }
  let D = P.D;
  let Dq = paddedD() / 4u;
  if (r.first > 0u) { // the running state of earlier passes
    r.m = run[2u * row];
    r.l = run[2u * row + 1u];
    r.badRow = isNan(r.m);
    if (withO) {
      for (var c = 0u; c < 4u; c++) { if (4u * d4 + c < D) { r.o[c] = outAt(row * D + 4u * d4 + c); } }
      r.badOut = isNan4(r.o);
    }
  }
  for (var s = r.first; s < r.last; s++) {
    let e = collected[P.entryOfOff + base + s] - e0;
    let st = statsOf(e);
    if (isNan(st.x)) { r.badRow = true; continue; }
    var os = vec4<f32>(0.0);
    if (withO) { os = part[e * Dq + d4]; r.badOut = r.badOut | isNan4(os); }
    let mNew = max(r.m, st.x);
    if (mNew == negInf()) { continue; }
    let a = select(exp2((r.m - mNew) * P.scale * LOG2E), 0.0, r.m == negInf()); // m raw: scaled after the difference
    let b = select(exp2((st.x - mNew) * P.scale * LOG2E), 0.0, st.x == negInf());
    r.l = r.l * a + st.y * b;
    r.o = select(r.o * a + os * b, vec4<f32>(0.0), r.badOut);
    r.m = mNew;
  }
  return r;
}

// One invocation per (row, 4 dims) of the pass's heads.
@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let Dq = paddedD() / 4u;
  let y = itemOf(wid) * WG + lid;
  if (y >= P.T * (P.hHi - P.hLo) * Dq) { return; }
  let row = passRow(y / Dq);
  let d4 = y % Dq;
  let r = merge(row, d4, true);
  var o = vec4<f32>(0.0); // no keys: 0 (every pass of the head writes the same)
  if (r.slots > 0u) {
    if (r.first >= r.last) { return; }
    if (r.last < r.slots) { o = select(r.o, vec4<f32>(nanF()), r.badOut); } // more in later passes
    else { // l == 0 only when every key was masked: out = 0
      o = select(select(r.o / r.l, vec4<f32>(0.0), r.l == 0.0), vec4<f32>(nanF()), vec4<bool>(r.badRow) | r.badOut);
    }
  }
  storeOut4(row * P.D + 4u * d4, P.D - 4u * d4, o);
}

// Stores the first min(4, n) values of o from element i on: whole words (pairs from an even index) at once.
fn storeOut4(i: u32, n: u32, o: vec4<f32>) {
  for (var c = 0u; c < 4u; c += 2u) {
    if (c + 1u < n && ((i + c) & 1u) == 0u) { outPut2(i + c, o[c], o[c + 1u]); continue; }
    if (c < n) { outPut(i + c, o[c]); }
    if (c + 1u < n) { outPut(i + c + 1u, o[c + 1u]); }
  }
}

@compute @workgroup_size(WG)
fn stats(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let y = itemOf(wid) * WG + lid;
  if (y >= P.T * (P.hHi - P.hLo)) { return; }
  let row = passRow(y);
  let r = merge(row, 0u, false);
  if (r.slots == 0u) { lse[row] = negInf(); return; }
  if (r.first >= r.last) { return; }
  if (r.last < r.slots) {
    run[2u * row] = select(r.m, nanF(), r.badRow);
    run[2u * row + 1u] = r.l;
    return;
  }
  lse[row] = select(select(r.m * P.scale + log2(r.l) * LN2, negInf(), r.l == 0.0), nanF(), r.badRow);
}
`;
}
