/**
 * What the stage launchers (route.ts, collect.ts, forward.ts, pack.ts, backward.ts, kconv.ts) share without
 * importing each other: problem dims, the collected routing's layout, the passes of the attention ops and the
 * sizes derived from them, and the signature of the pack pass the attention stages are handed.
 */
/// <reference types="@webgpu/types" />
import { MobaError, fmtBytes } from '@moba/core';
import type { BufferLimits } from './buffers.js';
import type { Geometry } from './geometry.js';
import type { StorageKind } from './storage.wgsl.js';

export const F32 = 4;

export interface Dims {
  readonly T: number;
  readonly Hq: number;
  readonly Hkv: number;
  readonly D: number;
}

export interface AttnConfig {
  readonly blockSize: number;
  readonly topk: number;
  readonly causal: boolean;
  readonly scale: number;
}

/** Workgroup size of the merge, dQ and pack kernels. */
export const ATTN_WG = 64;
/** Keys per dK/dV workgroup (backward-dkdv.wgsl.ts) and per dQ partial of an entry. */
export const DKDV_KEYS = 64;
/**
 * Query rows per chunk of the collected lists (the forward's workgroup rows, and the rows of the attention
 * geometry's tiles; passes are cut at chunk starts).
 */
export const CHUNK_ROWS = 64;

/**
 * One pass of the attention kernels: query heads [hLo, hHi) and, of their collected entries, those whose chunk
 * starts in [e0, e0 + cap) counted from the heads' first entry (`whole`: all of them). Passes exist only so
 * that the per-entry partials fit one storage binding: usually one pass holds every head.
 */
export interface Pass {
  readonly hLo: number;
  readonly hHi: number;
  readonly e0: number;
  readonly cap: number;
  readonly whole: boolean;
  /** Workgroups for the pass's chunks: an upper bound (extra ones return at once). */
  readonly groups: number;
}

/**
 * Word offsets of the collected routing (collect.wgsl.ts), one u32 buffer kept with the routing:
 * offsets [nLists + 1] | chunkOff [nLists + 1] | rows [maxEntries] | entryOf [T·Hq·topk] | chunks [2 · maxChunks] |
 * geometry (geometry.ts; a routing is tied to one layout and block size, so its geometry is fixed).
 * List `h · totalBlocks + g` holds the ascending query rows of head h that chose global block g; entry e is a
 * position in `rows`; `entryOf[(t·Hq + h)·topk + s]` is the entry of row t's slot s; chunk c = (list, first
 * entry) covers up to CHUNK_ROWS entries (query rows) of one list. The attention kernels read the geometry from
 * here, which saves them a binding.
 */
export interface CollectedLayout {
  readonly nLists: number;
  readonly maxEntries: number;
  readonly maxChunks: number;
  readonly chunkOffOff: number;
  readonly rowsOff: number;
  readonly entryOfOff: number;
  readonly chunksOff: number;
  readonly geoOff: number;
  readonly words: number;
  /** The geometry with its offsets counted from the start of this buffer (for Params). */
  readonly geo: Geometry;
}

/** The collected layout of a routing whose geometry has tiles of CHUNK_ROWS rows. */
export function collectedLayout(T: number, Hq: number, topk: number, geometry: Geometry): CollectedLayout {
  const totalBlocks = geometry.totalBlocks;
  const nLists = Hq * totalBlocks;
  const maxEntries = T * Hq * topk;
  const maxChunks = Math.floor(maxEntries / CHUNK_ROWS) + nLists; // Σ ceil(n / CHUNK_ROWS) over the lists
  const chunkOffOff = nLists + 1;
  const rowsOff = 2 * (nLists + 1);
  const entryOfOff = rowsOff + maxEntries;
  const chunksOff = entryOfOff + maxEntries;
  const geoOff = chunksOff + 2 * maxChunks;
  const g = geometry;
  const geo = {
    ...g, seqsOff: g.seqsOff + geoOff, rowSeqOff: g.rowSeqOff + geoOff, qTilesOff: g.qTilesOff + geoOff, blocksOff: g.blocksOff + geoOff,
    qShiftOff: g.qk ? g.qShiftOff + geoOff : 0,
  };
  return { nLists, maxEntries, maxChunks, chunkOffOff, rowsOff, entryOfOff, chunksOff, geoOff, words: geoOff + g.words.length, geo };
}

/**
 * The override that specializes an attention kernel for fewer queries than keys (QK in common.wgsl.ts): set for
 * such a routing only, so self-attention runs its own pipelines with the row shift folded to 0.
 */
export function qkConstant(lists: CollectedLayout): Record<string, number> {
  return lists.geo.qk ? { QK: 1 } : {};
}

/** Bytes the partials of one pass may take in a buffer that also holds `besides` bytes: the limits, or `partialBytes` (tuning). */
export function partialLimit(limits: BufferLimits, besides = 0, partialBytes = Infinity): number {
  return Math.min(Math.min(limits.maxStorageBufferBindingSize, limits.maxBufferSize) - besides, partialBytes);
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

/** dQ partials per collected entry: one per 64-key sub-tile of a block. */
export function subTiles(blockSize: number): number {
  return Math.ceil(blockSize / DKDV_KEYS);
}

/**
 * Bytes of the f32 window [T, D] that holds one head's running out (forward) or dq (backward) between passes:
 * only for 16-bit storage with passes over parts of a head (f32 outputs hold it themselves); else 0.
 */
export function headWindowBytes(kind: StorageKind, passes: readonly Pass[], T: number, D: number): number {
  return kind !== 'f32' && passes.some((p) => !p.whole) ? T * D * 4 : 0;
}

/** Heads [hLo, hHi) of an f32 window [T, accHeads, D], packed into [T, Hq, D]. */
export interface PackFields {
  readonly T: number;
  readonly Hq: number;
  readonly D: number;
  readonly hLo: number;
  readonly hHi: number;
  readonly accHeads: number;
}

/**
 * Encodes the pack pass (pack.ts) of the f32 window `acc` into `dst` in the op's storage kind: handed to the
 * attention stages, which pack their windows between passes.
 */
export type Packer = (acc: GPUBuffer, dst: GPUBuffer, f: PackFields) => void;
