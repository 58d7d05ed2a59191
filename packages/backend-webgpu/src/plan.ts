/**
 * Buffer planning of route, forward and backward: the passes and the byte size of every buffer an op allocates,
 * checked against the device's binding limits before anything is allocated (E_MEMORY). Pure functions of the
 * problem and the limits, so that a configuration can be checked without a GPU (test/plan.test.ts), with
 * `checkBufferSizes` (device.ts).
 */
import type { DType } from '@moba/core';
import { backwardWorkWords, dqSharesOffset, kvWindowHeads, subTiles } from './backward.js';
import type { BufferLimits } from './device.js';
import { forwardPartialBytes, forwardPartialFloats, headWindowBytes, paddedD, planPasses } from './forward.js';
import type { Geometry } from './geometry.js';
import type { CollectedLayout } from './launch.js';
import { collectScratchBytes } from './route.js';
import { storageBytes } from './storage.wgsl.js';

const F32 = 4;

export interface AttnShape {
  readonly T: number;
  readonly Hq: number;
  readonly Hkv: number;
  readonly D: number;
  readonly dtype: DType;
}

/** Bytes the partials of one pass may take in a buffer that also holds `besides` bytes: the limits, or `partialBytes` (tuning). */
export function partialLimit(limits: BufferLimits, besides = 0, partialBytes = Infinity): number {
  return Math.min(Math.min(limits.maxStorageBufferBindingSize, limits.maxBufferSize) - besides, partialBytes);
}

/** Sizes of the collect buffers (made by the first forward or backward of a routing). */
export function collectBytes(lists: CollectedLayout): Record<string, number> {
  const scratch = collectScratchBytes(lists);
  return { collected: lists.words * 4, 'collect counters': scratch.counters, 'collect scratch': scratch.scratch };
}

/** The buffers of route: geometry, centroids, indices. */
export function routeBytes(s: AttnShape, topk: number, geo: Geometry): Record<string, number> {
  return { geometry: geo.words.byteLength, centroids: geo.totalBlocks * s.Hkv * s.D * F32, indices: s.T * s.Hq * topk * 4 };
}

/**
 * The passes and the bytes of every buffer (0: not allocated; collect buffers aside) of forward: out (in its
 * dtype), lse, the partials of a pass, a 16-bit out's window.
 */
export function forwardPlan(s: AttnShape, topk: number, totalBlocks: number, limits: BufferLimits, partialBytes?: number) {
  const { T, Hq, D, dtype } = s;
  const passes = planPasses({ T, Hq, topk, totalBlocks }, forwardPartialFloats(D), partialLimit(limits, 0, partialBytes));
  const bytes = {
    out: storageBytes(T * Hq * D, dtype), lse: T * Hq * F32, partials: forwardPartialBytes(passes, D),
    'out window': headWindowBytes(dtype, passes, T, D),
  };
  return { passes, bytes };
}

/**
 * The passes and the bytes of every buffer (0: not allocated; collect buffers aside) of backward: work ((lse, Δ)
 * then a pass's dQ shares), dq, dk, dv (in their dtype), and the f32 windows of 16-bit sums carried across passes.
 */
export function backwardPlan(s: AttnShape, cfg: { topk: number; blockSize: number }, totalBlocks: number, limits: BufferLimits, partialBytes?: number) {
  const { T, Hq, Hkv, D, dtype } = s;
  const shares = subTiles(cfg.blockSize) * paddedD(D);
  const passes = planPasses({ T, Hq, topk: cfg.topk, totalBlocks }, shares, partialLimit(limits, dqSharesOffset(T, Hq) * F32, partialBytes));
  const kvWindow = kvWindowHeads(dtype, passes, Hq / Hkv);
  const bytes = {
    work: backwardWorkWords(s, cfg.blockSize, passes) * F32, dq: storageBytes(T * Hq * D, dtype), 'dk, dv': storageBytes(T * Hkv * D, dtype),
    'dq window': headWindowBytes(dtype, passes, T, D), 'dk, dv windows': T * kvWindow * D * F32,
  };
  return { passes, bytes };
}
