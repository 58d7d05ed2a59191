/**
 * The collect stage: a routing's indices `[T, Hq, topk]` turned into per-(head, key block) query lists
 * (`offsets [Hq·NB + 1]`, `rows`), the form the forward and backward kernels walk. Both forms are kept.
 * Rows are query rows; `queries` says which key sequence each belongs to (SPEC §8).
 */
import { type QueryRows, type Sequences, collectRouting } from '@moba/core';
import type { Storage } from './tensor.js';

/** A CPU routing: the indices and their collected lists, in the backend's storage. */
export interface CpuRouting {
  readonly indices: Int32Array; // [T, Hq, topk]
  readonly offsets: Int32Array; // [Hq·NB + 1]
  readonly rows: Int32Array; // [nnz], query rows
}

/** Collects `indices` (kept as the routing's own array) into lists. */
export function collect(mem: Storage, indices: Int32Array, T: number, Hq: number, topk: number, seqs: Sequences, queries: QueryRows): CpuRouting {
  const c = collectRouting(indices, T, Hq, topk, seqs, queries);
  return { indices, offsets: mem.copyI32(c.offsets), rows: mem.copyI32(c.rows) };
}
