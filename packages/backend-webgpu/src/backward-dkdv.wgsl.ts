/**
 * Backward per key tile (FlashMoBA's compute_moba_dq_dk_dv_1colblock, without atomics): a workgroup owns 64
 * keys of one block and one kv head (sub-tile `sub` of block g) and walks, for every query head of the group,
 * the block's collected rows M = 16·RW at a time (the entries of this pass only). Per step:
 *   1. S = Q Kᵀ, dP = dO Vᵀ, DK head dims per round, in two staging buffers that alternate;
 *   2. P = exp2((S·scale − lse)·log2e), dS = P ⊙ (dP − Δ) into workgroup memory;
 *   3. per round RC rows of dO, Q and VK keys of K: dV += Pᵀ dO, dK += dSᵀ Q (registers, whole walk) and the
 *      step's dQ partial dS K over the 64 keys, stored per (entry, sub), summed per row by dq-merge.wgsl.ts.
 * Each round's global loads are issued before the previous round's arithmetic (backward-dkdv-stage.wgsl.ts).
 * 256 invocations (tx × ty = 16 × 16, a 32-wide subgroup spans 8 × 4). Register tiles: S/dP RW rows × 4 keys,
 * dK/dV 4 keys × 4·OC4 dims, dQ RW rows × 4·OC4 dims. One owner per (kv head, key): no atomics; dK/dV are added
 * to dk and dv at the end. NaN: staged operands are replaced by 0; flags mark the outputs the reference makes NaN.
 */
import { type DkdvShape, dkdvSm4 } from './backward-dkdv-shape.js';
import { dkdvStageWgsl } from './backward-dkdv-stage.wgsl.js';
import { commonWgsl, rowShiftWgsl } from './common.wgsl.js';
import { type StorageKind, tensorRead, tensorWrite } from './storage.wgsl.js';

/** The body of myRows() for each `rw` (picks the invocation's rows out of a vec4 without dynamic indexing). */
const MY_ROWS: Record<number, string> = {
  1: '  let h = select(v.xy, v.zw, (ty & 2u) != 0u);\n  return array<f32, 1>(select(h.x, h.y, (ty & 1u) != 0u));',
  2: '  let h = select(v.xy, v.zw, (ty & 1u) != 0u);\n  return array<f32, 2>(h.x, h.y);',
  4: '  return array<f32, 4>(v.x, v.y, v.z, v.w);',
};

