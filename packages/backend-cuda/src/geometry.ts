/**
 * Launch geometry of every kernel (grid, block, dynamic shared memory) and the device limits it must
 * respect. Pure: unit-tested without a GPU. The constants mirror the `.cu` files (ROUTE_ROWS, warps per
 * CTA, MAX_DPL, MAX_EPT) and must change together with them.
 */
import { MobaError } from '@moba/core';

export interface Launch {
  readonly grid: readonly [number, number, number];
  readonly block: readonly [number, number, number];
  /** Dynamic shared memory bytes. */
  readonly shared: number;
}

export const LIMITS = Object.freeze({
  maxGridX: 2 ** 31 - 1,
  maxGridYZ: 65535,
  maxThreads: 1024,
  /** Dynamic shared memory usable without opting in (cuFuncSetAttribute). */
  sharedDefault: 48 * 1024,
  /** CTAs of a grid-stride kernel: enough to fill any GPU many times over. */
  gridStrideCap: 1 << 22,
});

/** Kernel constants shared with the .cu sources. */
export const K = Object.freeze({
  routeRows: 16, // route.cu ROUTE_ROWS
  routeThreads: 128, // route.cu ROUTE_WARPS * 32
  rowWarps: 4, // forward.cu FWD_WARPS, backward.cu BWD_WARPS
  maxHeadDim: 256, // 8 dims per lane (MAX_DPL)
  maxTopk: 64, // route.cu sel[64]
  maxEpt: 32, // backward.cu MAX_EPT: dK/dV elements per thread
  scanThreads: 1024,
  scatterThreads: 256,
  elementThreads: 256,
  dwThreads: 256, // kconv.cu red[256]
  centroidThreads: 128,
});

const f32 = 4;

function check(what: string, launch: Launch): Launch {
  const [gx, gy, gz] = launch.grid;
  const [bx, by, bz] = launch.block;
  const ok = [gx, gy, gz, bx, by, bz].every((x) => Number.isInteger(x) && x >= 1) && gx <= LIMITS.maxGridX && gy <= LIMITS.maxGridYZ &&
    gz <= LIMITS.maxGridYZ && bx * by * bz <= LIMITS.maxThreads && launch.shared <= LIMITS.sharedDefault && launch.shared >= 0;
  if (!ok) {
    throw new MobaError('E_UNSUPPORTED', `launch of ${what} exceeds the device limits: grid [${launch.grid.join(', ')}], block [${launch.block.join(', ')}], shared ${launch.shared} B`, 'launch');
  }
  return launch;
}

/** A grid-stride launch over `n` work items of `perBlock` items per CTA. */
export function strided(what: string, n: number, threads: number, perBlock = threads, shared = 0): Launch {
  const blocks = Math.max(1, Math.min(Math.ceil(n / perBlock), LIMITS.gridStrideCap));
  return check(what, { grid: [blocks, 1, 1], block: [threads, 1, 1], shared });
}

/** Elementwise kernels (kconv, collect_count): one thread per element, grid-strided. */
export function elementwiseLaunch(what: string, n: number): Launch {
  return strided(what, n, K.elementThreads);
}

/** centroids: grid (blocks, channel chunks). */
export function centroidsLaunch(totalBlocks: number, C: number): Launch {
  return check('centroids', { grid: [Math.max(1, totalBlocks), Math.ceil(C / K.centroidThreads), 1], block: [K.centroidThreads, 1, 1], shared: 0 });
}

/** Shared bytes of route.cu for a centroid tile of `ct`. */
export function routeShared(D: number, topk: number, ct: number): number {
  return (ct * (D + 1) + K.routeRows * D + K.routeRows * topk) * f32 + (K.routeRows * topk + K.routeRows) * 4;
}

