/**
 * Key convolution (SPEC §6): `k'_t = k_t + SiLU(Σ_ℓ w_ℓ ⊙ k_{t−ℓ})`, depthwise over C = Hkv·D
 * channels, causal, restarting at each sequence start. Weight `[C, W]` with `weight[c, W−1−ℓ] = w_ℓ[c]`
 * (PyTorch Conv1d); the kernels take it transposed, `wT [W, C]` with `wT[ℓ, c] = w_ℓ[c]`.
 * Backward: dz = dk' ⊙ SiLU'(z) per token tile; dk per token tile; dw per channel group (owned).
 */
import { type CheckedKconv, type DType, type Layout, sequences } from '@moba/core';
import type { Claim } from './forward.js';
import { type Cpu, type Geometry, KEY_TILE, geometry, storeRow } from './tensor.js';

/** Channels per dw work item: each item owns its channels' dw entries, so the sum order is fixed. */
export const KCONV_CHANNELS = 16;

export interface KconvArgs {
  readonly geo: Geometry; // tiles over the tokens; C = Hkv·D
  readonly k: Float32Array; // [T, C]
  readonly wT: Float32Array; // [W, C]
  readonly W: number;
  readonly dtype: DType; // of k (outputs k' and dk)
}

export interface KconvForwardArgs extends KconvArgs {
  readonly out: Float32Array; // [T, C]
}

export interface KconvBackwardArgs extends KconvArgs {
  readonly dkOut: Float32Array; // [T, C]
  readonly dz: Float32Array; // [T, C] workspace
  readonly dk: Float32Array; // [T, C]
  readonly dw: Float32Array; // [C, W]
  readonly wDtype: DType;
}

/** z[c] = Σ_ℓ wT[ℓ, c] · k[t − ℓ, c] for ℓ ≤ t − s0 (taps before the sequence start read zero). */
function preActivation(a: KconvArgs, t: number, s0: number, z: Float64Array): void {
  const C = a.geo.Hkv * a.geo.D;
  z.fill(0);
  for (let l = 0; l < a.W && t - l >= s0; l++) {
    const ko = (t - l) * C;
    const wo = l * C;
    for (let c = 0; c < C; c++) z[c] += a.wT[wo + c] * a.k[ko + c];
  }
}

/** Runs `token(a, t, z)` on every token t of the claimed token tiles, z holding its pre-activation. */
function eachPreActivation<A extends KconvArgs>(a: A, claim: Claim, token: (a: A, t: number, z: Float64Array) => void): void {
  const g = a.geo;
  const z = new Float64Array(g.Hkv * g.D);
  for (let tile = claim(); tile >= 0; tile = claim()) {
    const s0 = g.seqStart[g.tiles[tile * 3 + 2]];
    for (let t = g.tiles[tile * 3]; t < g.tiles[tile * 3 + 1]; t++) {
      preActivation(a, t, s0, z);
      token(a, t, z);
    }
  }
}

/** k'[t] = k[t] + z·σ(z), rounded to the dtype. */
function silu(a: KconvForwardArgs, t: number, z: Float64Array): void {
  const C = z.length;
  for (let c = 0; c < C; c++) z[c] = a.k[t * C + c] + z[c] / (1 + Math.exp(-z[c])); // k + z·σ(z)
  storeRow(a.out, t * C, z, 0, C, 1, a.dtype);
}

/** dz[t] = dk'[t] ⊙ SiLU'(z), with SiLU'(z) = σ(z)(1 + z(1 − σ(z))). */
function siluGrad(a: KconvBackwardArgs, t: number, z: Float64Array): void {
  const C = z.length;
  for (let c = 0; c < C; c++) {
    const sg = 1 / (1 + Math.exp(-z[c]));
    a.dz[t * C + c] = a.dkOut[t * C + c] * sg * (1 + z[c] * (1 - sg));
  }
}

/** Kernel: k' over one token tile per item. */
export function kconvKernel(a: KconvForwardArgs, claim: Claim): void {
  eachPreActivation(a, claim, silu);
}

/** Kernel: dz = dk' ⊙ SiLU'(z); items are token tiles. */
export function kconvDzKernel(a: KconvBackwardArgs, claim: Claim): void {
  eachPreActivation(a, claim, siluGrad);
}

