/**
 * Host side of the CUDA KV cache (pure, tested without a GPU): the per-call int32 tables its kernels read
 * (cache.cu), the storage sizes, and the launch geometry. Tables are small (a few ints per entry, query row or
 * touched page) and uploaded per call.
 */
import { type AppendPlan, type AttendPlan, type DType, MobaError, dtypeBytes } from '@moba/core';
import { type Launch, LIMITS, elementwiseLaunch } from './geometry.js';

/** cache.cu constants. */
export const CACHE = Object.freeze({ routeTile: 32, maxTopk: 64, attendWarps: 4, maxW: 8, routeHeadsPerCta: 8, mergeWarps: 4 });

/** Device bytes of one page: keys and values `[B, Hkv·D]` in the dtype, its f32 sum and f32 centroid `[Hkv·D]`. */
export function cachePageBytes(o: { Hkv: number; D: number; dtype: DType; blockSize: number }): number {
  const C = o.Hkv * o.D;
  return 2 * o.blockSize * C * dtypeBytes(o.dtype) + 2 * C * 4;
}

/** Bytes besides the pool: the kconv state `[maxSequences, W−1, C]` f32 and the f32 weight `[C, W]`. */
export function cacheStateBytes(maxSequences: number, W: number, C: number): { state: number; weight: number } {
  return { state: maxSequences * Math.max(0, W - 1) * C * 4, weight: W * C * 4 };
}

export interface AppendTables {
  /** Row starts of the entries `[nent + 1]`. */
  readonly cu: Int32Array;
  /** Per entry (slot, pos0, pbase) `[nent · 3]`. */
  readonly ent: Int32Array;
  /** The entries' page tables, concatenated. */
  readonly ptab: Int32Array;
  /** Per touched page (page, lo, hi): rows [lo, hi) of the page are new `[nwork · 3]`. */
  readonly work: Int32Array;
  readonly nent: number;
  readonly nwork: number;
}

export function appendTables(plan: AppendPlan, B: number): AppendTables {
  const es = plan.entries;
  const cu = new Int32Array(es.length + 1);
  const ent = new Int32Array(es.length * 3);
  const ptab = new Int32Array(es.reduce((n, e) => n + e.pages.length, 0));
  const work: number[] = [];
  let pbase = 0;
  es.forEach((e, i) => {
    cu[i] = e.row;
    ent.set([e.slot, e.pos0, pbase], i * 3);
    ptab.set(e.pages, pbase);
    pbase += e.pages.length;
    if (e.count > 0) {
      const end = e.pos0 + e.count;
      for (let j = Math.floor(e.pos0 / B); j * B < end; j++) {
        work.push(e.pages[j]!, Math.max(e.pos0, j * B) - j * B, Math.min(end, (j + 1) * B) - j * B);
      }
    }
  });
  cu[es.length] = plan.T;
  return { cu, ent, ptab: ptab.length > 0 ? ptab : new Int32Array(1), work: Int32Array.from(work.length > 0 ? work : [0, 0, 0]), nent: es.length, nwork: work.length / 3 };
}

export interface AttendTables {
  /** Per query row (t, L, pbase): its key position, its sequence's length and page-table offset `[Tq · 3]`. */
  readonly rows: Int32Array;
  readonly ptab: Int32Array;
}

export function attendTables(plan: AttendPlan): AttendTables {
  const rows = new Int32Array(plan.Tq * 3);
  const ptab = new Int32Array(Math.max(1, plan.entries.reduce((n, e) => n + e.pages.length, 0)));
  let pbase = 0;
  for (const e of plan.entries) {
    for (let a = 0; a < e.nq; a++) rows.set([e.length - e.nq + a, e.length, pbase], (e.qRow + a) * 3);
    ptab.set(e.pages, pbase);
    pbase += e.pages.length;
  }
  return { rows, ptab };
}

/** Elements per vectorised load of cache_attend: 4, 2 or 1 (D a multiple of 32·vec). */
export function attendVec(D: number): number {
  return D % 128 === 0 ? 4 : D % 64 === 0 ? 2 : 1;
}

function checked(what: string, L: Launch): Launch {
  const ok = L.grid.every((x) => Number.isInteger(x) && x >= 1) && L.grid[0] <= LIMITS.maxGridX && L.grid[1] <= LIMITS.maxGridYZ && L.grid[2] <= LIMITS.maxGridYZ;
  if (!ok || L.block[0] > LIMITS.maxThreads || L.shared > LIMITS.sharedDefault) {
    throw new MobaError('E_UNSUPPORTED', `launch of ${what} exceeds the device limits: grid [${L.grid.join(', ')}], block [${L.block.join(', ')}], shared ${L.shared} B`, 'launch');
  }
  return L;
}

/** cache_route: grid (Tq, Hkv, head groups); `hpc` query heads per CTA. */
export function cacheRouteLaunch(Tq: number, Hq: number, Hkv: number, D: number, topk: number): Launch & { hpc: number } {
  if (topk > CACHE.maxTopk) throw new MobaError('E_RANGE', `topk = ${topk} is invalid: the CUDA cache selects at most ${CACHE.maxTopk} blocks`, 'topk');
  const G = Hq / Hkv;
  const hpc = Math.min(G, CACHE.routeHeadsPerCta);
  const shared = (CACHE.routeTile * (D + 1) + hpc * D + 2 * hpc * topk) * 4;
  return { ...checked('cache_route', { grid: [Tq, Hkv, Math.ceil(G / hpc)], block: [32 * Math.max(hpc, 4), 1, 1], shared }), hpc };
}

/** cache_attend: one CTA per (query row, head, slot). */
export function cacheAttendLaunch(Tq: number, Hq: number, D: number, topk: number): Launch {
  return checked('cache_attend', { grid: [Tq * Hq * topk, 1, 1], block: [32 * CACHE.attendWarps, 1, 1], shared: CACHE.attendWarps * D * 4 });
}

/** cache_merge: one warp per (query row, head). */
export function cacheMergeLaunch(Tq: number, Hq: number): Launch {
  const w = CACHE.mergeWarps;
  return checked('cache_merge', { grid: [Math.min(Math.ceil((Tq * Hq) / w), LIMITS.gridStrideCap), 1, 1], block: [32 * w, 1, 1], shared: 0 });
}

/** The elementwise append kernels (one thread per element, grid-strided). */
export function cacheAppendLaunch(what: string, n: number): Launch {
  return elementwiseLaunch(what, Math.max(1, n));
}

/** Bytes of one attend's outputs and scratch (sel, partials, out, lse) and its tables. */
export function attendBytes(Tq: number, Hq: number, D: number, topk: number, dtype: DType, tableInts: number): number {
  return Tq * Hq * topk * 4 + Tq * Hq * topk * (D + 2) * 4 + Tq * Hq * D * dtypeBytes(dtype) + Tq * Hq * 4 + tableInts * 4;
}