export function backwardDkdvWgsl(s: DkdvShape, kind: StorageKind, acc = false): string {
  const out = acc ? 'f32' : kind;
  const remap = acc ? { remap: 'kvAcc' } : {};
  const m = 16 * s.rw;
  const n1 = 2 * s.dk * (m / 4) + 2 * s.dk * 16;
  const n2 = (2 * s.rc + s.vk) * 16 * s.oc4;
  return /* wgsl */ `
${commonWgsl}
const OC4: u32 = ${s.oc4}u;
const D4: u32 = 16u * OC4;  // vec4s of a row of the tiles (head dim Dc = 64·OC4)
const RW: u32 = ${s.rw}u;
const M: u32 = 16u * RW;    // rows per step
const KT: u32 = 64u;        // keys per workgroup
const CM: u32 = 64u;        // rows per chunk of the collected lists (CHUNK_ROWS)
const DK: u32 = ${s.dk}u;   // head dims per S/dP round
const RC: u32 = ${s.rc}u;   // rows per dK/dV round
const VK: u32 = ${s.vk}u;   // keys per dQ round
const QS: u32 = M / 4u + 1u;  // vec4 stride of one staged dim of Qᵀ, dOᵀ (+1: the transposed stores hit distinct banks)
const KS: u32 = KT / 4u + 1u; // likewise for Kᵀ, Vᵀ
const B1: u32 = 2u * DK * (QS + KS); // one S/dP staging buffer: Qᵀ, dOᵀ [DK][QS], Kᵀ, Vᵀ [DK][KS]
const N1: u32 = ${n1}u;     // vec4s loaded per S/dP round (Qᵀ, dOᵀ, Kᵀ, Vᵀ in that order)
const PF1: u32 = ${Math.ceil(n1 / 256)}u;
const DS: u32 = M * 16u;    // sm: P [M][16] from 0, dS [M][17] from DS (padded: dQ reads a column), stage from S2
const S2: u32 = DS + M * 17u; // step 3's stage: dO, Q rows [RC][D4] each, then K keys [VK][D4]
const N2: u32 = ${n2}u;     // vec4s loaded per step-3 round
const PF2: u32 = ${Math.ceil(n2 / 256)}u;

@group(0) @binding(0) var<uniform> P: Params;                    // nItems = totalBlocks · sub-tiles per block
${tensorRead('q', 1, kind)}// [Tq, Hq, D]
${tensorRead('k', 2, kind)}// [Tk, Hkv, D]
${tensorRead('v', 3, kind)}// [Tk, Hkv, D]
${tensorRead('dOut', 4, kind)}// [Tq, Hq, D]
@group(0) @binding(5) var<storage, read> collected: array<u32>;  // CollectedLayout (geometry included)
${tensorWrite('dk', 6, out, remap)}// [Tk, Hkv, D]
${tensorWrite('dv', 7, out, remap)}// [Tk, Hkv, D]
fn kvAcc(i: u32) -> u32 { return accIndex(i, P.Hkv); }
@group(0) @binding(8) var<storage, read_write> work: array<vec4<f32>>; // [T, Hq, 2] (lse, Δ), then dq partials [passCap + CM, subs, paddedD] per entry of the pass

var<workgroup> sm: array<vec4<f32>, ${dkdvSm4(s)}>;
var<workgroup> rowIds: array<u32, M>;
var<workgroup> rowAt: array<u32, M>;            // (row · Hq + h) · D: the row's first element in q and dOut
var<workgroup> rowLse: array<f32, M>;
var<workgroup> rowDelta: array<f32, M>;
var<workgroup> rowIn: array<atomic<u32>, M>;    // bit 0: NaN in q; bit 1: NaN in dO (this step's rows)
var<workgroup> rowOut: array<atomic<u32>, M>;   // 1: the row's dq partial is NaN
var<workgroup> keyIn: array<atomic<u32>, KT>;   // bit 0: NaN in k; bit 1: NaN in v
var<workgroup> keyOut: array<atomic<u32>, KT>;  // bit 0: dv NaN; bit 1: dk NaN
var<workgroup> listInfo: vec2<u32>;
var<workgroup> passBase: u32;

struct Tile { h: u32, hk: u32, c0: u32, c1: u32, sub: u32, subs: u32, e0: u32, shift: u32 } // e0: entry at partial index 0; shift: rowShift
alias Acc = array<vec4<f32>, 4u * OC4>;  // keys tx·4 + j, dims (jv·16 + ty)·4 .. + 3 at [j · OC4 + jv]
alias Rows = array<vec4<f32>, RW>;       // rows ty·RW + i, keys tx·4 .. + 3
alias Dq = array<vec4<f32>, RW * OC4>;   // rows ty + 16·i, dims (jv·16 + tx)·4 .. + 3 at [i · OC4 + jv]

fn tileX(lid: u32) -> u32 { return (lid & 7u) | ((lid >> 2u) & 8u); }
fn tileY(lid: u32) -> u32 { return ((lid >> 3u) & 3u) | ((lid >> 4u) & 12u); }

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let subs = (P.blockSize + KT - 1u) / KT;
  let item = itemOf(wid);
  if (item >= P.nItems) { return; }
  let g = item / subs;
  let sub = item % subs;
  let group = P.Hq / P.Hkv;
  let hk = P.hLo / group + wid.z; // kv heads of the pass's query heads
  if (lid == 0u) { passBase = collected[P.hLo * P.totalBlocks] + P.passE0; }
  let e0 = workgroupUniformLoad(&passBase); // loop bounds below depend on it: keep them uniform
  let b0 = collected[P.blocksOff + 4u * g];
  let b1 = b0 + collected[P.blocksOff + 4u * g + 1u];
  let c0 = b0 + sub * KT;
  if (c0 >= b1) { return; }
  let c1 = min(b1, c0 + KT);
  let tx = tileX(lid);
  let ty = tileY(lid);
  if (lid < KT) { atomicStore(&keyOut[lid], 0u); }
  var accK: Acc; // dK
  var accV: Acc; // dV
  for (var h = max(hk * group, P.hLo); h < min((hk + 1u) * group, P.hHi); h++) {
    let l = h * P.totalBlocks + g;
    workgroupBarrier();
    if (lid == 0u) { listInfo = vec2<u32>(collected[l], collected[l + 1u]); }
    let list = workgroupUniformLoad(&listInfo);
    for (var cs = list.x; cs < list.y; cs += CM) {
      if (cs - e0 >= P.passCap) { continue; } // a chunk of another pass
      for (var r0 = cs; r0 < min(cs + CM, list.y); r0 += M) {
        step(Tile(h, hk, c0, c1, sub, subs, e0, rowShift(g)), r0, min(M, list.y - r0), &accK, &accV, lid);
      }
    }
  }
  // -- dK = scale · Σ dSᵀ Q, dV = Σ Pᵀ dO, added to the earlier passes' sums --
  workgroupBarrier();
  for (var j = 0u; j < 4u; j++) {
    let c = tx * 4u + j;
    if (c0 + c >= c1) { continue; }
    let bad = atomicLoad(&keyOut[c]);
    for (var jv = 0u; jv < OC4; jv++) {
      for (var x = 0u; x < 4u; x++) {
        let d = (jv * 16u + ty) * 4u + x;
        if (d >= P.D) { continue; }
        let i = ((c0 + c) * P.Hkv + hk) * P.D + d;
        addDk(i, P.scale * accK[j * OC4 + jv][x], (bad & 2u) != 0u);
        addDv(i, accV[j * OC4 + jv][x], (bad & 1u) != 0u);
      }
    }
  }
}

// One step: rows of entries [r0, r0 + nr) of head t.h against keys [t.c0, t.c1).
fn step(t: Tile, r0: u32, nr: u32, accK: ptr<function, Acc>, accV: ptr<function, Acc>, lid: u32) {
  let tx = tileX(lid);
  let ty = tileY(lid);
  workgroupBarrier(); // the previous step is done with every workgroup array
  if (lid < M) {
    let row = collected[P.rowsOff + r0 + min(lid, nr - 1u)];
    let at = 2u * (row * P.Hq + t.h);
    rowIds[lid] = row;
    rowAt[lid] = (row * P.Hq + t.h) * P.D;
    rowLse[lid] = work[at / 4u][at % 4u];
    rowDelta[lid] = work[at / 4u][at % 4u + 1u];
    atomicStore(&rowIn[lid], 0u);
    atomicStore(&rowOut[lid], 0u);
  }
  if (lid < KT) { atomicStore(&keyIn[lid], 0u); }
  workgroupBarrier();
  // causally, a step whose rows all precede the keys contributes nothing (rows ascend): zero dQ partials
  if (P.causal != 0u && workgroupUniformLoad(&rowIds[M - 1u]) + t.shift < t.c0) {
    storeDq(t, r0, nr, Dq(), lid);
    return;
  }
  // -- 1. S = Q Kᵀ and dP = dO Vᵀ: round i computes from one buffer while round i + 1's loads are in flight --
  var s: Rows;
  var dp: Rows;
  var pre1: array<vec4<f32>, PF1>;
  let n1 = (P.D + DK - 1u) / DK;
  load1(t, nr, 0u, &pre1, lid);
  store1(0u, &pre1, lid);
  workgroupBarrier();
  for (var i = 0u; i < n1; i++) {
    if (i + 1u < n1) { load1(t, nr, (i + 1u) * DK, &pre1, lid); }
    if (ty * RW < nr && t.c0 + tx * 4u < t.c1) { scores(&s, &dp, (i % 2u) * B1, ty, tx); }
    if (i + 1u < n1) { store1(((i + 1u) % 2u) * B1, &pre1, lid); }
    workgroupBarrier();
  }
  // -- 2. P and dS (step 3's first loads in flight meanwhile) --
  var pre2: array<vec4<f32>, PF2>;
  load2(t, nr, 0u, &pre2, lid);
  probabilities(t, nr, s, dp, tx, ty);
  store2(&pre2, lid);
  // -- 3. dV += Pᵀ dO, dK += dSᵀ Q (RC rows per round) and the dQ partial dS K (VK keys per round) --
  var dq: Dq;
  let nk = t.c1 - t.c0;
  let n2 = max((nr + RC - 1u) / RC, (nk + VK - 1u) / VK);
  for (var j = 0u; j < n2; j++) {
    workgroupBarrier();
    if (j + 1u < n2) { load2(t, nr, j + 1u, &pre2, lid); }
    let a = j * RC;
    if (a < nr && t.c0 + tx * 4u < t.c1) { // a full round of RC rows gets a constant trip count
      if (nr - a >= RC) {
        for (var rr = 0u; rr < RC; rr++) { accumulateRow(accK, accV, a + rr, rr, tx, ty); }
      } else {
        for (var rr = 0u; rr < nr - a; rr++) { accumulateRow(accK, accV, a + rr, rr, tx, ty); }
      }
    }
    if (j * VK < nk) { // keys past the tile have dS = 0 and K staged as 0
      for (var c4 = 0u; c4 < VK / 4u; c4++) { dqKeys(&dq, j * VK / 4u + c4, c4, tx, ty); }
    }
    workgroupBarrier();
    if (j + 1u < n2) { store2(&pre2, lid); }
  }
  storeDq(t, r0, nr, dq, lid);
}

// The RW values of rows ty·RW .. + RW − 1 from the vec4 holding them (4 rows of one dim).
fn myRows(v: vec4<f32>, ty: u32) -> array<f32, RW> {
${MY_ROWS[s.rw]}
}

// s += Q Kᵀ, dp += dO Vᵀ over the DK dims staged at \`base\`.
fn scores(s: ptr<function, Rows>, dp: ptr<function, Rows>, base: u32, ty: u32, tx: u32) {
  for (var dd = 0u; dd < DK; dd++) {
    let a = myRows(sm[base + dd * QS + ty * RW / 4u], ty);
    let ad = myRows(sm[base + (DK + dd) * QS + ty * RW / 4u], ty);
    let kb = sm[base + 2u * DK * QS + dd * KS + tx];
    let vb = sm[base + 2u * DK * QS + (DK + dd) * KS + tx];
    for (var i = 0u; i < RW; i++) {
      (*s)[i] = fma(vec4<f32>(a[i]), kb, (*s)[i]);
      (*dp)[i] = fma(vec4<f32>(ad[i]), vb, (*dp)[i]);
    }
  }
}

// P and dS into sm (0 where masked or poisoned; the flags say which outputs turn NaN).
fn probabilities(t: Tile, nr: u32, s: Rows, dp: Rows, tx: u32, ty: u32) {
  var kIn: array<u32, 4>;
  for (var j = 0u; j < 4u; j++) { kIn[j] = atomicLoad(&keyIn[tx * 4u + j]); }
  for (var i = 0u; i < RW; i++) {
    let r = ty * RW + i;
    let rIn = atomicLoad(&rowIn[r]);
    let lse = rowLse[r];
    let delta = rowDelta[r];
    var pv = vec4<f32>(0.0);
    var dsv = vec4<f32>(0.0);
    for (var j = 0u; j < 4u; j++) {
      let c = tx * 4u + j;
      let pos = t.c0 + c;
      if (r >= nr || pos >= t.c1 || (P.causal != 0u && pos > rowIds[r] + t.shift)) { continue; }
      let pBad = (rIn & 1u) != 0u || (kIn[j] & 1u) != 0u || notFinite(s[i][j]) || isNan(lse);
      let dsBad = pBad || (rIn & 2u) != 0u || (kIn[j] & 2u) != 0u || notFinite(dp[i][j]) || notFinite(delta);
      let dvBad = pBad || (rIn & 2u) != 0u;     // P NaN, or dO NaN
      let dkBad = dsBad || (rIn & 1u) != 0u;    // dS NaN, or q NaN
      if (dvBad || dkBad) { atomicOr(&keyOut[c], select(0u, 1u, dvBad) | select(0u, 2u, dkBad)); }
      if (dsBad || (kIn[j] & 1u) != 0u) { atomicOr(&rowOut[r], 1u); }
      if (pBad) { continue; }
      let p = exp2((s[i][j] * P.scale - lse) * LOG2E); // not s · scale·log2e: inf for a scale near the f32 maximum
      pv[j] = p; // dV += P dO even where dS is poisoned (a non-finite v or Δ): dv stays finite unless dvBad
      if (!dsBad) { dsv[j] = p * (dp[i][j] - delta); }
    }
    sm[r * 16u + tx] = pv;
    sm[DS + r * 17u + tx] = dsv;
  }
}

// dV += P[r]ᵀ dO[r], dK += dS[r]ᵀ Q[r] for step row r (staged as rr).
fn accumulateRow(accK: ptr<function, Acc>, accV: ptr<function, Acc>, r: u32, rr: u32, tx: u32, ty: u32) {
  let pv = sm[r * 16u + tx];
  let dsv = sm[DS + r * 17u + tx];
  for (var jv = 0u; jv < OC4; jv++) {
    let ov = sm[S2 + rr * D4 + jv * 16u + ty];
    let qv = sm[S2 + (RC + rr) * D4 + jv * 16u + ty];
    for (var j = 0u; j < 4u; j++) {
      (*accV)[j * OC4 + jv] = fma(vec4<f32>(pv[j]), ov, (*accV)[j * OC4 + jv]);
      (*accK)[j * OC4 + jv] = fma(vec4<f32>(dsv[j]), qv, (*accK)[j * OC4 + jv]);
    }
  }
}

// dq += dS[rows][keys 4·g .. + 3] K[those keys] (staged as keys 4·c4 .. + 3).
fn dqKeys(dq: ptr<function, Dq>, g: u32, c4: u32, tx: u32, ty: u32) {
  for (var i = 0u; i < RW; i++) {
    let ds = sm[DS + (ty + 16u * i) * 17u + g];
    for (var jv = 0u; jv < OC4; jv++) {
      let at = S2 + 2u * RC * D4 + 4u * c4 * D4 + jv * 16u + tx;
      var a = (*dq)[i * OC4 + jv];
      a = fma(vec4<f32>(ds.x), sm[at], a);
      a = fma(vec4<f32>(ds.y), sm[at + D4], a);
      a = fma(vec4<f32>(ds.z), sm[at + 2u * D4], a);
      a = fma(vec4<f32>(ds.w), sm[at + 3u * D4], a);
      (*dq)[i * OC4 + jv] = a;
    }
  }
}

// Stores the dQ partials of the step's rows at (partial index of the entry, sub); NaN where rowOut says so.
fn storeDq(t: Tile, r0: u32, nr: u32, dq: Dq, lid: u32) {
  let tx = tileX(lid);
  let ty = tileY(lid);
  let dqOff4 = dqPartialsOffset() / 4u;
  let Dp4 = paddedD() / 4u;
  for (var i = 0u; i < RW; i++) {
    let r = ty + 16u * i;
    if (r >= nr) { continue; }
    let bad = atomicLoad(&rowOut[r]) != 0u;
    let e = dqOff4 + ((r0 + r - t.e0) * t.subs + t.sub) * Dp4;
    for (var jv = 0u; jv < OC4; jv++) {
      let d4 = jv * 16u + tx;
      let pad = vec4<u32>(4u * d4) + vec4<u32>(0u, 1u, 2u, 3u) >= vec4<u32>(P.D);
      if (d4 < Dp4) { work[e + d4] = select(select(dq[i * OC4 + jv], vec4<f32>(nanF()), bad), vec4<f32>(0.0), pad); }
    }
  }
}

${dkdvStageWgsl}${rowShiftWgsl}`;
}
