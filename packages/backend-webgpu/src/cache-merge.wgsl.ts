/**
 * KV cache attend, the last launch: one invocation per output element (query row, query head, dim) merges the
 * k partials of cache-attend.wgsl.ts in slot order (deterministic): M = max m_i, L = Σ l_i·2^(m_i − M),
 * out = Σ acc_i·2^(m_i − M) / L in the cache's dtype, lse = (M + log2 L)·ln 2 (natural log, f32). No keys: out 0,
 * lse −∞; a non-finite score in any slot: NaN.
 */
import { commonWgsl } from './common.wgsl.js';
import { type StorageKind, tensorWrite } from './storage.wgsl.js';

export function cacheMergeWgsl(kind: StorageKind): string {
  return /* wgsl */ `
${commonWgsl}
override WG: u32 = 64;

@group(0) @binding(0) var<uniform> P: Params;    // T = Tq, Hq, D, topk, nItems = Tq·Hq·D
@group(0) @binding(1) var<storage, read> part: array<f32>;
${tensorWrite('out', 2, kind)}
@group(0) @binding(3) var<storage, read_write> lse: array<f32>;

@compute @workgroup_size(WG)
fn merge(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let i = itemOf(wid) * WG + lid;
  if (i >= P.nItems) { return; }
  let D = P.D;
  let rh = i / D;
  let d = i % D;
  let base = rh * P.topk;
  var M = negInf();
  var bad = false;
  for (var s = 0u; s < P.topk; s++) {
    let po = (base + s) * (D + 2u);
    let l = part[po + 1u];
    bad = bad || isNan(l);
    if (l > 0.0) { M = max(M, part[po]); }
  }
  if (bad) {
    outPut(i, nanF());
    if (d == 0u) { lse[rh] = nanF(); }
    return;
  }
  var L = 0.0;
  var o = 0.0;
  for (var s = 0u; s < P.topk; s++) {
    let po = (base + s) * (D + 2u);
    let l = part[po + 1u];
    if (l > 0.0) {
      let a = exp2(part[po] - M);
      L += l * a;
      o += part[po + 2u + d] * a;
    }
  }
  if (L > 0.0) {
    outPut(i, o / L);
    if (d == 0u) { lse[rh] = (M + log2(L)) * LN2; }
  } else {
    outPut(i, 0.0);
    if (d == 0u) { lse[rh] = negInf(); }
  }
}
`;
}
