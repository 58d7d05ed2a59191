/**
 * Backward dQ, query-major (FA2's dq pass, no atomics): a workgroup owns TM query rows of one head and walks
 * their selected key blocks like the forward, in key tiles of TN through workgroup memory:
 * P = exp2(S·scale·log2e − lse·log2e), dP = dO Vᵀ, dS = P ⊙ (dP − Δ), dq += scale · dS K (dq owned here).
 */
import { commonWgsl } from './common.wgsl.js';

export const backwardDqWgsl = /* wgsl */ `
${commonWgsl}
override WG: u32 = 64;
override TM: u32 = 16;
override TN: u32 = 16;
override KVBUF: u32 = 1024; // TN · D

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> geom: array<u32>;
@group(0) @binding(2) var<storage, read> q: array<f32>;          // [T, Hq, D]
@group(0) @binding(3) var<storage, read> k: array<f32>;          // [T, Hkv, D]
@group(0) @binding(4) var<storage, read> v: array<f32>;          // [T, Hkv, D]
@group(0) @binding(5) var<storage, read> indices: array<i32>;    // [T, Hq, topk]
@group(0) @binding(6) var<storage, read> dOut: array<f32>;       // [T, Hq, D]
@group(0) @binding(7) var<storage, read> stats: array<f32>;      // [T, Hq, 2]: lse, Δ
@group(0) @binding(8) var<storage, read_write> dq: array<f32>;   // [T, Hq, D]

var<workgroup> kTile: array<f32, KVBUF>;
var<workgroup> vTile: array<f32, KVBUF>;
var<workgroup> dsTile: array<f32, 1024>; // [TM, TN]
var<workgroup> chose: array<u32, 64>;
var<workgroup> cursor: array<u32, 64>;
var<workgroup> anyChose: u32;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let tile = itemOf(wid);
  let h = wid.z;
  if (tile >= P.nItems) { return; }
  let D = P.D;
  let hk = h / (P.Hq / P.Hkv);
  let r0 = geom[P.qTilesOff + 4u * tile];
  let nRows = geom[P.qTilesOff + 4u * tile + 1u] - r0;
  let sq = P.seqsOff + 4u * geom[P.qTilesOff + 4u * tile + 2u];
  let start = geom[sq];
  let end = start + geom[sq + 1u];
  let causal = P.causal != 0u;
  let lastBlock = select(geom[sq + 3u] - 1u, (r0 + nRows - 1u - start) / P.blockSize, causal);

  for (var e = lid; e < TM * D; e += WG) { if (e / D < nRows) { dq[((r0 + e / D) * P.Hq + h) * D + e % D] = 0.0; } }
  if (lid < TM) { cursor[lid] = 0u; }
  for (var g = 0u; g <= lastBlock; g++) {
    workgroupBarrier();
    if (lid < TM) {
      var c = 0u;
      if (lid < nRows && cursor[lid] < P.topk && indices[((r0 + lid) * P.Hq + h) * P.topk + cursor[lid]] == i32(g)) {
        c = 1u;
        cursor[lid] += 1u;
      }
      chose[lid] = c;
    }
    workgroupBarrier();
    if (lid == 0u) {
      var a = 0u;
      for (var r = 0u; r < TM; r++) { a |= chose[r]; }
      anyChose = a;
    }
    if (workgroupUniformLoad(&anyChose) == 0u) { continue; }
    let b0 = start + g * P.blockSize;
    let b1 = min(b0 + P.blockSize, end);
    for (var p0 = b0; p0 < b1; p0 += TN) { dqTile(h, hk, r0, nRows, p0, min(TN, b1 - p0), causal, lid); }
  }
}

fn dqTile(h: u32, hk: u32, r0: u32, nRows: u32, p0: u32, nk: u32, causal: bool, lid: u32) {
  let D = P.D;
  for (var e = lid; e < TN * D; e += WG) {
    let c = e / D;
    let src = ((p0 + c) * P.Hkv + hk) * D + e % D;
    kTile[e] = select(0.0, k[src], c < nk);
    vTile[e] = select(0.0, v[src], c < nk);
  }
  workgroupBarrier();
  // -- dS = P ⊙ (dP − Δ) for (row, key); 0 where masked --
  for (var e = lid; e < TM * TN; e += WG) {
    let r = e / TN;
    let c = e % TN;
    let row = r0 + r;
    var ds = 0.0;
    if (r < nRows && chose[r] != 0u && c < nk && !(causal && p0 + c > row)) {
      let qo = (row * P.Hq + h) * D;
      var s = 0.0;
      var dp = 0.0;
      for (var d = 0u; d < D; d++) {
        s += q[qo + d] * kTile[c * D + d];
        dp += dOut[qo + d] * vTile[c * D + d];
      }
      let l = stats[2u * (row * P.Hq + h)];
      let delta = stats[2u * (row * P.Hq + h) + 1u];
      let p = exp2(s * P.scaleLog2 - l * LOG2E);
      ds = select(p * (dp - delta), nanF(), isNan(s) || isNan(l) || isNan(dp) || isNan(delta));
    }
    dsTile[e] = ds;
  }
  workgroupBarrier();
  for (var e = lid; e < TM * D; e += WG) {
    let r = e / D;
    if (r < nRows && chose[r] != 0u) {
      let d = e % D;
      var acc = 0.0;
      var bad = false;
      for (var c = 0u; c < nk; c++) {
        let ds = dsTile[r * TN + c];
        let kv = kTile[c * D + d];
        if (isNan(ds)) { bad = true; } else if (ds != 0.0) { acc += ds * kv; bad = bad || isNan(kv); }
      }
      let i = ((r0 + r) * P.Hq + h) * D + d;
      let old = dq[i];
      dq[i] = select(old + P.scale * acc, nanF(), bad || isNan(old)); // NaN is sticky across tiles
    }
  }
  workgroupBarrier();
}
`;
