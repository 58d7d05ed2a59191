/**
 * The paged KV cache contract (SPEC §9): what a backend's `createCache` returns, its options, and the plans its
 * stages receive. Pages hold `blockSize` tokens (one MoBA block each) and come from one pool sized at creation;
 * a full page never changes again, so `fork` shares it. `cache-shell.ts` does the bookkeeping and validation
 * every backend shares; a backend implements only the stages (append, attend, copy, read).
 */
import type { DeviceTensor, ForwardResult } from './backend.js';
import type { DType } from './dtype.js';
import type { HostTensor } from './tensor.js';

export interface KVCacheOptions {
  /** Key/value heads. */
  readonly Hkv: number;
  /** Head dim. */
  readonly D: number;
  readonly dtype: DType;
  /** Tokens per page = MoBA block size B of every attend. */
  readonly blockSize: number;
  /** Pool size in tokens (rounded up to whole pages). Exactly one of `capacityTokens` / `capacityBytes`. */
  readonly capacityTokens?: number;
  /** Pool size in bytes (pages of `pageBytes` each, rounded down). */
  readonly capacityBytes?: number;
  /** Most sequences alive at once (default 256): sizes the kconv state. */
  readonly maxSequences?: number;
  /** kconv weight `[Hkv·D, W]` (SPEC §6), a tensor of the same backend; copied at creation. Absent: no kconv. */
  readonly kconvWeight?: DeviceTensor;
}

/** The keys `KVCacheOptions` may have (anything else is E_RANGE naming it). */
export const KV_CACHE_OPTION_KEYS: readonly (keyof KVCacheOptions)[] = Object.freeze(
  ['Hkv', 'D', 'dtype', 'blockSize', 'capacityTokens', 'capacityBytes', 'maxSequences', 'kconvWeight'] as const,
);

/** The config of one `attend`: the cache fixes `blockSize` (given, it must be equal). */
export interface CacheAttendConfig {
  readonly topk: number;
  readonly causal?: boolean;
  readonly scale?: number;
  readonly blockSize?: number;
}

/** One sequence's contents (`KVCache.read`): what a full recompute of SPEC §2 and §6 gives. */
export interface CacheContents {
  /** Tokens held. */
  readonly length: number;
  /** Keys after kconv `[length, Hkv, D]`, the cache's dtype. */
  readonly k: HostTensor;
  /** Values `[length, Hkv, D]`. */
  readonly v: HostTensor;
  /** f32 centroid of each completed block `[floor(length / B), Hkv, D]`. */
  readonly centroids: HostTensor<'f32'>;
  /** f32 sum of the open block's keys `[Hkv, D]` (zeros when `length` is a multiple of B). */
  readonly openSum: HostTensor<'f32'>;
  /** Tokens in the open block (`length % B`). */
  readonly openCount: number;
  /** The last `W − 1` raw keys `[W − 1, Hkv, D]`, f32, zero before the sequence start (kconv only; else `[0, Hkv, D]`). */
  readonly kconvState: HostTensor<'f32'>;
  /** The sequence's page ids, block order. */
  readonly pages: Int32Array;
}

export interface CacheStats {
  /** Pages in the pool and their bytes (all allocated at creation). */
  readonly pages: number;
  readonly pageBytes: number;
  readonly poolBytes: number;
  /** Pages held by some sequence; pages held by more than one (forks share full pages). */
  readonly usedPages: number;
  readonly sharedPages: number;
  readonly freePages: number;
  /** Sequences alive and the tokens they hold (a shared page counts for each sequence). */
  readonly sequences: number;
  readonly tokens: number;
  /** Bytes besides the pool: centroids, open sums, kconv state, page tables. */
  readonly metaBytes: number;
}

export interface KVCache {
  readonly backend: string;
  readonly Hkv: number;
  readonly D: number;
  readonly dtype: DType;
  readonly blockSize: number;
  /** kconv width W (0: no kconv). */
  readonly kconvWidth: number;
  readonly maxSequences: number;
  /** A new, empty sequence; E_MEMORY when `maxSequences` are alive. */
  newSequence(): number;
  /** Tokens held by a live sequence. */
  length(seq: number): number;
  /** The live sequence ids, ascending. */
  sequenceIds(): number[];
  /**
   * Appends raw keys and values `[T, Hkv, D]` (tensors of this backend, the cache's dtype) to the named
   * sequences: sequence `seqs[b]` gets rows `[cuSeqlens[b], cuSeqlens[b+1])`. kconv is applied with each
   * sequence's state; centroids of the blocks it completes are written. A pool too small for all of it fails with
   * E_MEMORY before anything is written.
   */
  append(seqs: readonly number[], k: DeviceTensor, v: DeviceTensor, cuSeqlens: Int32Array): Promise<void>;
  /**
   * Attention of queries `[Tq, Hq, D]` that are the last `nq_b = cuSeqlensQ[b+1] − cuSeqlensQ[b]` tokens of
   * sequence `seqs[b]` (SPEC §8): out `[Tq, Hq, D]` (q's dtype), lse `[Tq, Hq]` f32. Reads the centroids and the
   * selected blocks only.
   */
  attend(seqs: readonly number[], q: DeviceTensor, cuSeqlensQ: Int32Array, cfg: CacheAttendConfig): Promise<ForwardResult>;
  /** A new sequence with the same contents (full pages shared, the open page copied); E_MEMORY without room. */
  fork(seq: number): Promise<number>;
  /** Ends a sequence; its pages go back to the pool once no fork holds them. */
  free(seq: number): void;
  /** A sequence's contents, downloaded. */
  read(seq: number): Promise<CacheContents>;
  memoryStats(): CacheStats;
  /** Frees the pool; the cache is unusable afterwards (idempotent). */
  destroy(): Promise<void>;
}

/** Where one sequence's new tokens go (an `append` stage's input). */
export interface AppendEntry {
  /** The sequence's state slot, in [0, maxSequences). */
  readonly slot: number;
  /** First row of k, v for it. */
  readonly row: number;
  /** Tokens appended. */
  readonly count: number;
  /** Its length before the append (position of the first new token). */
  readonly pos0: number;
  /** Its page table after the append, block order. */
  readonly pages: Int32Array;
}

export interface AppendPlan {
  /** Rows of k, v. */
  readonly T: number;
  readonly entries: readonly AppendEntry[];
}

/** One sequence of an `attend` stage. */
export interface AttendEntry {
  readonly slot: number;
  /** Its length (keys). */
  readonly length: number;
  /** First query row and query count (the last `nq` positions: `length − nq …`). */
  readonly qRow: number;
  readonly nq: number;
  readonly pages: Int32Array;
}

export interface AttendPlan {
  readonly Tq: number;
  readonly Hq: number;
  readonly topk: number;
  readonly causal: boolean;
  readonly scale: number;
  readonly entries: readonly AttendEntry[];
}

/** A page copy of `fork`: the first `tokens` rows of page `src` (and its f32 sum) into `dst`. */
export interface PageCopy {
  readonly src: number;
  readonly dst: number;
  readonly tokens: number;
}
