/**
 * Host side of the CUDA KV cache (pure, tested without a GPU): the per-call int32 tables its kernels read
 * (cache.cu), the storage sizes, and the launch geometry. Tables are small (a few ints per entry, query row or
 * touched page) and uploaded per call.
 */
import { type AppendPlan, type AttendPlan, type DType, MobaError, dtypeBytes } from '@moba/core';
import { type Launch, LIMITS, elementwiseLaunch } from './geometry.js';

/** cache.cu constants. */
export const CACHE = Object.freeze({
  routeTile: 32, maxTopk: 64, attendThreads: 128, maxW: 8, routeHeadsPerCta: 8, routeCtasPerSm: 12,
  /** cache_fused (cache-fused.cuh): candidate blocks per row (one per thread), largest D, its static shared bytes. */
  fusedMaxBlocks: 128, fusedMaxD: 256, fusedStaticBytes: 64 * 16 + 128 * 8 + 64 * 4,
  /** Auto choice: the fused path's redundant centroid reads (every CTA scores its row) at most this many bytes. */
  fusedAutoBytes: 16 * 1024 * 1024,
});

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
  /** The entries' page tables, concatenated (built on demand: the device copy is often reused). */
  pages(): Int32Array;
  /** Ints of `pages()`. */
  readonly pageInts: number;
  /** Blocks of the longest attended sequence (an upper bound of any row's candidates). */
  readonly maxBlocks: number;
}

export function attendTables(plan: AttendPlan, B: number): AttendTables {
  const es = plan.entries;
  const rows = new Int32Array(plan.Tq * 3);
  let pbase = 0, maxBlocks = 0;
  for (const e of es) {
    maxBlocks = Math.max(maxBlocks, Math.ceil(e.length / B));
    let r = e.qRow * 3;
    for (let a = 0, t = e.length - e.nq; a < e.nq; a++, t++, r += 3) {
      rows[r] = t;
      rows[r + 1] = e.length;
      rows[r + 2] = pbase;
    }
    pbase += e.pages.length;
  }
  const pageInts = Math.max(1, pbase);
  const pages = (): Int32Array => {
    const out = new Int32Array(pageInts);
    let at = 0;
    for (const e of es) {
      out.set(e.pages, at);
      at += e.pages.length;
    }
    return out;
  };
  return { rows, pages, pageInts, maxBlocks };
}

/** Elements per vectorised load of cache_attend: up to 16 bytes (8 for 16-bit dtypes, 4 for f32), D a multiple of it. */
export function attendVec(D: number, dtype: DType = 'bf16'): number {
  const most = dtype === 'f32' ? 4 : 8;
  for (let v = most; v > 1; v /= 2) if (D % v === 0) return v;
  return 1;
}

function checked(what: string, L: Launch): Launch {
  const ok = L.grid.every((x) => Number.isInteger(x) && x >= 1) && L.grid[0] <= LIMITS.maxGridX && L.grid[1] <= LIMITS.maxGridYZ && L.grid[2] <= LIMITS.maxGridYZ;
  if (!ok || L.block[0] > LIMITS.maxThreads || L.shared > LIMITS.sharedDefault) {
    throw new MobaError('E_UNSUPPORTED', `launch of ${what} exceeds the device limits: grid [${L.grid.join(', ')}], block [${L.block.join(', ')}], shared ${L.shared} B`, 'launch');
  }
  return L;
}

/** cache_route's launch and its split over the centroid tiles (cache-route.cuh). */
export interface RouteLaunch extends Launch {
  /** Query heads per CTA. */
  readonly hpc: number;
  /** Centroid tiles per split CTA (split z takes tiles [z·tps, (z+1)·tps) of its row). */
  readonly tps: number;
  readonly nsplit: number;
  /** Bytes of the splits' partial lists (0 when unsplit or dense). */
  readonly plistBytes: number;
  /** Arrival counters (one uint32 per (row, kv head, head group)). */
  readonly counters: number;
  /** Centroid tile buffers (2: the next tile loads while one is scored; 1 where two do not fit the shared memory). */
  readonly nbuf: number;
}

/**
 * cache_route: grid (Tq, Hkv · head groups, nsplit); `hpc` query heads per CTA. nsplit fills the GPU (about
 * CACHE.routeCtasPerSm CTAs per SM, at least 2 tiles of the longest row per split) unless `force` sets it
 * (1 = unsplit). topk above CACHE.maxTopk is dense (every candidate): no list, shared memory independent of topk.
 */
