/**
 * Forward, gather-and-densify with online softmax (FlashMoBA §4.2, FA2): a workgroup owns TM query rows of
 * one head and walks the key blocks of their sequence in ascending order. For each block some row chose, the
 * keys go through workgroup memory in tiles of TN; S = scale·log2e · Q Kᵀ for the rows that chose it (the own
 * block causally masked), per-row (rowMax, rowSum) are updated, and acc (kept in `out`, owned by this
 * workgroup) is rescaled and gets P V. Epilogue: out = acc / rowSum, lse = ln2 · (rowMax + log2 rowSum);
 * a row with no keys gets out = 0, lse = −∞.
 */
import { commonWgsl } from './common.wgsl.js';

export const forwardWgsl = /* wgsl */ `
${commonWgsl}
override WG: u32 = 64;
override TM: u32 = 16;      // query rows per workgroup
override TN: u32 = 16;      // keys per workgroup-memory tile
override KVBUF: u32 = 1024; // TN · D floats

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> geom: array<u32>;
@group(0) @binding(2) var<storage, read> q: array<f32>;          // [T, Hq, D]
@group(0) @binding(3) var<storage, read> k: array<f32>;          // [T, Hkv, D]
@group(0) @binding(4) var<storage, read> v: array<f32>;          // [T, Hkv, D]
@group(0) @binding(5) var<storage, read> indices: array<i32>;    // [T, Hq, topk]
@group(0) @binding(6) var<storage, read_write> out: array<f32>;  // [T, Hq, D]: acc, then out
@group(0) @binding(7) var<storage, read_write> lse: array<f32>;  // [T, Hq]

var<workgroup> kTile: array<f32, KVBUF>;  // [TN, D]
var<workgroup> vTile: array<f32, KVBUF>;  // [TN, D]
var<workgroup> sTile: array<f32, 1024>;   // [TM, TN] scores, then P (TM·TN ≤ 1024)
var<workgroup> rowMax: array<f32, 64>;    // [TM] (TM ≤ 64), log2 domain
var<workgroup> rowSum: array<f32, 64>;
var<workgroup> alpha: array<f32, 64>;     // rescale factor of the current tile
var<workgroup> chose: array<u32, 64>;     // 1 when row r chose the current block
var<workgroup> cursor: array<u32, 64>;    // next slot of row r's (ascending) selection
var<workgroup> anyChose: u32;
var<workgroup> rowNan: array<u32, 64>;    // 1 once a row met a NaN score: its out and lse are NaN

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
  // blocks a row of this tile may hold: causally up to the last row's block, else all of the sequence's
  let lastBlock = select(geom[sq + 3u] - 1u, (r0 + nRows - 1u - start) / P.blockSize, causal);

  for (var e = lid; e < TM * D; e += WG) { if (e / D < nRows) { out[((r0 + e / D) * P.Hq + h) * D + e % D] = 0.0; } }
  if (lid < TM) { rowMax[lid] = negInf(); rowSum[lid] = 0.0; cursor[lid] = 0u; rowNan[lid] = 0u; }

  for (var g = 0u; g <= lastBlock; g++) {
    // -- gather: which rows chose block g --
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
    for (var p0 = b0; p0 < b1; p0 += TN) {
      forwardTile(h, hk, r0, nRows, p0, min(TN, b1 - p0), causal, lid);
    }
  }
  workgroupBarrier();
  // -- epilogue: normalise; empty rows give out = 0, lse = −∞ (never 0/0) --
  for (var e = lid; e < TM * D; e += WG) {
    let r = e / D;
    if (r < nRows) {
      let i = ((r0 + r) * P.Hq + h) * D + e % D;
      let s = rowSum[r];
      out[i] = select(select(out[i] / s, 0.0, s == 0.0), nanF(), rowNan[r] != 0u);
    }
  }
  if (lid < nRows) {
    let s = rowSum[lid];
    lse[(r0 + lid) * P.Hq + h] = select(select((rowMax[lid] + log2(s)) * LN2, negInf(), s == 0.0), nanF(), rowNan[lid] != 0u);
  }
}

/** One key tile [p0, p0 + nk) for the rows that chose its block: scores, online-softmax update, acc += P V. */
fn forwardTile(h: u32, hk: u32, r0: u32, nRows: u32, p0: u32, nk: u32, causal: bool, lid: u32) {
  let D = P.D;
  // -- stage K and V --
  for (var e = lid; e < TN * D; e += WG) {
    let c = e / D;
    let src = ((p0 + c) * P.Hkv + hk) * D + e % D;
    kTile[e] = select(0.0, k[src], c < nk);
    vTile[e] = select(0.0, v[src], c < nk);
  }
  workgroupBarrier();
  // -- compute qk (log2 domain), masking keys past the block end and, causally, keys after the row --
  for (var e = lid; e < TM * TN; e += WG) {
    let r = e / TN;
    let c = e % TN;
    let row = r0 + r;
    var s = negInf();
    if (r < nRows && chose[r] != 0u && c < nk && !(causal && p0 + c > row)) {
      var dot = 0.0;
      for (var d = 0u; d < D; d++) { dot += q[(row * P.Hq + h) * D + d] * kTile[c * D + d]; }
      s = dot * P.scaleLog2;
    }
    sTile[e] = s;
  }
  workgroupBarrier();
  // -- update rowMax / rowSum; P replaces S --
  if (lid < nRows && chose[lid] != 0u) {
    let mOld = rowMax[lid];
    var m = mOld;
    for (var c = 0u; c < TN; c++) {
      let s = sTile[lid * TN + c];
      if (isNan(s)) { rowNan[lid] = 1u; sTile[lid * TN + c] = negInf(); } // poisons the row; kept out of the softmax
      else { m = max(m, s); }
    }
    var a = 1.0;
    var sum = 0.0;
    if (m != negInf()) { // all masked so far: keep state (avoid −∞ − −∞ = NaN)
      a = select(exp2(mOld - m), 0.0, mOld == negInf());
      for (var c = 0u; c < TN; c++) {
        let s = sTile[lid * TN + c];
        let p = select(exp2(s - m), 0.0, s == negInf());
        sTile[lid * TN + c] = p;
        sum += p;
      }
    } else {
      for (var c = 0u; c < TN; c++) { sTile[lid * TN + c] = 0.0; }
    }
    rowMax[lid] = m;
    rowSum[lid] = rowSum[lid] * a + sum;
    alpha[lid] = a;
  }
  workgroupBarrier();
  // -- update output accumulator: acc = acc · alpha + P V (skipping P = 0 keeps masked NaN keys out) --
  for (var e = lid; e < TM * D; e += WG) {
    let r = e / D;
    if (r < nRows && chose[r] != 0u) {
      let d = e % D;
      var acc = 0.0;
      for (var c = 0u; c < TN; c++) {
        let p = sTile[r * TN + c];
        if (p != 0.0) { acc += p * vTile[c * D + d]; }
      }
      let i = ((r0 + r) * P.Hq + h) * D + d;
      out[i] = out[i] * alpha[r] + acc;
    }
  }
  workgroupBarrier();
}
`;
