/**
 * The chunk plan of the two-launch collect (collect.cu; pure, unit-tested without a GPU): chunks of R
 * consecutive query rows, each with the global block range of its sequences, and the launch geometry.
 */
import { MobaError } from '@moba/core';
import * as geo from './geometry.js';

/**
 * MOBA_CUDA_COLLECT: `chunked` (the two-launch path) or the default `legacy` (five launches; unset or empty). The
 * two-launch path stays opt-in until the H200 check (`GPU_CHECK_ONLY=collect`) has compared it with legacy bitwise.
 */
export function collectMode(v: string | undefined = process.env.MOBA_CUDA_COLLECT): 'chunked' | 'legacy' {
  if (v === 'chunked') return 'chunked';
  if (v === undefined || v === '' || v === 'legacy') return 'legacy';
  throw new MobaError('E_RANGE', `MOBA_CUDA_COLLECT = ${v} is invalid: must be legacy or chunked (unset: legacy)`, 'MOBA_CUDA_COLLECT');
}

/** Ints of the part array (all heads) the plan aims to stay within. */
export const PART_BUDGET = 16 * 2 ** 20;
/** Dynamic shared bytes a collect CTA may use for its histogram / cursors. */
export const COLLECT_SHARED = 32 * 1024;

export interface CollectPlan {
  readonly R: number;
  readonly chunks: number;
  /** 4 ints per chunk: cbase, gb, ge, sequence (-1 when the chunk spans several). */
  readonly table: Int32Array;
  /** One head's part row (ints). */
  readonly S: number;
  readonly smemInts: number;
  readonly count: geo.Launch;
  readonly place: geo.Launch;
}

/** Largest s with a[s] <= x over s in [0, n) (collect.cu upper_index). */
function upperIndex(a: Int32Array, n: number, x: number): number {
  let lo = 0, hi = n - 1;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (a[mid]! <= x) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

function tableFor(R: number, T: number, cuq: Int32Array, blockBase: Int32Array): { table: Int32Array; S: number; maxRange: number } {
  const nseq = cuq.length - 1;
  const chunks = Math.ceil(T / R);
  const table = new Int32Array(4 * chunks);
  let S = 0, maxRange = 0;
  for (let c = 0; c < chunks; c++) {
    const s0 = upperIndex(cuq, nseq, c * R), s1 = upperIndex(cuq, nseq, Math.min(T, (c + 1) * R) - 1);
    const gb = blockBase[s0]!, ge = blockBase[s1 + 1]!;
    table.set([S, gb, ge, s0 === s1 ? s0 : -1], 4 * c);
    S += ge - gb;
    maxRange = Math.max(maxRange, ge - gb);
  }
  return { table, S, maxRange };
}

/**
 * Rows per chunk: a power of two from 64 giving about 32 warps per SM in collect_place, doubled while the part
 * array (Hq·S ints) exceeds PART_BUDGET (at most 2^20 rows per chunk). `blockBase` has nseq + 1 entries.
 */
export function collectPlan(T: number, Hq: number, topk: number, cuq: Int32Array, blockBase: Int32Array, sms: number): CollectPlan {
  if (!Number.isInteger(T) || T < 1) throw new MobaError('E_RANGE', `collect plan: T = ${T} must be an integer >= 1`, 'T');
  let R = 64;
  while (R < 2 ** 20 && Math.ceil(T / R) * Hq > 32 * Math.max(1, sms)) R *= 2;
  let t = tableFor(R, T, cuq, blockBase);
  while (R < 2 ** 20 && Hq * t.S > PART_BUDGET) t = tableFor((R *= 2), T, cuq, blockBase);
  if (R * topk >= 2 ** 31) throw new MobaError('E_UNSUPPORTED', `collect: ${R} rows per chunk with topk ${topk} exceed int32 picks per chunk`, 'topk');
  const smemInts = t.maxRange * 4 <= COLLECT_SHARED ? t.maxRange : 0;
  const chunks = Math.ceil(T / R);
  return {
    R, chunks, table: t.table, S: t.S, smemInts,
    count: geo.checkLaunch('collect_count_chunks', { grid: [chunks, Hq, 1], block: [geo.K.collectThreads, 1, 1], shared: smemInts * 4 }),
    place: geo.checkLaunch('collect_place', { grid: [chunks, Hq, 1], block: [32, 1, 1], shared: smemInts * 4 }),
  };
}
