/**
 * Backward per key tile (FlashMoBA's compute_moba_dq_dk_dv_1colblock, without atomics): a workgroup owns 64
 * keys of one block and one kv head (sub-tile `sub` of block g) and walks, for every query head of the group,
 * the block's collected rows 16·RW at a time (the entries of this pass only). Per step: S = Q Kᵀ and
 * dP = dO Vᵀ (head dim staged DK at a time), P = exp2(S·scale·log2e − lse·log2e), dS = P ⊙ (dP − Δ) into
 * workgroup memory, then dV += Pᵀ dO and dK += dSᵀ Q (rows staged RC at a time; kept in registers for the
 * whole walk) and the step's dQ share dS K over these 64 keys (K staged VK keys at a time), stored as the
 * partial of (entry, sub) and summed per row in slot order by backward-dq.wgsl.ts. 256 invocations:
 * 16 × 16; for S/dP an invocation holds RW rows × 4 keys, for dK/dV 4 keys × 4·OC4 dims, for dQ RW rows ×
 * 4·OC4 dims. One owner per (kv head, key): dK/dV need no atomics; they are added to dk and dv at the end
 * (a pass adds to the earlier passes' sums). NaN: staged operands are tested and replaced by 0; flags mark the
 * dk, dv and dq that the reference would make NaN (SPEC §7), the other values never see it.
 */
import { commonWgsl } from './common.wgsl.js';
import { type StorageKind, tensorRead, tensorWrite } from './storage.wgsl.js';

/** The body of myRows() for each `rw` (picks the invocation's rows out of a vec4 without dynamic indexing). */
const MY_ROWS: Record<number, string> = {
  1: '  let h = select(v.xy, v.zw, (ty & 2u) != 0u);\n  return array<f32, 1>(select(h.x, h.y, (ty & 1u) != 0u));',
  2: '  let h = select(v.xy, v.zw, (ty & 1u) != 0u);\n  return array<f32, 2>(h.x, h.y);',
  4: '  return array<f32, 4>(v.x, v.y, v.z, v.w);',
};

/**
 * `oc4`: vec4 dims per invocation (Dc / 64); `rw`: rows per invocation (M = 16·rw rows per step); `kind`: the
 * storage of q, k, v, dOut, dk, dv (storage.wgsl.ts); `acc`: dk and dv are an f32 accumulation window instead
 * (accIndex in common.wgsl.ts; a 16-bit run in several passes).
 */
