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
  routeTcRows: 64, // route.cu RTC_ROWS
  routeTcThreads: 128, // route.cu RTC_THREADS
  routeTcCt: 32, // route.cu RTC_CT
  routeTcsK: 8, // route.cu RTS_K: route_tcs keeps one register list of this many entries per row
  rowWarps: 4, // forward.cu FWD_WARPS, backward.cu BWD_WARPS
  maxHeadDim: 256, // 8 dims per lane (MAX_DPL)
  maxTopk: 64, // route.cu sel[64]
  maxEpt: 32, // backward.cu MAX_EPT: dK/dV elements per thread
  scanThreads: 1024,
  scatterThreads: 256,
  elementThreads: 256,
  dwThreads: 256, // kconv.cu red[256]
  centroidThreads: 128,
  collectThreads: 512, // collect.cu COLLECT_THREADS
});

const f32 = 4;
const check = (what: string, launch: Launch, sharedMax?: number): Launch => checkLaunch(what, launch, sharedMax);

export function checkLaunch(what: string, launch: Launch, sharedMax: number = LIMITS.sharedDefault): Launch {
  const [gx, gy, gz] = launch.grid;
  const [bx, by, bz] = launch.block;
  const ok = [gx, gy, gz, bx, by, bz].every((x) => Number.isInteger(x) && x >= 1) && gx <= LIMITS.maxGridX && gy <= LIMITS.maxGridYZ &&
    gz <= LIMITS.maxGridYZ && bx * by * bz <= LIMITS.maxThreads && launch.shared <= sharedMax && launch.shared >= 0;
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

/** centroids: grid (blocks, groups of centroidThreads channels). */
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

/**
 * Shared bytes of the tensor-core router: route_tcs (register lists, when topk - causal <= routeTcsK):
 * double-buffered hi and lo centroid tiles (16-bit, padded rows), the score tile and the k-th exchange;
 * route_tc: one hi/lo tile pair, the per-lane top-k lists and their lengths.
 */
export function routeTcShared(D: number, topk: number, causal: boolean): number {
  const slots = causal ? topk - 1 : topk;
  const tiles = 2 * K.routeTcCt * (D + 8) * 2;
  if (slots <= K.routeTcsK) return 2 * tiles + K.routeTcRows * (K.routeTcCt + 1) * 4 + K.routeTcThreads * 4; // double-buffered tiles, scores, k-th exchange
  return tiles + slots * 2 * K.routeTcThreads * 8 + 2 * K.routeTcThreads * 4;
}

/**
 * Tensor-core router (f16 / bf16, D 64 or 128): one CTA per (64-row tile, query head); `route_tcs` when a
 * row's list fits in registers (topk - causal <= routeTcsK), else `route_tc`. Null when the problem is not
 * eligible (dtype, head dim, top-k lists beyond the opt-in shared memory): the CUDA-core router then runs.
 */
export function routeTcLaunch(nTiles: number, Hq: number, dtype: string, D: number, topk: number, causal: boolean, sharedOptIn: number): (Launch & { kernel: string }) | null {
  if ((dtype !== 'f16' && dtype !== 'bf16') || (D !== 64 && D !== 128) || topk > K.maxTopk) return null;
  const shared = routeTcShared(D, topk, causal);
  if (shared + 1024 > sharedOptIn) return null;
  const kernel = (causal ? topk - 1 : topk) <= K.routeTcsK ? 'route_tcs' : 'route_tc';
  return { ...check(kernel, { grid: [Math.max(1, nTiles), Hq, 1], block: [K.routeTcThreads, 1, 1], shared }, sharedOptIn), kernel };
}

/** Row tiles of the router per sequence: `tileBase[s]` = tiles before sequence s (length nseq + 1). */
export function routeTileBase(cuSeqlens: Int32Array, rows: number = K.routeRows): Int32Array {
  const out = new Int32Array(cuSeqlens.length);
  for (let s = 0; s + 1 < cuSeqlens.length; s++) out[s + 1] = out[s]! + Math.ceil((cuSeqlens[s + 1]! - cuSeqlens[s]!) / rows);
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

/** dkdv: one CTA per (kv head, global block, tile of kc keys), grid-strided. */
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

export function kconvDwLaunch(C: number): Launch {
  return strided('kconv_dw', C, K.dwThreads, 1);
}

function checkHeadDim(D: number): void {
  if (!Number.isInteger(D) || D < 1 || D > K.maxHeadDim) throw new MobaError('E_UNSUPPORTED', `head dim D = ${D} is not supported by the CUDA kernels: allowed 1..${K.maxHeadDim}`, 'D');
}

// ------------------------------------------------------------------ tensor-core paths (forward.cu / backward.cu *_tc_*)

/** Constants of mma.cuh / window.cuh / the *_tc kernels. */
export const TC = Object.freeze({
  warps: 4,
  chunkRows: 64, // CH: gathered rows per chunk (forward_tc, forward_kv)
  fwdKeys: 64, // forward key tile
  kvTile: 64, // dkdv_tc keys per CTA (4 warps); dkdv_tc8: 128 keys (8 warps, D = 128)
  kvRows: 32, // dkdv RC: gathered rows per chunk
  pad: 8, // PAD: 16-bit elements of row padding
  listCap: 16384, // LIST_CAP
  maxWindow: 2048, // largest query window (rows)
  nbr: 1024, // NBR: key blocks per list-building pass
  headDims: Object.freeze([64, 128]),
});

const tileBytes = (rows: number, D: number): number => rows * (D + TC.pad) * 2;
const listBytes = (): number => TC.listCap * 2 + TC.nbr * 4 + (TC.nbr + 1) * 4;

/** Dynamic shared bytes of forward_tc for head dim D and windows of BQ rows. */
export function forwardTcShared(D: number, BQ: number): number {
  return tileBytes(TC.chunkRows, D) + 2 * tileBytes(TC.fwdKeys, D) + listBytes() + 2 * BQ * f32 + TC.chunkRows * 4;
}

/** Dynamic shared bytes of forward_kv: the whole key block's K and V (64-key tiles), two chunk buffers (Q, row tokens, slots). */
export function forwardKvShared(D: number, B: number): number {
  return 2 * tileBytes(Math.ceil(B / TC.fwdKeys) * TC.fwdKeys, D) + 2 * (tileBytes(TC.chunkRows, D) + 2 * TC.chunkRows * 4); // K, V; 2 chunk buffers
}

/** forward_kv: one CTA per (key block, kv head of the launch); null when a key block does not fit in shared memory. */
export function forwardKvLaunch(totalBlocks: number, B: number, kvHeads: number, D: number, sharedOptIn: number): Launch | null {
  const shared = forwardKvShared(D, B);
  if (shared + 1024 > sharedOptIn) return null;
  return check('forward_kv', { grid: [Math.max(1, totalBlocks), kvHeads, 1], block: [TC.warps * 32, 1, 1], shared }, sharedOptIn);
}

/**
 * Kv heads per launch of a kernel that writes per-(row, slot) f32 partials (`perKv` bytes per kv head).
 * Small problems (all partials within PART_ONE_LAUNCH bytes) run in one launch: splitting them would cost
 * speed (fewer, shorter waves) for little memory. Larger ones take as many kv heads as fit in the size of
 * one 16-bit [T, Hq, D] tensor (peak memory), but at least enough for PART_MIN_WAVES CTAs per SM
 * (`ctasPerKv` CTAs per kv head).
 */
export const PART_MIN_WAVES = 4;
export const PART_ONE_LAUNCH = 2 ** 31;
export function kvPerLaunch(perKv: number, Hkv: number, tensorBytes: number, ctasPerKv: number, sms: number, force: number | null = null): number {
  if (force !== null) return Math.max(1, Math.min(Hkv, Math.floor(force)));
  if (Hkv * perKv <= PART_ONE_LAUNCH) return Hkv;
  const byBudget = Math.floor(tensorBytes / perKv);
  const byWaves = Math.ceil((PART_MIN_WAVES * sms) / Math.max(1, ctasPerKv));
  return Math.max(1, Math.min(Hkv, Math.max(byBudget, byWaves)));
}

/** Partials of forward_kv (f32 O and (m, l) per row, head and routing slot): kv heads per launch (kvPerLaunch). */
export function fwdPartPlan(T: number, Hq: number, Hkv: number, D: number, topk: number, totalBlocks: number, sms: number, force: number | null = null): { kvPerLaunch: number; bytes: number; mlOffset: number } {
  const rowsPerKv = T * (Hq / Hkv) * topk;
  const perKv = rowsPerKv * (D + 2) * 4;
  const kv = kvPerLaunch(perKv, Hkv, T * Hq * D * 2, totalBlocks, sms, force);
  return { kvPerLaunch: kv, bytes: Math.max(16, kv * perKv), mlOffset: kv * rowsPerKv * D * 4 };
}

/** Dynamic shared bytes of dkdv_tc. */
export function dkdvTcShared(D: number, kvTile: number = TC.kvTile): number {
  return 2 * tileBytes(kvTile, D) + kvTile * (TC.kvRows + 8) * 2 + 2 * (2 * tileBytes(TC.kvRows, D) + 4 * TC.kvRows * 4); // K, V, dS; 2 chunk buffers
}

/** dQ partials of dkdv_tc (f32, one per row, head, routing slot and key tile of the block): kv heads per launch (kvPerLaunch). */
export function dqPartPlan(T: number, Hq: number, Hkv: number, D: number, topk: number, nsub: number, totalBlocks: number, sms: number, force: number | null = null): { kvPerLaunch: number; bytes: number } {
  const perKv = T * (Hq / Hkv) * topk * nsub * D * 4;
  const kv = kvPerLaunch(perKv, Hkv, T * Hq * D * 2, totalBlocks * nsub, sms, force);
  return { kvPerLaunch: kv, bytes: Math.max(4, kv * perKv) };
}

/** Whether the tensor-core kernels take this problem (16-bit dtype, D 64/128, enough opt-in shared memory). */
export function tcEligible(dtype: string, D: number, sharedOptIn: number): boolean {
  return (dtype === 'f16' || dtype === 'bf16') && TC.headDims.includes(D) &&
    Math.max(forwardTcShared(D, TC.maxWindow), dkdvTcShared(D)) + 1024 <= sharedOptIn;
}

/**
 * Rows of a query window (forward_tc): as large as the list capacity allows (rows · topk ≤
 * LIST_CAP, at most 2048: more rows share each key block's K/V loads), halved while the grid would not
 * give every SM two CTAs (down to 128 rows), and never much longer than the longest sequence.
 */
export function windowRows(topk: number, seqLens: readonly number[], Hq: number, sms: number): number {
  let bq = TC.maxWindow;
  while (bq > 64 && bq * topk > TC.listCap) bq >>= 1;
  const maxLen = Math.max(1, ...seqLens);
  while (bq > 64 && bq / 2 >= maxLen) bq >>= 1;
  const ctas = (b: number): number => seqLens.reduce((n, len) => n + Math.ceil(len / b), 0) * Hq;
  while (bq > 128 && ctas(bq) < 2 * sms) bq >>= 1;
  return bq;
}

/** Windows before each sequence (length nseq + 1): `winBase[s]`, the last entry is the total. */
export function windowBase(cuSeqlens: Int32Array, rows: number): Int32Array {
  const out = new Int32Array(cuSeqlens.length);
  for (let s = 0; s + 1 < cuSeqlens.length; s++) out[s + 1] = out[s]! + Math.ceil((cuSeqlens[s + 1]! - cuSeqlens[s]!) / rows);
  return out;
}

/** forward_tc: one CTA per (window, query head). */
export function windowLaunch(what: string, windows: number, Hq: number, shared: number, sharedOptIn: number): Launch {
  return check(what, { grid: [Math.max(1, windows), Hq, 1], block: [TC.warps * 32, 1, 1], shared }, sharedOptIn);
}

/**
 * dkdv_tc: one CTA per (key tile of a key block, kv head). Whole 128-key tiles of 8 warps (`dkdv_tc8`)
 * when D = 128, B >= 128 and they fit in shared memory (one dQ partial per routing slot instead of one
 * per 64-key tile); otherwise 64-key tiles of 4 warps (`dkdv_tc`).
 */
export function dkdvTcLaunch(totalBlocks: number, blockSize: number, Hkv: number, D: number, sharedOptIn: number): Launch & { nsub: number; kvTile: number; kernel: string } {
  const wide = D === 128 && blockSize >= 128 && dkdvTcShared(D, 128) <= sharedOptIn;
  const kvTile = wide ? 128 : TC.kvTile;
  const nsub = Math.ceil(blockSize / kvTile);
  const L = check('dkdv_tc', { grid: [Math.max(1, totalBlocks * nsub), Hkv, 1], block: [(kvTile / 16) * 32, 1, 1], shared: dkdvTcShared(D, kvTile) }, sharedOptIn);
  return { ...L, nsub, kvTile, kernel: wide ? 'dkdv_tc8' : 'dkdv_tc' };
}

/** collect_sort: one CTA per list, grid-strided. */
export function sortLaunch(lists: number): Launch {
  return strided('collect_sort', lists, K.scatterThreads, 1);
}