/** route: one CTA per (row tile, query head); the centroid tile is the largest of 32, 16, 8 that fits. */
export function routeLaunch(nTiles: number, Hq: number, D: number, topk: number): Launch & { ct: number } {
  if (topk > K.maxTopk) throw new MobaError('E_UNSUPPORTED', `topk = ${topk} exceeds the CUDA router's limit of ${K.maxTopk}`, 'topk');
  for (const ct of [32, 16, 8]) {
    const shared = routeShared(D, topk, ct);
    if (shared <= LIMITS.sharedDefault) return { ...check('route', { grid: [Math.max(1, nTiles), Hq, 1], block: [K.routeThreads, 1, 1], shared }), ct };
  }
  throw new MobaError('E_UNSUPPORTED', `route: head dim ${D} with topk ${topk} needs more shared memory than ${LIMITS.sharedDefault} B`, 'D');
}

/** Row tiles of the router per sequence: `tileBase[s]` = tiles before sequence s (length nseq + 1). */
export function routeTileBase(cuSeqlens: Int32Array): Int32Array {
  const out = new Int32Array(cuSeqlens.length);
  for (let s = 0; s + 1 < cuSeqlens.length; s++) out[s + 1] = out[s]! + Math.ceil((cuSeqlens[s + 1]! - cuSeqlens[s]!) / K.routeRows);
  return out;
}

/** Global block index of each sequence's block 0 (length nseq + 1; the last entry is the total). */
export function blockBase(cuSeqlens: Int32Array, blockSize: number): Int32Array {
  const out = new Int32Array(cuSeqlens.length);
  for (let s = 0; s + 1 < cuSeqlens.length; s++) out[s + 1] = out[s]! + Math.ceil((cuSeqlens[s + 1]! - cuSeqlens[s]!) / blockSize);
  return out;
}

/** Warp-per-row kernels (forward, dq, delta): 4 rows per CTA; `sharedPerWarp` f32 words of staging. */
export function rowLaunch(what: string, rows: number, sharedPerWarp: number): Launch {
  return strided(what, rows, K.rowWarps * 32, K.rowWarps, K.rowWarps * sharedPerWarp * f32);
}

export function forwardLaunch(T: number, Hq: number, D: number): Launch {
  checkHeadDim(D);
  return rowLaunch('forward', T * Hq, D);
}

export function dqLaunch(T: number, Hq: number, D: number): Launch {
  checkHeadDim(D);
  return rowLaunch('dq', T * Hq, 2 * D);
}

export function deltaLaunch(T: number, Hq: number): Launch {
  return rowLaunch('delta', T * Hq, 0);
}

/** Keys per dK/dV CTA: 32, or 16 when D > 128 (so kc·D ≤ 128 threads × MAX_EPT). */
export function dkdvKeys(D: number): number {
  return D <= 128 ? 32 : 16;
}

export function dkdvShared(D: number, kc: number): number {
  return (2 * kc * (D + 1) + 2 * K.rowWarps * D + 2 * K.rowWarps * kc) * f32 + K.rowWarps * kc * 4;
}

/** dkdv: one CTA per (kv head, global block, chunk of kc keys), grid-strided. */
export function dkdvLaunch(Hkv: number, totalBlocks: number, blockSize: number, D: number): Launch & { kc: number } {
  checkHeadDim(D);
  const kc = dkdvKeys(D);
  if (kc * D > K.rowWarps * 32 * K.maxEpt) throw new MobaError('E_UNSUPPORTED', `dkdv: kc·D = ${kc * D} exceeds ${K.rowWarps * 32 * K.maxEpt}`, 'D');
  const items = Hkv * totalBlocks * Math.ceil(blockSize / kc);
  return { ...strided('dkdv', items, K.rowWarps * 32, 1, dkdvShared(D, kc)), kc };
}

export function scanLaunch(): Launch {
  return check('collect_scan', { grid: [1, 1, 1], block: [K.scanThreads, 1, 1], shared: 0 });
}

export function scatterLaunch(lists: number): Launch {
  return strided('collect_scatter', lists, K.scatterThreads, 1);
}

export function kconvDwLaunch(C: number): Launch {
  return strided('kconv_dw', C, K.dwThreads, 1);
}

function checkHeadDim(D: number): void {
  if (!Number.isInteger(D) || D < 1 || D > K.maxHeadDim) throw new MobaError('E_UNSUPPORTED', `head dim D = ${D} is not supported by the CUDA kernels: allowed 1..${K.maxHeadDim}`, 'D');
}
