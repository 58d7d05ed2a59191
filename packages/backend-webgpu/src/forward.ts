/**
 * Forward launcher: per pass (Pass in launch.ts; usually one), the chunk kernel (forward.wgsl.ts: one
 * workgroup per chunk of a collected list, writing a partial per (row, slot)) then the merge
 * (forward-merge.wgsl.ts: out [T, Hq, D], then lse [T, Hq]). Outputs of f16/bf16 problems are then rounded to
 * their dtype (round.wgsl.ts).
 */
/// <reference types="@webgpu/types" />
import { type DType, MobaError, fmtBytes } from '@moba/core';
import type { ShaderSpec } from './device.js';
import { forwardMergeWgsl } from './forward-merge.wgsl.js';
import { forwardWgsl } from './forward.wgsl.js';
import { CHUNK_ROWS, type CollectedLayout, type Launch, type Pass, type Tiles } from './launch.js';
import { roundWgsl } from './round.wgsl.js';
import type { Dims } from './route.js';

const FORWARD = [false, true].map((prefetch) => [1, 2, 4].map((oc4): ShaderSpec => ({
  name: `moba.forward${oc4}${prefetch ? 'p' : ''}`, code: forwardWgsl(oc4, prefetch), bindings: ['uniform', 'read', 'read', 'read', 'read', 'rw'],
})));
const MERGE: ShaderSpec = { name: 'moba.forward-merge', code: forwardMergeWgsl, bindings: ['uniform', 'read', 'read', 'read', 'rw', 'rw', 'rw'] };
const ROUND: ShaderSpec = { name: 'moba.round', code: roundWgsl, bindings: ['uniform', 'rw'] };
export const ATTN_WG = 64;

export interface AttnConfig {
  readonly blockSize: number;
  readonly topk: number;
  readonly causal: boolean;
  readonly scale: number;
}

/**
 * The passes of an attention op whose partials take `floatsPerEntry` f32 per collected entry, within `maxBytes`
 * per buffer: as many whole heads per pass as fit (usually all), else one head in entry ranges.
 */
export function planPasses(dims: { T: number; Hq: number; topk: number; totalBlocks: number }, floatsPerEntry: number, maxBytes: number): Pass[] {
  const perHead = dims.T * dims.topk; // entries of one head, at most
  const chunksPerHead = Math.floor(perHead / CHUNK_ROWS) + dims.totalBlocks;
  const fit = Math.floor(maxBytes / (4 * floatsPerEntry)) - CHUNK_ROWS;
  if (fit < 1) {
    throw new MobaError('E_MEMORY', `one pass needs ${fmtBytes((CHUNK_ROWS + 1) * floatsPerEntry * 4)} of partials, over this device's limit of ${fmtBytes(Math.max(0, maxBytes))} per storage binding`, 'workspace');
  }
  const passes: Pass[] = [];
  if (fit >= perHead) {
    const heads = Math.min(dims.Hq, Math.floor(fit / perHead));
    for (let hLo = 0; hLo < dims.Hq; hLo += heads) {
      const hHi = Math.min(dims.Hq, hLo + heads);
      passes.push({ hLo, hHi, e0: 0, cap: Math.max(1, (hHi - hLo) * perHead), whole: true, groups: (hHi - hLo) * chunksPerHead });
    }
    return passes;
  }
  const groups = Math.min(chunksPerHead, Math.ceil(fit / CHUNK_ROWS) + dims.totalBlocks);
  for (let h = 0; h < dims.Hq; h++) {
    for (let e0 = 0; e0 < perHead; e0 += fit) passes.push({ hLo: h, hHi: h + 1, e0, cap: fit, whole: false, groups });
  }
  return passes;
}

/** The head dim of per-entry partials: D padded to a multiple of 4 (paddedD() in common.wgsl.ts). */
export function paddedD(D: number): number {
  return Math.ceil(D / 4) * 4;
}

/** f32 per entry of the forward's partials: o (padded head dim), m, l. */
export function forwardPartialFloats(D: number): number {
  return paddedD(D) + 2;
}

/** Bytes of the forward's partial buffer for `passes`. */
export function forwardPartialBytes(passes: readonly Pass[], D: number): number {
  return (Math.max(...passes.map((p) => p.cap)) + CHUNK_ROWS) * forwardPartialFloats(D) * 4;
}

export function encodeForward(
  l: Launch, dims: Dims, cfg: AttnConfig, tiles: Tiles, lists: CollectedLayout, passes: readonly Pass[],
  b: { q: GPUBuffer; k: GPUBuffer; v: GPUBuffer; indices: GPUBuffer; collected: GPUBuffer; out: GPUBuffer; lse: GPUBuffer },
): void {
  const { T, D } = dims;
  const part = l.temp('forward partials', forwardPartialBytes(passes, D));
  const run = l.temp('forward running max and sums', passes.some((p) => !p.whole) ? 2 * T * dims.Hq * 4 : 16);
  const shader = FORWARD[tiles.forwardPrefetch === false ? 0 : 1]![Math.log2(tiles.oc4)]!;
  const { DK, VK, PH, STAGE4 } = tiles.forward;
  for (const pass of passes) {
    const fields = { ...dims, ...cfg, geo: lists.geo, lists, pass };
    const rows = T * (pass.hHi - pass.hLo); // the merge covers the pass's heads only
    l.add(shader, 'main', { DK, VK, PH, STAGE4 }, fields, [b.q, b.k, b.v, b.collected, part], pass.groups);
    const merge = [b.indices, b.collected, part, b.out, b.lse, run];
    l.add(MERGE, 'main', { WG: ATTN_WG, CM: CHUNK_ROWS }, fields, merge, Math.ceil((rows * paddedD(D) / 4) / ATTN_WG));
    l.add(MERGE, 'stats', { WG: ATTN_WG, CM: CHUNK_ROWS }, fields, merge, Math.ceil(rows / ATTN_WG));
  }
}

/** Rounds `n` f32 values of `buf` to `dtype` in place (nothing for f32). */
export function encodeRound(l: Launch, buf: GPUBuffer, n: number, dtype: DType): void {
  if (dtype === 'f32' || n === 0) return;
  l.add(ROUND, 'main', { WG: ATTN_WG }, { nItems: n, mode: dtype === 'f16' ? 1 : 2 }, [buf], Math.ceil(n / ATTN_WG));
}
