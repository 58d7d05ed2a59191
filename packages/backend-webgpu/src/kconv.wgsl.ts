/**
 * Key convolution (SPEC §6): k' = k + SiLU(z), z[t, c] = Σ_ℓ w[c, W−1−ℓ] · k[t−ℓ, c], causal and never
 * crossing a sequence start. Backward: dz = dk' · SiLU'(z), dk = dk' + Σ_ℓ w[c, W−1−ℓ] · dz[t+ℓ, c],
 * dw[c, W−1−ℓ] = Σ_t dz[t, c] · k[t−ℓ, c] (one workgroup per weight, tree-reduced: deterministic).
 * k' and dk are computed two elements (one storage word) per invocation; dz is an f32 scratch.
 */
import { commonWgsl } from './common.wgsl.js';
import { type StorageKind, tensorRead, tensorWrite } from './storage.wgsl.js';

/** `kind`: the storage of k, dkOut, k' and dk; `wKind`: of w and dw (storage.wgsl.ts). */
export function kconvWgsl(kind: StorageKind, wKind: StorageKind): string {
  return /* wgsl */ `
${commonWgsl}
override WG: u32 = 64;

@group(0) @binding(0) var<uniform> P: Params;              // D = C = Hkv·D channels, width = W
@group(0) @binding(1) var<storage, read> geom: array<u32>;
${tensorRead('k', 2, kind)}// [T, C]
${tensorRead('w', 3, wKind)}// [C, W]
${tensorRead('dkOut', 4, kind)}// [T, C]
@group(0) @binding(5) var<storage, read_write> dz: array<f32>;  // [T, C]
${tensorWrite('out', 6, kind)}// [T, C]: k' (forward) or dk (backward)
${tensorWrite('dw', 7, wKind)}// [C, W]

fn seqStart(t: u32) -> u32 { return geom[P.seqsOff + 4u * geom[P.rowSeqOff + t]]; }
fn seqEnd(t: u32) -> u32 { let s = P.seqsOff + 4u * geom[P.rowSeqOff + t]; return geom[s] + geom[s + 1u]; }

fn conv(t: u32, c: u32) -> f32 {
  let C = P.D;
  let W = P.width;
  let lo = seqStart(t);
  var z = 0.0;
  for (var l = 0u; l < W; l++) {
    if (t < lo + l) { break; } // taps before the sequence start read zero
    z += wAt(c * W + (W - 1u - l)) * kAt((t - l) * C + c);
  }
  return z;
}

fn sigmoid(z: f32) -> f32 { return 1.0 / (1.0 + exp(-z)); }

fn convOut(i: u32) -> f32 {
  let z = conv(i / P.D, i % P.D);
  return kAt(i) + z * sigmoid(z);
}

// Elements 2·item and 2·item + 1 (one storage word).
@compute @workgroup_size(WG)
fn forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let i = 2u * (itemOf(wid) * WG + lid);
  let n = P.T * P.D;
  if (i >= n) { return; }
  let a = convOut(i);
  if (i + 1u < n) { outPut2(i, a, convOut(i + 1u)); } else { outPut(i, a); }
}

@compute @workgroup_size(WG)
fn backwardDz(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let i = itemOf(wid) * WG + lid;
  if (i >= P.T * P.D) { return; }
  let z = conv(i / P.D, i % P.D);
  let s = sigmoid(z);
  dz[i] = dkOutAt(i) * s * (1.0 + z * (1.0 - s)); // SiLU'(z) = σ(z)(1 + z(1 − σ(z)))
}

fn dkOf(i: u32) -> f32 {
  let C = P.D;
  let W = P.width;
  let t = i / C;
  let c = i % C;
  let hi = seqEnd(t);
  var g = dkOutAt(i);
  for (var l = 0u; l < W; l++) {
    if (t + l >= hi) { break; } // taps never cross into the next sequence
    g += wAt(c * W + (W - 1u - l)) * dz[(t + l) * C + c];
  }
  return g;
}

// Elements 2·item and 2·item + 1 (one storage word).
@compute @workgroup_size(WG)
fn backwardDk(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let i = 2u * (itemOf(wid) * WG + lid);
  let n = P.T * P.D;
  if (i >= n) { return; }
  let a = dkOf(i);
  if (i + 1u < n) { outPut2(i, a, dkOf(i + 1u)); } else { outPut(i, a); }
}

var<workgroup> part: array<f32, WG>;

// One workgroup per weight (c, slot): threads stride over t, then a fixed-order tree reduction.
@compute @workgroup_size(WG)
fn backwardDw(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let item = itemOf(wid);
  let C = P.D;
  let W = P.width;
  let valid = item < C * W;
  let c = item / W;
  let l = W - 1u - item % W; // weight slot item % W multiplies k[t − l]
  var acc = 0.0;
  if (valid) {
    for (var t = lid; t < P.T; t += WG) {
      if (t >= seqStart(t) + l) { acc += dz[t * C + c] * kAt((t - l) * C + c); }
    }
  }
  part[lid] = acc;
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    workgroupBarrier();
    if (lid < s) { part[lid] += part[lid + s]; }
  }
  if (valid && lid == 0u) { dwPut(item, part[0]); }
}
`;
}
