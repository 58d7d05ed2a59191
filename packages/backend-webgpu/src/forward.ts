/**
 * Forward launcher: per pass (Pass in shapes.ts; usually one), the chunk kernel (forward.wgsl.ts: one
 * workgroup per chunk of a collected list, writing a partial per (row, slot)) then the merge
 * (forward-merge.wgsl.ts: out [T, Hq, D] in its dtype's storage, then lse [T, Hq] f32). A 16-bit out whose head
 * is split across passes keeps the head's running state in an f32 window [T, D], packed after its last pass
 * (the pack pass, handed in: pack.ts).
 */
/// <reference types="@webgpu/types" />
import type { DType } from '@moba/core';
import type { BufferLimits } from './buffers.js';
import { forwardMergeWgsl } from './forward-merge.wgsl.js';
import { forwardWgsl } from './forward.wgsl.js';
import { type Launch, type Tiles, shaderVariant } from './launch.js';
import {
  ATTN_WG, type AttnConfig, CHUNK_ROWS, type CollectedLayout, type Dims, F32, type Packer, type Pass,
  headWindowBytes, paddedD, partialLimit, planPasses, qkConstant,
} from './shapes.js';
import { type StorageKind, storageBytes } from './storage.wgsl.js';

const FORWARD_BINDINGS = ['uniform', 'read', 'read', 'read', 'read', 'rw'] as const;
const MERGE_BINDINGS = ['uniform', 'read', 'read', 'read', 'rw', 'rw', 'rw'] as const;

/**
 * The passes and the bytes of every buffer (0: not allocated) of forward: out (in its dtype), lse, the partials
 * of a pass, a 16-bit out's window. Checked against the device's limits before anything is allocated.
 */
export function forwardPlan(s: Dims & { dtype: DType }, topk: number, totalBlocks: number, limits: BufferLimits, partialBytes?: number) {
  const { T, Hq, D, dtype } = s;
  const passes = planPasses({ T, Hq, topk, totalBlocks }, forwardPartialFloats(D), partialLimit(limits, 0, partialBytes));
  const bytes = {
    out: storageBytes(T * Hq * D, dtype), lse: T * Hq * F32, partials: forwardPartialBytes(passes, D),
    'out window': headWindowBytes(dtype, passes, T, D),
  };
  return { passes, bytes };
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
  l: Launch, dims: Dims, kind: StorageKind, cfg: AttnConfig, tiles: Tiles, lists: CollectedLayout, passes: readonly Pass[],
  b: { q: GPUBuffer; k: GPUBuffer; v: GPUBuffer; indices: GPUBuffer; collected: GPUBuffer; out: GPUBuffer; lse: GPUBuffer }, pack: Packer,
): void {
  const { T, D } = dims;
  const part = l.temp('forward partials', forwardPartialBytes(passes, D));
  const run = l.temp('forward running max and sums', passes.some((p) => !p.whole) ? 2 * T * dims.Hq * 4 : 16);
  const windowBytes = headWindowBytes(kind, passes, T, D);
  const window = windowBytes > 0 ? l.temp('forward out window', windowBytes) : null;
  const shader = shaderVariant(`moba.forward${tiles.oc4}.${kind}`, FORWARD_BINDINGS, () => forwardWgsl(tiles.oc4, kind));
  const merge = shaderVariant(`moba.forward-merge.${kind}${window ? '.window' : ''}`, MERGE_BINDINGS, () => forwardMergeWgsl(kind, !!window));
  const { DK, VK, PH, STAGE4 } = tiles.forward;
  passes.forEach((pass, p) => {
    const fields = { ...dims, ...cfg, geo: lists.geo, lists, pass, accHeads: 1 };
    const rows = T * (pass.hHi - pass.hLo); // the merge covers the pass's heads only
    l.add(shader, 'main', { DK, VK, PH, STAGE4, ...qkConstant(lists) }, fields, [b.q, b.k, b.v, b.collected, part], pass.groups);
    const bufs = [b.indices, b.collected, part, window ?? b.out, b.lse, run];
    l.add(merge, 'main', { WG: ATTN_WG, CM: CHUNK_ROWS }, fields, bufs, Math.ceil((rows * paddedD(D) / 4) / ATTN_WG));
    l.add(merge, 'stats', { WG: ATTN_WG, CM: CHUNK_ROWS }, fields, bufs, Math.ceil(rows / ATTN_WG));
    // a window holds one head (passes over parts of a head hold one head each): packed after its last pass
    if (window && passes[p + 1]?.hLo !== pass.hLo) pack(window, b.out, { T, Hq: dims.Hq, D, hLo: pass.hLo, hHi: pass.hHi, accHeads: 1 });
  });
}