export function cacheRouteLaunch(Tq: number, Hq: number, Hkv: number, D: number, topk: number, maxBlocks: number, sms: number, force: number | null = null): RouteLaunch {
  const dense = topk > CACHE.maxTopk;
  const G = Hq / Hkv;
  const hpc = Math.min(G, CACHE.routeHeadsPerCta);
  const ng = Math.ceil(G / hpc);
  const D4 = Math.ceil(D / 4);
  const rest = (hpc * D4 * 4 + (dense ? 0 : 2 * hpc * topk)) * 4;
  const tile = CACHE.routeTile * D4 * 16;
  const nbuf = 2 * tile + rest <= LIMITS.sharedDefault ? 2 : 1;
  const shared = nbuf * tile + rest;
  const tiles = Math.ceil(maxBlocks / CACHE.routeTile);
  const base = Tq * Hkv * ng;
  const want = force ?? Math.min(Math.ceil((CACHE.routeCtasPerSm * sms) / base), Math.floor(tiles / 2));
  const tps = Math.max(1, Math.ceil(tiles / Math.max(1, want)), Math.ceil(tiles / LIMITS.maxGridYZ));
  const nsplit = Math.max(1, Math.ceil(tiles / tps));
  const L = checked('cache_route', { grid: [Tq, Hkv * ng, nsplit], block: [32 * Math.max(hpc, 4), 1, 1], shared });
  return { ...L, hpc, tps, nsplit, nbuf, plistBytes: nsplit > 1 && !dense ? Tq * Hq * nsplit * 2 * topk * 4 : 0, counters: Tq * Hkv * ng };
}

/** Bytes of one cache_attend CTA's staged keys and values (both), at most. */
export const ATTEND_STAGE_BYTES = 36 * 1024;

/**
 * cache_attend: one CTA per (query row, head, slot, sub-block of `sb` rows; `nsub` per block), its keys and values
 * staged in shared memory (rows padded by 16 bytes, both within ATTEND_STAGE_BYTES); the last CTA of a (row, head)
 * merges its partials.
 */
export function cacheAttendLaunch(Tq: number, Hq: number, D: number, topk: number, dtype: DType = 'bf16', B = 128): Launch & { vec: number; sb: number; nsub: number } {
  const vec = attendVec(D, dtype);
  const nc = D / vec, groups = Math.max(1, Math.floor(CACHE.attendThreads / nc));
  const rowBytes = D * dtypeBytes(dtype) + 16;
  const most = Math.max(1, Math.min(CACHE.attendThreads, Math.floor(ATTEND_STAGE_BYTES / (2 * rowBytes))));
  const nsub = Math.ceil(B / most), sb = Math.ceil(B / nsub);
  const shared = 2 * sb * rowBytes + (D + CACHE.attendThreads + groups * D) * 4;
  return { ...checked('cache_attend', { grid: [Tq * Hq * topk * nsub, 1, 1], block: [CACHE.attendThreads, 1, 1], shared }), vec, sb, nsub };
}

/** The elementwise append kernels (one thread per element, grid-strided). */
export function cacheAppendLaunch(what: string, n: number): Launch {
  return elementwiseLaunch(what, Math.max(1, n));
}

/**
 * Bytes of one attend's outputs and scratch (sel, partials (`nsub` per slot), out, lse, the router's partial lists)
 * and its tables.
 */
export function attendBytes(Tq: number, Hq: number, D: number, topk: number, dtype: DType, tableInts: number, plistBytes = 0, nsub = 1): number {
  return Tq * Hq * topk * 4 + Tq * Hq * topk * nsub * (D + 2) * 4 + Tq * Hq * D * dtypeBytes(dtype) + Tq * Hq * 4 + tableInts * 4 + plistBytes;
}

/** Warps per query head of cache_route (its score is split over their dimension ranges): the fused path repeats it. */
export function routeWarpsPerHead(G: number): number {
  const hpc = Math.min(G, CACHE.routeHeadsPerCta);
  const nw = Math.max(hpc, 4);
  return hpc < nw ? Math.floor(nw / hpc) : 1;
}

/**
 * Whether an attend runs fused (cache_fused: one launch) or as cache_route + cache_attend. Fusable: every row has at
 * most CACHE.fusedMaxBlocks blocks (maxBlocks bounds them), topk <= CACHE.maxTopk (a list) and D <= CACHE.fusedMaxD.
 * `mode` (MOBA_CUDA_CACHE_FUSED): '0' never, '1' whenever fusable, null/'' auto: fusable and the redundant centroid
 * reads, one row's (maxBlocks · D f32) per CTA (Tq · Hq · topk · nsub CTAs), at most CACHE.fusedAutoBytes (16 MiB: a
 * few µs of L2 reads, less than the router's launch and latency; 8.5 MB at 8K × 1, 136 MB at 8K × 16).
 */
export function cacheFused(Tq: number, Hq: number, D: number, topk: number, maxBlocks: number, nsub: number, mode: string | null): boolean {
  if (mode !== null && mode !== '' && mode !== '0' && mode !== '1') {
    throw new MobaError('E_RANGE', `MOBA_CUDA_CACHE_FUSED = ${mode} is invalid: must be 0 or 1 (unset: chosen per attend)`, 'MOBA_CUDA_CACHE_FUSED');
  }
  if (mode === '0') return false;
  const fusable = maxBlocks <= CACHE.fusedMaxBlocks && topk <= CACHE.maxTopk && D <= CACHE.fusedMaxD;
  if (!fusable || mode === '1') return fusable;
  return Tq * Hq * topk * nsub * maxBlocks * D * 4 <= CACHE.fusedAutoBytes;
}

/** cache_fused's launch: cache_attend's grid and dynamic shared memory, checked with the fused kernel's static bytes. */
export function cacheFusedLaunch(at: Launch): Launch {
  checked('cache_fused', { ...at, shared: at.shared + CACHE.fusedStaticBytes });
  return at;
}