export function backwardDkdvV1Wgsl(oc4: number, rw: number, kind: StorageKind, acc = false): string {
  const out = acc ? 'f32' : kind;
  const remap = acc ? { remap: 'kvAcc' } : {};
  return /* wgsl */ `
${commonWgsl}
const OC4: u32 = ${oc4}u;
const DC: u32 = 64u * OC4;  // head dim of the tiles
const RW: u32 = ${rw}u;     // rows per invocation in S/dP and dQ
const M: u32 = 16u * RW;    // rows per step
const KT: u32 = 64u;        // keys per workgroup
const CM: u32 = 64u;        // rows per chunk of the collected lists (CHUNK_ROWS)
override DK: u32 = 8u;      // head dims per S/dP staging step
override RC: u32 = 8u;      // rows per dK/dV staging step
override VK: u32 = 16u;     // keys per dQ staging step (a multiple of 4)
override STAGE4: u32 = 512u; // vec4s of the staging buffer: DK·(2M + 2KT) / 4 ≥ 2·RC·DC / 4, VK·DC / 4

@group(0) @binding(0) var<uniform> P: Params;                    // nItems = totalBlocks · sub-tiles per block
${tensorRead('q', 1, kind)}// [T, Hq, D]
${tensorRead('k', 2, kind)}// [T, Hkv, D]
${tensorRead('v', 3, kind)}// [T, Hkv, D]
${tensorRead('dOut', 4, kind)}// [T, Hq, D]
@group(0) @binding(5) var<storage, read> collected: array<u32>;  // CollectedLayout (geometry included)
${tensorWrite('dk', 6, out, remap)}// [T, Hkv, D]
${tensorWrite('dv', 7, out, remap)}// [T, Hkv, D]
fn kvAcc(i: u32) -> u32 { return accIndex(i, P.Hkv); }
@group(0) @binding(8) var<storage, read_write> work: array<f32>; // [T, Hq, 2] (lse, Δ), then dq shares [passCap + CM, subs, paddedD] per entry of the pass

var<workgroup> stage: array<vec4<f32>, STAGE4>;
var<workgroup> ps: array<vec4<f32>, M * 16u>;   // P [M][KT/4], vec4 over keys
var<workgroup> dss: array<vec4<f32>, M * 16u>;  // dS [M][KT/4]
var<workgroup> rowIds: array<u32, M>;
var<workgroup> rowLse: array<f32, M>;
var<workgroup> rowDelta: array<f32, M>;
var<workgroup> rowIn: array<atomic<u32>, M>;    // bit 0: NaN in q; bit 1: NaN in dO (this step's rows)
var<workgroup> rowOut: array<atomic<u32>, M>;   // 1: the row's dq partial is NaN
var<workgroup> keyIn: array<atomic<u32>, KT>;   // bit 0: NaN in k; bit 1: NaN in v
var<workgroup> keyOut: array<atomic<u32>, KT>;  // bit 0: dv NaN; bit 1: dk NaN
var<workgroup> listInfo: vec2<u32>;
var<workgroup> passBase: u32;

struct Tile { h: u32, hk: u32, c0: u32, c1: u32, sub: u32, subs: u32, e0: u32 } // e0: entry at partial index 0

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
  let tx = lid % 16u;
  let ty = lid / 16u;
  if (lid < KT) { atomicStore(&keyOut[lid], 0u); }

  var accK: array<vec4<f32>, 4u * OC4>; // dK: keys tx·4 + j, dims (jv·16 + ty)·4 .. + 3
  var accV: array<vec4<f32>, 4u * OC4>; // dV
  for (var h = max(hk * group, P.hLo); h < min((hk + 1u) * group, P.hHi); h++) {
    let l = h * P.totalBlocks + g;
    workgroupBarrier();
    if (lid == 0u) { listInfo = vec2<u32>(collected[l], collected[l + 1u]); }
    let list = workgroupUniformLoad(&listInfo);
    for (var cs = list.x; cs < list.y; cs += CM) {
      if (cs - e0 >= P.passCap) { continue; } // a chunk of another pass
      for (var r0 = cs; r0 < min(cs + CM, list.y); r0 += M) {
        let t = Tile(h, hk, c0, c1, sub, subs, e0);
        step(t, r0, min(M, list.y - r0), &accK, &accV, lid);
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
        let oldK = dkAt(i);
        let oldV = dvAt(i);
        dkPut(i, select(oldK + P.scale * accK[j * OC4 + jv][x], nanF(), (bad & 2u) != 0u || isNan(oldK)));
        dvPut(i, select(oldV + accV[j * OC4 + jv][x], nanF(), (bad & 1u) != 0u || isNan(oldV)));
      }
    }
  }
}

// The RW values of rows ty·RW .. + RW − 1 from the vec4 holding them (4 rows of one dim).
fn myRows(v: vec4<f32>, ty: u32) -> array<f32, RW> {
${MY_ROWS[rw]}
}

// One step: rows of entries [r0, r0 + nr) of head t.h against keys [t.c0, t.c1).
fn step(t: Tile, r0: u32, nr: u32, accK: ptr<function, array<vec4<f32>, 4u * OC4>>, accV: ptr<function, array<vec4<f32>, 4u * OC4>>, lid: u32) {
  let tx = lid % 16u;
  let ty = lid / 16u;
  let causal = P.causal != 0u;
  workgroupBarrier(); // the previous step is done with every workgroup array
  if (lid < M) {
    let row = collected[P.rowsOff + r0 + min(lid, nr - 1u)];
    rowIds[lid] = row;
    rowLse[lid] = work[2u * (row * P.Hq + t.h)];
    rowDelta[lid] = work[2u * (row * P.Hq + t.h) + 1u];
    atomicStore(&rowIn[lid], 0u);
    atomicStore(&rowOut[lid], 0u);
  }
  if (lid < KT) { atomicStore(&keyIn[lid], 0u); }
  workgroupBarrier();
  // causally, a step whose rows all precede the keys contributes nothing (rows ascend): zero dQ shares
  if (causal && workgroupUniformLoad(&rowIds[M - 1u]) < t.c0) {
    storeDq(t, r0, nr, array<vec4<f32>, RW * OC4>(), lid);
    return;
  }
  // -- S = Q Kᵀ and dP = dO Vᵀ: rows ty·RW + i, keys tx·4 + j --
  var s: array<vec4<f32>, RW>;
  var dp: array<vec4<f32>, RW>;
  let kOff = 2u * DK * (M / 4u);
  let vOff = kOff + DK * (KT / 4u);
  for (var d0 = 0u; d0 < DC; d0 += DK) {
    workgroupBarrier();
    stageRowsT(t.h, nr, d0, lid);
    stageKeysT(t.hk, t.c0, t.c1, d0, kOff, vOff, lid);
    workgroupBarrier();
    // invocations whose rows or keys are all out of range skip the arithmetic (constant trip count inside)
    if (ty * RW < nr && t.c0 + tx * 4u < t.c1) {
      for (var dd = 0u; dd < DK; dd++) {
        let kb = stage[kOff + dd * (KT / 4u) + tx];
        let vb = stage[vOff + dd * (KT / 4u) + tx];
        let a = myRows(stage[dd * (M / 4u) + ty * RW / 4u], ty);
        let ad = myRows(stage[DK * (M / 4u) + dd * (M / 4u) + ty * RW / 4u], ty);
        for (var i = 0u; i < RW; i++) {
          s[i] = fma(vec4<f32>(a[i]), kb, s[i]);
          dp[i] = fma(vec4<f32>(ad[i]), vb, dp[i]);
        }
      }
    }
  }
  // -- P and dS (0 where masked or poisoned; the flags say which outputs turn NaN) --
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
      if (r >= nr || pos >= t.c1 || (causal && pos > rowIds[r])) { continue; }
      let pBad = (rIn & 1u) != 0u || (kIn[j] & 1u) != 0u || isNan(s[i][j]) || isNan(lse);
      let dsBad = pBad || (rIn & 2u) != 0u || (kIn[j] & 2u) != 0u || isNan(dp[i][j]) || isNan(delta);
      let dvBad = pBad || (rIn & 2u) != 0u;     // P NaN, or dO NaN
      let dkBad = dsBad || (rIn & 1u) != 0u;    // dS NaN, or q NaN
      if (dvBad || dkBad) { atomicOr(&keyOut[c], select(0u, 1u, dvBad) | select(0u, 2u, dkBad)); }
      if (dsBad || (kIn[j] & 1u) != 0u) { atomicOr(&rowOut[r], 1u); }
      if (dsBad) { continue; }
      let p = exp2(s[i][j] * P.scaleLog2 - lse * LOG2E);
      pv[j] = p;
      dsv[j] = p * (dp[i][j] - delta);
    }
    ps[r * 16u + tx] = pv;
    dss[r * 16u + tx] = dsv;
  }
  // -- dV += Pᵀ dO, dK += dSᵀ Q over the step's rows, RC rows staged at a time --
  for (var a = 0u; a < nr; a += RC) {
    workgroupBarrier();
    stageRows(t.h, nr, a, lid);
    workgroupBarrier();
    if (t.c0 + tx * 4u < t.c1) { // a full run of RC rows gets a constant trip count
      if (nr - a >= RC) {
        for (var rr = 0u; rr < RC; rr++) { accumulateRow(accK, accV, a, rr, tx, ty); }
      } else {
        for (var rr = 0u; rr < nr - a; rr++) { accumulateRow(accK, accV, a, rr, tx, ty); }
      }
    }
  }
  dqPartial(t, r0, nr, lid);
}

// dV += P[row]ᵀ dO[row], dK += dS[row]ᵀ Q[row] for step row a + rr (staged as rr).
fn accumulateRow(accK: ptr<function, array<vec4<f32>, 4u * OC4>>, accV: ptr<function, array<vec4<f32>, 4u * OC4>>, a: u32, rr: u32, tx: u32, ty: u32) {
  let pv = ps[(a + rr) * 16u + tx];
  let dsv = dss[(a + rr) * 16u + tx];
  for (var jv = 0u; jv < OC4; jv++) {
    let ov = stage[rr * (DC / 4u) + jv * 16u + ty];
    let qv = stage[RC * (DC / 4u) + rr * (DC / 4u) + jv * 16u + ty];
    for (var j = 0u; j < 4u; j++) {
      (*accV)[j * OC4 + jv] = fma(vec4<f32>(pv[j]), ov, (*accV)[j * OC4 + jv]);
      (*accK)[j * OC4 + jv] = fma(vec4<f32>(dsv[j]), qv, (*accK)[j * OC4 + jv]);
    }
  }
}

// Q and dO of the step's rows, dims [d0, d0 + DK), transposed: [DK][M] each, vec4 over rows. Sets rowIn.
// Row groups past the step's rows are never read, so not staged (likewise for keys and below).
fn stageRowsT(h: u32, nr: u32, d0: u32, lid: u32) {
  let n = DK * ((nr + 3u) / 4u);
  for (var e = lid; e < 2u * n; e += 256u) {
    let which = e / n; // 0: q, 1: dO
    let f = e % n;
    let d = d0 + f % DK;
    var x = vec4<f32>(0.0);
    for (var i = 0u; i < 4u; i++) {
      let r = (f / DK) * 4u + i;
      if (r < nr && d < P.D) {
        let at = (rowIds[r] * P.Hq + h) * P.D + d;
        if (which == 0u) { x[i] = qAt(at); } else { x[i] = dOutAt(at); } // (select() would load both)
      }
      if (isNan(x[i])) { atomicOr(&rowIn[r], 1u << which); x[i] = 0.0; }
    }
    stage[which * DK * (M / 4u) + (f % DK) * (M / 4u) + f / DK] = x;
  }
}

// K and V of the keys, dims [d0, d0 + DK), transposed: [DK][KT] each, vec4 over keys. Sets keyIn.
fn stageKeysT(hk: u32, c0: u32, c1: u32, d0: u32, kOff: u32, vOff: u32, lid: u32) {
  let n = DK * ((c1 - c0 + 3u) / 4u);
  for (var e = lid; e < 2u * n; e += 256u) {
    let which = e / n; // 0: k, 1: v
    let f = e % n;
    let d = d0 + f % DK;
    var x = vec4<f32>(0.0);
    for (var i = 0u; i < 4u; i++) {
      let c = (f / DK) * 4u + i;
      if (c0 + c < c1 && d < P.D) {
        let at = ((c0 + c) * P.Hkv + hk) * P.D + d;
        if (which == 0u) { x[i] = kAt(at); } else { x[i] = vAt(at); }
      }
      if (isNan(x[i])) { atomicOr(&keyIn[c], 1u << which); x[i] = 0.0; }
    }
    stage[select(kOff, vOff, which == 1u) + (f % DK) * (KT / 4u) + f / DK] = x;
  }
}

// dO and Q rows [a, a + RC) of the step, whole rows: [RC][DC] each, vec4 over dims (NaN already flagged).
fn stageRows(h: u32, nr: u32, a: u32, lid: u32) {
  let n = min(RC, nr - a) * (DC / 4u);
  for (var e = lid; e < 2u * n; e += 256u) {
    let which = e / n; // 0: dO, 1: q
    let f = e % n;
    let r = a + f / (DC / 4u);
    let d = (f % (DC / 4u)) * 4u;
    var x = vec4<f32>(0.0);
    for (var i = 0u; i < 4u; i++) {
      if (r < nr && d + i < P.D) {
        let at = (rowIds[r] * P.Hq + h) * P.D + d + i;
        if (which == 0u) { x[i] = dOutAt(at); } else { x[i] = qAt(at); }
      }
      if (isNan(x[i])) { x[i] = 0.0; }
    }
    stage[which * RC * (DC / 4u) + f] = x;
  }
}

// The step's dQ share over this tile's keys, dS K (rows ty·RW + i, dims (jv·16 + tx)·4), stored per (entry, sub).
fn dqPartial(t: Tile, r0: u32, nr: u32, lid: u32) {
  let tx = lid % 16u;
  let ty = lid / 16u;
  var acc: array<vec4<f32>, RW * OC4>;
  let nk = t.c1 - t.c0;
  for (var k0 = 0u; k0 < nk; k0 += VK) {
    let n4 = min(VK, nk - k0 + 3u) / 4u; // keys of this step, in fours (the padding is staged as 0)
    workgroupBarrier();
    for (var e = lid; e < 4u * n4 * (DC / 4u); e += 256u) {
      let c = k0 + e / (DC / 4u);
      let d = (e % (DC / 4u)) * 4u;
      var x = vec4<f32>(0.0);
      for (var i = 0u; i < 4u; i++) {
        if (t.c0 + c < t.c1 && d + i < P.D) { x[i] = kAt(((t.c0 + c) * P.Hkv + t.hk) * P.D + d + i); }
        if (isNan(x[i])) { x[i] = 0.0; }
      }
      stage[e] = x;
    }
    workgroupBarrier();
    if (ty * RW < nr) { // a full run of VK keys gets a constant trip count
      if (n4 == VK / 4u) {
        for (var c4 = 0u; c4 < VK / 4u; c4++) { dqKeys(&acc, k0, c4, tx, ty); }
      } else {
        for (var c4 = 0u; c4 < n4; c4++) { dqKeys(&acc, k0, c4, tx, ty); }
      }
    }
  }
  storeDq(t, r0, nr, acc, lid);
}

// acc += dS[rows][keys k0 + 4·c4 .. + 3] K[those keys] (K staged from k0).
fn dqKeys(acc: ptr<function, array<vec4<f32>, RW * OC4>>, k0: u32, c4: u32, tx: u32, ty: u32) {
  for (var i = 0u; i < RW; i++) {
    let ds = dss[(ty * RW + i) * 16u + k0 / 4u + c4]; // 4 keys of one row
    for (var jv = 0u; jv < OC4; jv++) {
      var a = (*acc)[i * OC4 + jv];
      a = fma(vec4<f32>(ds.x), stage[(4u * c4) * (DC / 4u) + jv * 16u + tx], a);
      a = fma(vec4<f32>(ds.y), stage[(4u * c4 + 1u) * (DC / 4u) + jv * 16u + tx], a);
      a = fma(vec4<f32>(ds.z), stage[(4u * c4 + 2u) * (DC / 4u) + jv * 16u + tx], a);
      a = fma(vec4<f32>(ds.w), stage[(4u * c4 + 3u) * (DC / 4u) + jv * 16u + tx], a);
      (*acc)[i * OC4 + jv] = a;
    }
  }
}

// Stores the dQ shares of the step's rows at (partial index of the entry, sub); NaN where rowOut says so.
fn storeDq(t: Tile, r0: u32, nr: u32, acc: array<vec4<f32>, RW * OC4>, lid: u32) {
  let tx = lid % 16u;
  let ty = lid / 16u;
  let dqOff = dqSharesOffset();
  let Dp = paddedD();
  for (var i = 0u; i < RW; i++) {
    let r = ty * RW + i;
    if (r >= nr) { continue; }
    let bad = atomicLoad(&rowOut[r]) != 0u;
    let e = ((r0 + r - t.e0) * t.subs + t.sub) * Dp;
    for (var jv = 0u; jv < OC4; jv++) {
      for (var x = 0u; x < 4u; x++) {
        let d = (jv * 16u + tx) * 4u + x;
        if (d < Dp) { work[dqOff + e + d] = select(select(acc[i * OC4 + jv][x], nanF(), bad), 0.0, d >= P.D); }
      }
    }
  }
}
`;
}
