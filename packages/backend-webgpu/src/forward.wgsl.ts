/**
 * Forward, collect-and-densify (FlashMoBA §4.2, FA2 online softmax). One workgroup per chunk of a collected
 * list: up to 64 query rows of head h that all chose key block g. Q rows are gathered, the block's keys go
 * through in tiles of 64: S = Q Kᵀ (log2 domain) with the reduction over the head dim staged DK at a time,
 * online softmax per row, O += P V with V staged VK keys at a time. 256 invocations = 16 row groups × 16
 * column groups; each holds a 4 × 4 tile of S and a 4 × (4·OC4) tile of O in registers (vec4 over rows / dims).
 * The result is one partial per (row, slot) — entry e of the collected rows: unnormalised o, row max m (raw)
 * and row sum l — merged per row in slot order by forward-merge.wgsl.ts, so nothing races and the output does
 * not depend on how rows were chunked. Only the chunks of this pass (Params; usually all) are computed.
 * NaN (WGSL lets compilers assume none): staged operands are tested on the bits and replaced by 0, and flags
 * carry it: a NaN in q, k or a score marks the row (o, m NaN: its out and lse); in v, its out only.
 */
import { commonWgsl, rowShiftWgsl } from './common.wgsl.js';
import { forwardStageWgsl } from './forward-stage.wgsl.js';
import { type StorageKind, tensorRead } from './storage.wgsl.js';

/**
 * `oc4`: vec4 columns of O per invocation, Dc / 64 (function-scope arrays need constant sizes); `kind`: the
 * storage of q, k, v (storage.wgsl.ts).
 */
