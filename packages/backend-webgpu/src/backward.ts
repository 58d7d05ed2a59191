/**
 * Backward launchers (SPEC §5): the Δ pass (lse, Δ) → per pass, dK/dV per 64-key tile over the collected
 * lists, which also stores each (entry, tile)'s dQ partial → the dQ merge in slot order. No float atomics, so
 * results are bitwise reproducible. Passes exist only so that the dQ partials fit one storage binding.
 * dq, dk, dv are written in their dtype's storage. Sums a 16-bit output carries across passes go through f32
 * windows (accIndex in common.wgsl.ts), packed once complete (the pack pass, handed in: pack.ts): dq of a head split across passes
 * ([T, D]), and dk/dv whenever there are several passes ([T, kvWindow, D], the kv heads one pass touches).
 */
/// <reference types="@webgpu/types" />
import type { DType } from '@moba/core';
import { backwardDkdvWgsl } from './backward-dkdv.wgsl.js';
import { dqMergeWgsl } from './dq-merge.wgsl.js';
import type { BufferLimits } from './buffers.js';
import { deltaWgsl } from './delta.wgsl.js';
import { type Launch, type Tiles, shaderVariant } from './launch.js';
import type { ShaderSpec } from './pipelines.js';
import {
  ATTN_WG, type AttnConfig, CHUNK_ROWS, type CollectedLayout, type Dims, F32, type Packer, type Pass,
  headWindowBytes, paddedD, partialLimit, planPasses, qkConstant, subTiles,
} from './shapes.js';
import { type StorageKind, storageBytes } from './storage.wgsl.js';

const DELTA_BINDINGS = ['uniform', 'read', 'read', 'read', 'rw'] as const;
const DKDV_BINDINGS = ['uniform', 'read', 'read', 'read', 'read', 'read', 'rw', 'rw', 'rw'] as const;
const DQ_BINDINGS = ['uniform', 'read', 'read', 'read', 'rw'] as const;
/** Dims with the key rows apart: T query rows (q, dOut, out, lse, dq), Tk key rows (k, v, dk, dv; absent: T). */
export interface KeyDims extends Dims {
  readonly Tk?: number;
}

/** Rows per Δ workgroup (delta.wgsl.ts). */
const DELTA_ROWS = 16;

/** The kv heads [lo, hi) whose query heads a pass holds. */
function kvRange(pass: Pass, group: number): [number, number] {
  return [Math.floor(pass.hLo / group), Math.ceil(pass.hHi / group)];
}

/**
 * Kv heads of the f32 dk/dv windows: 0 (dk, dv written directly) for f32 storage or one pass, else the most kv
 * heads one pass touches (a kv head's sums stay in the window until its last pass, then are packed).
 */
export function kvWindowHeads(kind: StorageKind, passes: readonly Pass[], group: number): number {
  if (kind === 'f32' || passes.length < 2) return 0;
  return Math.max(...passes.map((p) => kvRange(p, group)).map(([lo, hi]) => hi - lo));
}

/** The dK/dV pipeline for the chosen shape (all template constants); `acc`: dk, dv are f32 windows. */
function dkdvShader(tiles: Tiles, kind: StorageKind, acc: boolean): ShaderSpec {
  const s = tiles.dkdv;
  return shaderVariant(`moba.backward-dkdv${s.oc4}x${s.rw}-${s.dk}.${s.rc}.${s.vk}.${kind}${acc ? '.window' : ''}`, DKDV_BINDINGS, () => backwardDkdvWgsl(s, kind, acc));
}

/** Word offset of the dQ partials in `work`: after (lse, Δ) [T, Hq, 2], on a vec4 (dqPartialsOffset() in the shaders). */
export function dqPartialsOffset(T: number, Hq: number): number {
  return Math.ceil((2 * T * Hq) / 4) * 4;
}

/** f32 words of `work`: (lse, Δ) [T, Hq, 2], then the dQ partials of one pass ([entry, tile, paddedD]). */
export function backwardWorkWords(dims: Dims, blockSize: number, passes: readonly Pass[]): number {
  return dqPartialsOffset(dims.T, dims.Hq) + (Math.max(...passes.map((p) => p.cap)) + CHUNK_ROWS) * subTiles(blockSize) * paddedD(dims.D);
}

/**
 * The passes and the bytes of every buffer (0: not allocated) of backward: work ((lse, Δ) then a pass's dQ
 * partials), dq, dk, dv (in their dtype), and the f32 windows of 16-bit sums carried across passes. Checked
 * against the device's limits before anything is allocated.
 */