/** Kernel: dk[t] = dk'[t] + Σ_ℓ wT[ℓ] ⊙ dz[t + ℓ] within the sequence; items are token tiles. */
export function kconvDkKernel(a: KconvBackwardArgs, claim: Claim): void {
  const g = a.geo;
  const C = g.Hkv * g.D;
  const acc = new Float64Array(C);
  for (let tile = claim(); tile >= 0; tile = claim()) {
    const seq = g.tiles[tile * 3 + 2];
    const sEnd = g.seqStart[seq] + g.seqLen[seq];
    for (let t = g.tiles[tile * 3]; t < g.tiles[tile * 3 + 1]; t++) {
      for (let c = 0; c < C; c++) acc[c] = a.dkOut[t * C + c]; // residual path
      for (let l = 0; l < a.W && t + l < sEnd; l++) {
        const zo = (t + l) * C;
        for (let c = 0; c < C; c++) acc[c] += a.wT[l * C + c] * a.dz[zo + c];
      }
      storeRow(a.dk, t * C, acc, 0, C, 1, a.dtype);
    }
  }
}

/** Kernel: dw[c, W−1−ℓ] = Σ_t dz[t, c] · k[t − ℓ, c] over each sequence; items are channel groups. */
export function kconvDwKernel(a: KconvBackwardArgs, claim: Claim): void {
  const g = a.geo;
  const C = g.Hkv * g.D;
  const W = a.W;
  const acc = new Float64Array(KCONV_CHANNELS * W); // [channel, ℓ]
  const row = new Float64Array(W);
  for (let item = claim(); item >= 0; item = claim()) {
    const c0 = item * KCONV_CHANNELS;
    const nc = Math.min(KCONV_CHANNELS, C - c0);
    acc.fill(0);
    for (let s = 0; s < g.seqStart.length; s++) {
      const s0 = g.seqStart[s];
      for (let t = s0; t < s0 + g.seqLen[s]; t++) {
        for (let l = 0; l < W && t - l >= s0; l++) {
          const zo = t * C + c0;
          const ko = (t - l) * C + c0;
          for (let c = 0; c < nc; c++) acc[c * W + l] += a.dz[zo + c] * a.k[ko + c];
        }
      }
    }
    // -- dw[c, W−1−ℓ] = acc[c, ℓ] (PyTorch tap order), rounded to the weight's dtype --
    for (let c = 0; c < nc; c++) {
      for (let l = 0; l < W; l++) row[W - 1 - l] = acc[c * W + l];
      storeRow(a.dw, (c0 + c) * W, row, 0, W, 1, a.wDtype);
    }
  }
}

/** Workspace bytes of a kconv call (backward: dz, dk and dkOut copies, the transposed weight and dw). */
export function kconvWorkspaceBytes(p: CheckedKconv): number {
  return 3 * p.T * p.C * 4 + 4 * p.C * p.W;
}

/** Kernel arguments: tiles over the tokens and the weight transposed, wT[ℓ, c] = weight[c, W−1−ℓ]. */
function kconvArgs(cpu: Cpu, p: CheckedKconv, k: Float32Array, w: Float32Array, layout: Layout): KconvArgs {
  const { T, C, W } = p;
  const wT = cpu.mem.f32(W * C); // [W, C]
  for (let c = 0; c < C; c++) for (let l = 0; l < W; l++) wT[l * C + c] = w[c * W + (W - 1 - l)];
  const geo = geometry({ T, Hq: p.Hkv, Hkv: p.Hkv, D: p.D }, sequences(layout, KEY_TILE), KEY_TILE);
  return { geo, k, wT, W, dtype: p.dtype };
}

/** The kconv stage: k' `[T, Hkv, D]`, one token tile per item. */
export async function kconv(cpu: Cpu, p: CheckedKconv, k: Float32Array, w: Float32Array, layout: Layout): Promise<Float32Array> {
  const args = kconvArgs(cpu, p, k, w, layout);
  const out = cpu.mem.f32(p.T * p.C); // [T, Hkv, D]
  await cpu.pool.run('kconv', { ...args, out }, args.geo.nTiles, 2 * p.T * p.C * p.W);
  return out;
}

/** The kconv backward: dz per token tile, then dk per token tile, then dw per group of channels. */
export async function kconvBackward(cpu: Cpu, p: CheckedKconv, k: Float32Array, w: Float32Array, dkOut: Float32Array, layout: Layout): Promise<{ dk: Float32Array; dw: Float32Array }> {
  const { T, C, W } = p;
  const a = {
    ...kconvArgs(cpu, p, k, w, layout), dkOut, wDtype: p.wDtype,
    dz: cpu.mem.f32(T * C), dk: cpu.mem.f32(T * C), dw: cpu.mem.f32(C * W), // [T, C], [T, C], [C, W]
  };
  await cpu.pool.run('kconvDz', a, a.geo.nTiles, 2 * T * C * W);
  await cpu.pool.run('kconvDk', a, a.geo.nTiles, 2 * T * C * W);
  await cpu.pool.run('kconvDw', a, Math.ceil(C / KCONV_CHANNELS), 2 * T * C * W);
  return { dk: a.dk, dw: a.dw };
}
