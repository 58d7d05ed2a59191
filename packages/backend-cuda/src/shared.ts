/**
 * What the stages (route, collect, forward, backward, kconv) share: the device context they run in, the
 * routing store, the per-call device tables (sequence starts, block and tile bases, query windows) and
 * the int32 limits of a problem.
 */
import type { CheckedShape, DType, Layout, QueryRows, ResolvedConfig, Sequences } from '@moba/core';
import type { Allocator, Buf } from './allocator.js';
import type { CudaDriver } from './driver.js';
import * as geo from './geometry.js';
import { type CudaProblem, checkIndexLimits } from './memory.js';
import type { Program } from './program.js';

/** The device a stage runs on. */
export interface Cuda {
  readonly drv: CudaDriver;
  readonly mem: Allocator;
  readonly prog: Program;
  readonly sms: number;
  readonly sharedOptIn: number;
  /** Tensor-core paths allowed (option `unstable.fastPaths`). */
  readonly fast: boolean;
  /** Kv heads per launch of the partial-writing kernels; null plans it (option `unstable.kvHeadsPerLaunch`). */
  readonly kvHeadsPerLaunch: number | null;
}

/** A routing on the device. */
export interface RoutingStore {
  readonly indices: Buf; // [T, Hq, topk] int32
  readonly offsets: Buf; // [Hq·NB + 1] int32
  readonly rows: Buf; // [nnz] int32
  readonly slotOf: Buf; // [nnz] int32: routing slot of each entry (collect_slot_of)
}

/**
 * Per-call device tables of a layout (workspace slots): the key boundaries `cu` and block bases, the query
 * boundaries `cuq` (the same pointer as `cu` for self-attention; SPEC §8) and the router's query-row tiles.
 */
export interface DeviceLayout {
  readonly cu: bigint;
  readonly cuq: bigint;
  readonly blockBase: bigint;
  readonly tileBase: bigint;
  readonly nseq: number;
  readonly nTiles: number;
}

/** Whether the tensor-core kernels serve this dtype and head dim. */
export function usesTensorCores(c: Cuda, dtype: DType, D: number): boolean {
  return c.fast && geo.tcEligible(dtype, D, c.sharedOptIn);
}

/** The problem's sizes for memory planning, checked against the int32 routing limits. */
export function cudaProblem(shape: CheckedShape, rc: ResolvedConfig, seqs: Sequences, layout: Layout): CudaProblem {
  const p: CudaProblem = { ...shape, topk: rc.topk, totalBlocks: seqs.totalBlocks, nseq: layout.cuSeqlens.length - 1 };
  checkIndexLimits(p);
  return p;
}

/** The tables of key layout `layout` and query rows `queries` (`p.keys`, `p.queries` of a checked call). */
export function deviceLayout(c: Cuda, layout: Layout, blockSize: number, queries: QueryRows): DeviceLayout {
  const cu = layout.cuSeqlens;
  const tiles = geo.routeTileBase(queries.cuSeqlensQ);
  const cuPtr = c.mem.small('cu', cu);
  return {
    cu: cuPtr,
    cuq: queries.selfAttention ? cuPtr : c.mem.small('cuq', queries.cuSeqlensQ),
    blockBase: c.mem.small('blockBase', geo.blockBase(cu, blockSize)),
    tileBase: c.mem.small('tileBase', tiles),
    nseq: cu.length - 1,
    nTiles: tiles[tiles.length - 1]!,
  };
}

/** Query windows of the tensor-core kernels: rows per window, their count and the per-sequence base table. */
export function windows(c: Cuda, layout: Layout, topk: number, Hq: number): { rows: number; count: number; base: bigint } {
  const cu = layout.cuSeqlens;
  const lens = Array.from({ length: cu.length - 1 }, (_, s) => cu[s + 1]! - cu[s]!);
  const rows = geo.windowRows(topk, lens, Hq, c.sms);
  const base = geo.windowBase(cu, rows);
  return { rows, count: base[base.length - 1]!, base: c.mem.small('winBase', base) };
}
