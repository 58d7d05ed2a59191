/**
 * Forward launcher: per pass (Pass in launch.ts; usually one), the chunk kernel (forward.wgsl.ts: one
 * workgroup per chunk of a collected list, writing a partial per (row, slot)) then the merge
 * (forward-merge.wgsl.ts: out [T, Hq, D] in its dtype's storage, then lse [T, Hq] f32). A 16-bit out whose head
 * is split across passes keeps the head's running state in an f32 window [T, D], packed after its last pass
 * (pack.wgsl.ts).
 */
/// <reference types="@webgpu/types" />
import { MobaError, fmtBytes } from '@moba/core';
import { forwardMergeWgsl } from './forward-merge.wgsl.js';
import { forwardWgsl } from './forward.wgsl.js';
import { CHUNK_ROWS, type CollectedLayout, type Launch, type Pass, type Tiles, shaderVariant } from './launch.js';
import { packWgsl } from './pack.wgsl.js';
import type { Dims } from './route.js';
import type { StorageKind } from './storage.wgsl.js';

const FORWARD_BINDINGS = ['uniform', 'read', 'read', 'read', 'read', 'rw'] as const;
const MERGE_BINDINGS = ['uniform', 'read', 'read', 'read', 'rw', 'rw', 'rw'] as const;
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

/**
 * Bytes of the f32 window [T, D] that holds one head's running out (forward) or dq (backward) between passes:
 * only for 16-bit storage with passes over parts of a head (f32 outputs hold it themselves); else 0.
 */
export function headWindowBytes(kind: StorageKind, passes: readonly Pass[], T: number, D: number): number {
  return kind !== 'f32' && passes.some((p) => !p.whole) ? T * D * 4 : 0;
}

export function encodeForward(
  l: Launch, dims: Dims, kind: StorageKind, cfg: AttnConfig, tiles: Tiles, lists: CollectedLayout, passes: readonly Pass[],
  b: { q: GPUBuffer; k: GPUBuffer; v: GPUBuffer; indices: GPUBuffer; collected: GPUBuffer; out: GPUBuffer; lse: GPUBuffer },
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
    l.add(shader, 'main', { DK, VK, PH, STAGE4 }, fields, [b.q, b.k, b.v, b.collected, part], pass.groups);
    const bufs = [b.indices, b.collected, part, window ?? b.out, b.lse, run];
    l.add(merge, 'main', { WG: ATTN_WG, CM: CHUNK_ROWS }, fields, bufs, Math.ceil((rows * paddedD(D) / 4) / ATTN_WG));
    l.add(merge, 'stats', { WG: ATTN_WG, CM: CHUNK_ROWS }, fields, bufs, Math.ceil(rows / ATTN_WG));
    // a window holds one head (passes over parts of a head hold one head each): packed after its last pass
    if (window && passes[p + 1]?.hLo !== pass.hLo) encodePack(l, kind, window, b.out, { T, Hq: dims.Hq, D, hLo: pass.hLo, hHi: pass.hHi, accHeads: 1 });
  });
}

/**
 * Packs heads [hLo, hHi) of the f32 window `acc` [T, accHeads, D] into `dst` [T, Hq, D] stored as `kind`, and
 * clears them in the window (pack.wgsl.ts).
 */
export function encodePack(
  l: Launch, kind: StorageKind, acc: GPUBuffer, dst: GPUBuffer, f: { T: number; Hq: number; D: number; hLo: number; hHi: number; accHeads: number },
): void {
  const shader = shaderVariant(`moba.pack.${kind}`, ['uniform', 'rw', 'rw'], () => packWgsl(kind));
  const pass = { hLo: f.hLo, hHi: f.hHi, e0: 0, cap: 0, whole: true, groups: 0 };
  const n = f.T * (f.hHi - f.hLo) * f.D;
  l.add(shader, 'main', { WG: ATTN_WG }, { T: f.T, Hq: f.Hq, D: f.D, accHeads: f.accHeads, pass }, [acc, dst], Math.ceil(n / ATTN_WG));
}