export function backwardPlan(s: KeyDims & { dtype: DType }, cfg: { topk: number; blockSize: number }, totalBlocks: number, limits: BufferLimits, partialBytes?: number) {
  const { T, Hq, Hkv, D, dtype } = s;
  const Tk = s.Tk ?? T;
  const partials = subTiles(cfg.blockSize) * paddedD(D);
  const passes = planPasses({ T, Hq, topk: cfg.topk, totalBlocks }, partials, partialLimit(limits, dqPartialsOffset(T, Hq) * F32, partialBytes));
  const kvWindow = kvWindowHeads(dtype, passes, Hq / Hkv);
  const bytes = {
    work: backwardWorkWords(s, cfg.blockSize, passes) * F32, dq: storageBytes(T * Hq * D, dtype), 'dk, dv': storageBytes(Tk * Hkv * D, dtype),
    'dq window': headWindowBytes(dtype, passes, T, D), 'dk, dv windows': Tk * kvWindow * D * F32,
  };
  return { passes, bytes };
}

export interface BackwardBuffers {
  readonly q: GPUBuffer;
  readonly k: GPUBuffer;
  readonly v: GPUBuffer;
  readonly out: GPUBuffer;
  readonly lse: GPUBuffer;
  readonly dOut: GPUBuffer;
  readonly indices: GPUBuffer;
  readonly collected: GPUBuffer;
  /** (lse, Δ) [T, Hq, 2] then the dQ partials (backwardWorkWords). */
  readonly work: GPUBuffer;
  readonly dq: GPUBuffer;
  /** [Tk, Hkv, D] each; must be zero (fresh): every pass adds to them (or stores packed words into them). */
  readonly dk: GPUBuffer;
  readonly dv: GPUBuffer;
}

export function encodeBackward(
  l: Launch, dims: KeyDims, kind: StorageKind, cfg: AttnConfig, tiles: Tiles, lists: CollectedLayout, passes: readonly Pass[], b: BackwardBuffers, pack: Packer,
): void {
  const { T, Hq, Hkv, D } = dims;
  const Tk = dims.Tk ?? T;
  const group = Hq / Hkv;
  const kvWin = kvWindowHeads(kind, passes, group);
  const dqWinBytes = headWindowBytes(kind, passes, T, D);
  const dqWin = dqWinBytes > 0 ? l.temp('dq window', dqWinBytes) : null;
  const dkWin = kvWin > 0 ? l.temp('dk window', Tk * kvWin * D * 4) : null;
  const dvWin = kvWin > 0 ? l.temp('dv window', Tk * kvWin * D * 4) : null;
  const fields = { T, Hq, Hkv, D, ...cfg, geo: lists.geo, lists };
  const delta = shaderVariant(`moba.delta.${kind}`, DELTA_BINDINGS, () => deltaWgsl(kind));
  l.add(delta, 'main', {}, fields, [b.out, b.dOut, b.lse, b.work], Math.ceil((T * Hq) / DELTA_ROWS));
  const dkdv = dkdvShader(tiles, kind, kvWin > 0);
  const dq = shaderVariant(`moba.dq-merge.${kind}${dqWin ? '.window' : ''}`, DQ_BINDINGS, () => dqMergeWgsl(kind, !!dqWin));
  const tilesPerHead = lists.geo.totalBlocks * subTiles(cfg.blockSize);
  let kvDone = 0; // kv heads [0, kvDone) are packed
  passes.forEach((pass, p) => {
    const [kLo, kHi] = kvRange(pass, group);
    l.add(dkdv, 'main', qkConstant(lists), { ...fields, pass, nItems: tilesPerHead, accHeads: kvWin },
      [b.q, b.k, b.v, b.dOut, b.collected, dkWin ?? b.dk, dvWin ?? b.dv, b.work], tilesPerHead, kHi - kLo);
    l.add(dq, 'main', { WG: ATTN_WG, CM: CHUNK_ROWS }, { ...fields, pass, accHeads: 1 }, [b.indices, b.collected, b.work, dqWin ?? b.dq],
      Math.ceil((T * (pass.hHi - pass.hLo) * paddedD(D) / 4) / ATTN_WG));
    const next = passes[p + 1];
    if (dqWin && next?.hLo !== pass.hLo) pack(dqWin, b.dq, { T, Hq, D, hLo: pass.hLo, hHi: pass.hHi, accHeads: 1 });
    // kv heads whose last pass this is: those before the next pass's first
    const complete = next ? kvRange(next, group)[0] : Hkv;
    if (dkWin && dvWin && complete > kvDone) {
      for (const [win, dst] of [[dkWin, b.dk], [dvWin, b.dv]] as const) {
        pack(win, dst, { T: Tk, Hq: Hkv, D, hLo: kvDone, hHi: complete, accHeads: kvWin });
      }
      kvDone = complete;
    }
  });
}