export function forwardWgsl(oc4: number, kind: StorageKind): string {
  return /* wgsl */ `
${commonWgsl}
const OC4: u32 = ${oc4}u;   // O columns per invocation / 4
const DC: u32 = 64u * OC4;  // head dim of the tiles (D padded with zeros)
const M: u32 = 64u;         // rows per chunk (CHUNK_ROWS)
const TN: u32 = 64u;        // keys per tile
override DK: u32 = 16u;     // head dims per S staging step
override VK: u32 = 16u;     // keys per V staging step
override PH: u32 = 64u;     // keys of P in workgroup memory at once (TN / PH phases)
override STAGE4: u32 = 512u; // vec4s of the staging buffer: max(DK·(M + TN), VK·DC) / 4

@group(0) @binding(0) var<uniform> P: Params;
${tensorRead('q', 1, kind)}// [Tq, Hq, D]
${tensorRead('k', 2, kind)}// [Tk, Hkv, D]
${tensorRead('v', 3, kind)}// [Tk, Hkv, D]
@group(0) @binding(4) var<storage, read> collected: array<u32>;     // CollectedLayout (geometry included)
@group(0) @binding(5) var<storage, read_write> part: array<f32>;    // [passCap + M, paddedD] o, then [passCap + M, 2] (m, l): per entry of the pass

var<workgroup> stage: array<vec4<f32>, STAGE4>; // Q [DK][M/4] and K [DK][TN/4], or V [VK][DC/4]
var<workgroup> ps: array<vec4<f32>, PH * 16u>;  // P of PH keys: [PH][M/4], vec4 over rows
var<workgroup> red: array<vec4<f32>, 256>;      // [16 column groups][16 row groups], vec4 over rows: row max, then row sum
var<workgroup> rowIds: array<u32, M>;
var<workgroup> rowBad: array<atomic<u32>, M>;   // bit 0: NaN in q or a score (o, m NaN); bit 1: NaN in v (o NaN)
var<workgroup> keyBad: array<atomic<u32>, TN>;  // bit 0: NaN in k; bit 1: NaN in v (current tile)

struct Chunk { list: u32, first: u32, rows: u32, at: u32, valid: u32 } // at: partial index of the first entry
var<workgroup> chunk: Chunk;

// The w-th chunk of this pass: chunks are in entry order, those of heads [hLo, hHi) contiguous; with a part
// of a head's entries, a binary search finds the first chunk of the range.
fn findChunk(w: u32) -> Chunk {
  let base = collected[P.hLo * P.totalBlocks]; // first entry of head hLo
  let cEnd = collected[P.chunkOffOff + P.hHi * P.totalBlocks];
  var lo = collected[P.chunkOffOff + P.hLo * P.totalBlocks];
  if (P.passE0 > 0u) {
    var hi = cEnd;
    while (lo < hi) {
      let mid = (lo + hi) / 2u;
      if (collected[P.chunksOff + 2u * mid + 1u] - base < P.passE0) { lo = mid + 1u; } else { hi = mid; }
    }
  }
  let c = lo + w;
  var r = Chunk(0u, 0u, 0u, 0u, 0u);
  if (c < cEnd) {
    let l = collected[P.chunksOff + 2u * c];
    let first = collected[P.chunksOff + 2u * c + 1u];
    let at = first - base - P.passE0;
    if (at < P.passCap) { r = Chunk(l, first, min(M, collected[l + 1u] - first), at, 1u); }
  }
  return r;
}

// The register tiles are mat4x4 (column i: row i of the invocation's 4 rows), indexed by constants only:
// a dynamically indexed private array may be placed in memory by the compiler.
fn max4(x: vec4<f32>) -> f32 { return max(max(x.x, x.y), max(x.z, x.w)); }

// Row r's raw scores (unscaled: the scale is applied to s − max, which cannot overflow for any f32 scale),
// −∞ where masked; a non-finite score or key marks the row.
// shift: the chunk's query-to-key row shift (rowShift).
fn maskRow(s: vec4<f32>, r: u32, pos: vec4<u32>, keyOk: vec4<bool>, kNan: vec4<bool>, nRows: u32, b1: u32, shift: u32) -> vec4<f32> {
  let valid = (pos < vec4<u32>(b1)) & !(vec4<bool>(P.causal != 0u) & (pos > vec4<u32>(rowIds[r] + shift))) & vec4<bool>(r < nRows);
  if (any(valid & (notFinite4(s) | kNan))) { atomicOr(&rowBad[r], 1u); }
  return select(vec4<f32>(negInf()), s, valid & keyOk & !notFinite4(s));
}

${rowShiftWgsl}
fn expRow(s: vec4<f32>, m: f32) -> vec4<f32> { return select(exp2((s - m) * P.scale * LOG2E), vec4<f32>(0.0), s == vec4<f32>(negInf())); }

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  if (lid == 0u) { chunk = findChunk(itemOf(wid)); }
  let ch = workgroupUniformLoad(&chunk);
  if (ch.valid == 0u) { return; }
  let tx = lid % 16u;
  let ty = lid / 16u;
  let D = P.D;
  let h = ch.list / P.totalBlocks;
  let hk = h / (P.Hq / P.Hkv);
  let g = ch.list % P.totalBlocks;
  let b0 = collected[P.blocksOff + 4u * g];
  let b1 = b0 + collected[P.blocksOff + 4u * g + 1u];
  let causal = P.causal != 0u;
  let shift = rowShift(g);
  if (lid < M) {
    rowIds[lid] = collected[P.rowsOff + ch.first + min(lid, ch.rows - 1u)];
    atomicStore(&rowBad[lid], 0u);
  }
  workgroupBarrier();
  // causally, keys after the chunk's last (largest) row are masked for every row
  let kEnd = select(b1, min(b1, workgroupUniformLoad(&rowIds[M - 1u]) + shift + 1u), causal);

  var o: array<mat4x4<f32>, OC4>; // o[jv][i]: row ty·4 + i, dims (jv·16 + tx)·4 .. + 3
  var m = vec4<f32>(negInf());    // row max (raw score), the same in all 16 invocations of a row group
  var l = vec4<f32>(0.0);         // this invocation's share of the row sums
  let r0 = ty * 4u;
  let rowsIn = r0 < ch.rows; // row groups past the chunk's rows only join the barriers
  for (var p0 = b0; p0 < kEnd; p0 += TN) {
    let s = scoreTile(h, hk, ch.rows, p0, b1, kEnd, lid);
    // -- mask, NaN flags, row max over the 16 invocations of a row group --
    let pos = vec4<u32>(p0 + tx * 4u) + vec4<u32>(0u, 1u, 2u, 3u);
    var sv = mat4x4<f32>(vec4<f32>(negInf()), vec4<f32>(negInf()), vec4<f32>(negInf()), vec4<f32>(negInf()));
    if (rowsIn && p0 + tx * 4u < kEnd) {
      let kb = vec4<u32>(atomicLoad(&keyBad[tx * 4u]), atomicLoad(&keyBad[tx * 4u + 1u]), atomicLoad(&keyBad[tx * 4u + 2u]), atomicLoad(&keyBad[tx * 4u + 3u]));
      let kNan = (kb & vec4<u32>(1u)) != vec4<u32>(0u);
      let keyOk = !kNan;
      sv = mat4x4<f32>(
        maskRow(s[0], r0, pos, keyOk, kNan, ch.rows, b1, shift), maskRow(s[1], r0 + 1u, pos, keyOk, kNan, ch.rows, b1, shift),
        maskRow(s[2], r0 + 2u, pos, keyOk, kNan, ch.rows, b1, shift), maskRow(s[3], r0 + 3u, pos, keyOk, kNan, ch.rows, b1, shift));
    }
    red[tx * 16u + ty] = vec4<f32>(max4(sv[0]), max4(sv[1]), max4(sv[2]), max4(sv[3]));
    workgroupBarrier();
    // -- update rowMax / rowSum and rescale acc; P (0 where masked) --
    var pr = mat4x4<f32>();
    if (rowsIn) {
      var mNew = m;
      for (var x = 0u; x < 16u; x++) { mNew = max(mNew, red[x * 16u + ty]); }
      let live = mNew != vec4<f32>(negInf()); // rows with an unmasked key so far (avoid −∞ − −∞)
      let alpha = select(vec4<f32>(1.0), select(exp2((m - mNew) * P.scale * LOG2E), vec4<f32>(0.0), m == vec4<f32>(negInf())), live);
      let mUse = select(vec4<f32>(0.0), mNew, live);
      pr = mat4x4<f32>(expRow(sv[0], mUse.x), expRow(sv[1], mUse.y), expRow(sv[2], mUse.z), expRow(sv[3], mUse.w));
      for (var jv = 0u; jv < OC4; jv++) {
        o[jv] = mat4x4<f32>(o[jv][0] * alpha.x, o[jv][1] * alpha.y, o[jv][2] * alpha.z, o[jv][3] * alpha.w);
      }
      let ones = vec4<f32>(1.0);
      l = l * alpha + vec4<f32>(dot(pr[0], ones), dot(pr[1], ones), dot(pr[2], ones), dot(pr[3], ones));
      m = mNew;
    }
    accumulatePV(&o, transpose(pr), hk, p0, b1, kEnd, ch.rows, lid);
    // -- a non-finite v reaches every row that attends the key (p = 0 or not: the reference's 0 · NaN) --
    if (rowsIn) {
      let vNan = (vec4<u32>(atomicLoad(&keyBad[tx * 4u]), atomicLoad(&keyBad[tx * 4u + 1u]), atomicLoad(&keyBad[tx * 4u + 2u]), atomicLoad(&keyBad[tx * 4u + 3u])) & vec4<u32>(2u)) != vec4<u32>(0u);
      if (any(vNan)) {
        for (var i = 0u; i < 4u; i++) {
          if (any(vNan & (sv[i] != vec4<f32>(negInf())))) { atomicOr(&rowBad[r0 + i], 2u); }
        }
      }
    }
  }
  // -- epilogue: total row sums, then the partial (o, m, l) of each entry --
  workgroupBarrier();
  red[tx * 16u + ty] = l;
  workgroupBarrier();
  if (!rowsIn) { return; }
  var sum = vec4<f32>(0.0);
  for (var x = 0u; x < 16u; x++) { sum += red[x * 16u + ty]; }
  let Dp = paddedD();
  let statsOff = (P.passCap + M) * Dp;
  for (var i = 0u; i < 4u; i++) {
    let r = r0 + i;
    if (r >= ch.rows) { continue; }
    let bad = atomicLoad(&rowBad[r]);
    let e = ch.at + r;
    for (var jv = 0u; jv < OC4; jv++) {
      let d = (jv * 16u + tx) * 4u;
      let ov = o[jv][i];
      for (var c = 0u; c < 4u; c++) {
        if (d + c < Dp) { part[e * Dp + d + c] = select(select(ov[c], nanF(), bad != 0u), 0.0, d + c >= D); }
      }
    }
    if (tx == 0u) {
      part[statsOff + 2u * e] = select(m[i], nanF(), (bad & 1u) != 0u);
      part[statsOff + 2u * e + 1u] = sum[i];
    }
  }
}

${forwardStageWgsl}
// o += P[key pc]ᵀ V[key] (V staged as c) for the invocation's 4 rows.
fn pvKey(o: ptr<function, array<mat4x4<f32>, OC4>>, pc: u32, c: u32, tx: u32, ty: u32) {
  let pv = ps[pc * (M / 4u) + ty];
  for (var jv = 0u; jv < OC4; jv++) {
    let vv = stage[c * (DC / 4u) + jv * 16u + tx];
    var a = (*o)[jv];
    a[0] = fma(vec4<f32>(pv.x), vv, a[0]);
    a[1] = fma(vec4<f32>(pv.y), vv, a[1]);
    a[2] = fma(vec4<f32>(pv.z), vv, a[2]);
    a[3] = fma(vec4<f32>(pv.w), vv, a[3]);
    (*o)[jv] = a;
  }
}
`;
}
