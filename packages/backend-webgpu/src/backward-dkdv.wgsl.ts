/**
 * Backward dK, dV per key tile (FlashMoBA's compute_moba_dq_dk_dv_1colblock without the dq atomics): a
 * workgroup owns TK keys of one block and one kv head, keeps them in workgroup memory, and walks, for every
 * query head of the group, the block's sorted list of query rows in chunks of TR:
 * dV += Pᵀ dO, dK += scale · dSᵀ Q. One owner per (kv head, key): deterministic, no float atomics.
 * dkv: [2, T, Hkv, D] (dk then dv).
 */
import { commonWgsl } from './common.wgsl.js';

export const backwardDkdvWgsl = /* wgsl */ `
${commonWgsl}
override WG: u32 = 64;
override TR: u32 = 16;      // query rows per chunk
override TK: u32 = 16;      // keys per workgroup
override KVBUF: u32 = 1024; // TK · D

@group(0) @binding(0) var<uniform> P: Params;                      // nItems = key tiles
@group(0) @binding(1) var<storage, read> geom: array<u32>;
@group(0) @binding(2) var<storage, read> q: array<f32>;            // [T, Hq, D]
@group(0) @binding(3) var<storage, read> k: array<f32>;            // [T, Hkv, D]
@group(0) @binding(4) var<storage, read> v: array<f32>;            // [T, Hkv, D]
@group(0) @binding(5) var<storage, read> collected: array<u32>;    // offsets [Hq·NB + 1], rows
@group(0) @binding(6) var<storage, read> dOut: array<f32>;         // [T, Hq, D]
@group(0) @binding(7) var<storage, read> stats: array<f32>;        // [T, Hq, 2]: lse, Δ
@group(0) @binding(8) var<storage, read_write> dkv: array<f32>;    // [2, T, Hkv, D]

var<workgroup> kTile: array<f32, KVBUF>;
var<workgroup> vTile: array<f32, KVBUF>;
var<workgroup> pTile: array<f32, 1024>;  // [TR, TK]
var<workgroup> dsTile: array<f32, 1024>; // [TR, TK]
var<workgroup> rowIds: array<u32, 64>;   // [TR]

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let tile = itemOf(wid);
  let hk = wid.z;
  if (tile >= P.nItems) { return; }
  let D = P.D;
  let c0 = geom[P.kTilesOff + 4u * tile];
  let nk = geom[P.kTilesOff + 4u * tile + 1u] - c0;
  let seq = geom[P.kTilesOff + 4u * tile + 2u];
  let g = geom[P.seqsOff + 4u * seq + 2u] + geom[P.kTilesOff + 4u * tile + 3u]; // global block
  let causal = P.causal != 0u;
  let dvOff = P.T * P.Hkv * D;
  let group = P.Hq / P.Hkv;

  for (var e = lid; e < TK * D; e += WG) {
    let c = e / D;
    let src = ((c0 + c) * P.Hkv + hk) * D + e % D;
    kTile[e] = select(0.0, k[src], c < nk);
    vTile[e] = select(0.0, v[src], c < nk);
    if (c < nk) { dkv[src] = 0.0; dkv[dvOff + src] = 0.0; }
  }
  for (var h = hk * group; h < (hk + 1u) * group; h++) {
    let l0 = collected[h * P.totalBlocks + g];
    let l1 = collected[h * P.totalBlocks + g + 1u];
    for (var a = l0; a < l1; a += TR) {
      let nr = min(TR, l1 - a);
      workgroupBarrier();
      if (lid < nr) { rowIds[lid] = collected[P.Hq * P.totalBlocks + 1u + a + lid]; } // rows follow the offsets
      workgroupBarrier();
      // -- recompute P and dS for (row, key) --
      for (var e = lid; e < TR * TK; e += WG) {
        let r = e / TK;
        let c = e % TK;
        var p = 0.0;
        var ds = 0.0;
        if (r < nr && c < nk && !(causal && c0 + c > rowIds[r])) {
          let qo = (rowIds[r] * P.Hq + h) * D;
          var s = 0.0;
          var dp = 0.0;
          for (var d = 0u; d < D; d++) {
            s += q[qo + d] * kTile[c * D + d];
            dp += dOut[qo + d] * vTile[c * D + d];
          }
          let st = 2u * (rowIds[r] * P.Hq + h);
          let l = stats[st];
          let delta = stats[st + 1u];
          let pNan = isNan(s) || isNan(l);
          p = select(exp2(s * P.scaleLog2 - l * LOG2E), nanF(), pNan);
          ds = select(p * (dp - delta), nanF(), pNan || isNan(dp) || isNan(delta));
        }
        pTile[e] = p;
        dsTile[e] = ds;
      }
      workgroupBarrier();
      // -- dV += Pᵀ dO, dK += scale · dSᵀ Q (masked pairs skipped, so a NaN row never leaks into them) --
      for (var e = lid; e < TK * D; e += WG) {
        let c = e / D;
        if (c < nk) {
          let d = e % D;
          var gv = 0.0;
          var gk = 0.0;
          var badV = false;
          var badK = false;
          for (var r = 0u; r < nr; r++) {
            let p = pTile[r * TK + c];
            let ds = dsTile[r * TK + c];
            let qo = (rowIds[r] * P.Hq + h) * D + d;
            if (isNan(p)) { badV = true; } else if (p != 0.0) { let x = dOut[qo]; gv += p * x; badV = badV || isNan(x); }
            if (isNan(ds)) { badK = true; } else if (ds != 0.0) { let x = q[qo]; gk += ds * x; badK = badK || isNan(x); }
          }
          let i = ((c0 + c) * P.Hkv + hk) * D + d;
          let oldK = dkv[i];
          let oldV = dkv[dvOff + i];
          dkv[i] = select(oldK + P.scale * gk, nanF(), badK || isNan(oldK)); // NaN is sticky across chunks
          dkv[dvOff + i] = select(oldV + gv, nanF(), badV || isNan(oldV));
        }
      }
    }
  }
}
`;
