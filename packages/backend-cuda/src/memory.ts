/**
 * Device-memory planning (pure): the bytes each op allocates, checked against the device's free memory
 * before any allocation (E_MEMORY), and the reusable workspace slots a backend keeps between calls.
 */
import { type DType, MobaError, checkIndexLimits as checkRoutingLimits, dtypeBytes, fmtBytes } from '@moba/core';

/** A problem's sizes: `T` query rows (q, out, lse, dq, routing rows), `Tk` key rows (k, v, dk, dv; SPEC §8). */
export interface CudaProblem {
  readonly T: number;
  readonly Tk: number;
  readonly Hq: number;
  readonly Hkv: number;
  readonly D: number;
  readonly dtype: DType;
  readonly topk: number;
  readonly totalBlocks: number;
  readonly nseq: number;
}

/** Bytes each op allocates on the device (outputs and scratch; inputs already live there). */
export function opBytes(p: CudaProblem): { route: number; forward: number; backward: number } {
  const eb = dtypeBytes(p.dtype);
  const small = 4 * (p.nseq + 1) * 4; // key and query boundaries, block bases, tile bases
  const routing = p.T * p.Hq * p.topk * 4 * 3 + (2 * p.Hq * p.totalBlocks + 1) * 4; // indices, rows and slots (at most one per index), offsets, fill cursors
  return {
    route: small + (p.nseq + 1) * 4 + p.totalBlocks * p.Hkv * p.D * 4 * 2 + routing, // + tensor-core tile bases, hi/lo centroid split
    forward: small + p.T * p.Hq * p.D * eb + p.T * p.Hq * 4,
    backward: small + p.T * p.Hq * 4 + p.T * p.Hq * p.D * eb + 2 * p.Tk * p.Hkv * p.D * eb, // Δ, dq, dk and dv
  };
}

/**
 * Int32 indexing limits of the routing formats (offsets and rows are int32 on the device): core's check (E_MEMORY),
 * which the shell already ran on every call; repeated here where the stages plan device memory.
 */
export function checkIndexLimits(p: CudaProblem): void {
  checkRoutingLimits(p);
}

/** Throws E_MEMORY when `need` bytes do not fit in `free` minus `reserve` (checked before allocating). */
export function checkFits(what: string, need: number, free: number, reserve: number): void {
  if (need > free - reserve) {
    throw new MobaError('E_MEMORY', `${what} needs ${fmtBytes(need)} of device memory but only ${fmtBytes(Math.max(0, free - reserve))} is free (after a reserve of ${fmtBytes(reserve)})`, 'workspace');
  }
}

/** Memory kept free for the driver and other allocations. */
export function reserveBytes(total: number): number {
  return Math.max(256 * 2 ** 20, Math.floor(total * 0.02));
}

/**
 * Size policy of a reusable workspace slot: keep the buffer when it is large enough (same-sized
 * problems reuse it), otherwise replace it by one of exactly the requested size.
 */
export function slotAction(have: number | undefined, want: number): 'reuse' | 'alloc' {
  return have !== undefined && have >= want ? 'reuse' : 'alloc';
}
