/**
 * CPU storage and problem geometry. Device data is f32; f16/bf16 tensors hold values already rounded
 * to their dtype. It lives in SharedArrayBuffers when a worker pool may read and write it without
 * copies, else in plain ArrayBuffers (a page that is not cross-origin isolated has no
 * SharedArrayBuffer). The geometry splits a packed varlen batch (SPEC §1) into query tiles
 * `[nTiles, 3]` and key tiles `[nKeyTiles, 4]`.
 */
import { type DType, type ProblemShape, type QueryRows, type Sequences, roundTo } from '@moba/core';
import type { Pool } from './pool.js';

/** Query rows per work item and keys per inner key tile (both fit L1/L2 at D ≤ 128). */
export const TILE_ROWS = 128;
export const KEY_TILE = 64;

/** What a stage launcher runs on: the job pool and the storage its arrays come from. */
export interface Cpu {
  readonly pool: Pool;
  readonly mem: Storage;
}

/** Allocates zeroed arrays of one backend: shared (for a worker pool) or plain (the calling thread only). */
export class Storage {
  /** Bytes of every array this storage made (ever increasing: the arrays go with their last reference). */
  allocatedBytes = 0;

  constructor(readonly shared: boolean) {}

  f32(n: number): Float32Array {
    return new Float32Array(this.#buffer(n * 4));
  }

  f64(n: number): Float64Array {
    return new Float64Array(this.#buffer(n * 8));
  }

  i32(n: number): Int32Array {
    return new Int32Array(this.#buffer(n * 4));
  }

  /** A copy of `a` in this storage. */
  copyI32(a: Int32Array): Int32Array {
    const s = this.i32(a.length);
    s.set(a);
    return s;
  }

  #buffer(bytes: number): ArrayBufferLike {
    const n = Math.max(bytes, 0);
    this.allocatedBytes += n;
    return this.shared ? new SharedArrayBuffer(n) : new ArrayBuffer(n);
  }
}

/**
 * A head-major copy `[H, T, D]` of `x [T, H, D]` in `storage`. Attention kernels read keys and values
 * this way so that a key block of one head is one contiguous run (hardware prefetch follows it), where
 * `[T, H, D]` would spread it over H times the memory.
 */
export function headMajor(storage: Storage, x: Float32Array, T: number, H: number, D: number): Float32Array {
  const out = storage.f32(T * H * D); // [H, T, D]
  for (let t = 0; t < T; t++) {
    for (let h = 0; h < H; h++) out.set(x.subarray((t * H + h) * D, (t * H + h + 1) * D), (h * T + t) * D);
  }
  return out;
}

/** Head-major working copies of q `[Hq, T, D]`, k and v `[Hkv, Tk, D]` for the attention kernels. */
export function headMajorQkv(mem: Storage, s: ProblemShape, t: { q: Float32Array; k: Float32Array; v: Float32Array }): { q: Float32Array; k: Float32Array; v: Float32Array } {
  const Tk = s.Tk ?? s.T;
  return { q: headMajor(mem, t.q, s.T, s.Hq, s.D), k: headMajor(mem, t.k, Tk, s.Hkv, s.D), v: headMajor(mem, t.v, Tk, s.Hkv, s.D) };
}

/**
 * Writes `src[srcOff + i] * mul` for i < n into `dst[dstOff + i]`, rounded to `dtype` (outputs are
 * rounded when produced; f32 rounding is the Float32Array store itself).
 */
export function storeRow(dst: Float32Array, dstOff: number, src: Float64Array, srcOff: number, n: number, mul: number, dtype: DType): void {
  if (dtype === 'f32') {
    for (let i = 0; i < n; i++) dst[dstOff + i] = src[srcOff + i] * mul;
  } else {
    for (let i = 0; i < n; i++) dst[dstOff + i] = roundTo(dtype, src[srcOff + i] * mul);
  }
}

/**
 * Sizes, sequences, query tiles and key tiles of one problem; plain typed arrays, cloneable to workers. With fewer
 * queries than keys (SPEC §8) the query rows of sequence i are `[qStart[i], qStart[i] + qLen[i])`, bottom-right
 * aligned: query row t sits at key position `t + qShift[i]` (0 for self-attention, where query row t is key t).
 */
export interface Geometry {
  /** Query rows (`q`, `out`, `lse`, `dq`, routing rows). */
  readonly T: number;
  /** Key rows (`k`, `v`, `dk`, `dv`). */
  readonly Tk: number;
  readonly Hq: number;
  readonly Hkv: number;
  readonly D: number;
  readonly blockSize: number;
  /** Per sequence: first token, length, global index of its block 0. */
  readonly seqStart: Int32Array;
  readonly seqLen: Int32Array;
  readonly blockBase: Int32Array;
  /** Per sequence: first query row, query count, key position − query row of its queries. */
  readonly qStart: Int32Array;
  readonly qLen: Int32Array;
  readonly qShift: Int32Array;
  readonly totalBlocks: number;
  readonly maxBlocks: number;
  /** `[nTiles, 3]`: (r0, r1, seq) of query rows; at most TILE_ROWS rows, never crossing a sequence. */
  readonly tiles: Int32Array;
  readonly nTiles: number;
  /** `[nKeyTiles, 4]`: (c0, c1, seq, local block); at most KEY_TILE keys, never crossing a block. */
  readonly keyTiles: Int32Array;
  readonly nKeyTiles: number;
}

/**
 * Builds the geometry of q `[T, Hq, D]` and k `[Tk, Hkv, D]` tensors over the key sequences `seqs` (made with
 * `blockSize`); `queries` places the query rows (SPEC §8; without it query row t is key t).
 */
export function geometry(dims: { T: number; Tk?: number; Hq: number; Hkv: number; D: number }, seqs: Sequences, blockSize: number, queries?: QueryRows): Geometry {
  const n = seqs.seqs.length;
  const seqStart = new Int32Array(n);
  const seqLen = new Int32Array(n);
  const blockBase = new Int32Array(n);
  const qStart = new Int32Array(n);
  const qLen = new Int32Array(n);
  const qShift = new Int32Array(n);
  const tiles: number[] = [];
  const keyTiles: number[] = [];
  const cq = queries?.cuSeqlensQ;
  seqs.seqs.forEach((s, i) => {
    seqStart[i] = s.start;
    seqLen[i] = s.len;
    blockBase[i] = s.blockBase;
    qStart[i] = cq ? cq[i]! : s.start;
    qLen[i] = cq ? cq[i + 1]! - cq[i]! : s.len;
    qShift[i] = s.start + s.len - qLen[i] - qStart[i];
    for (let r = 0; r < qLen[i]; r += TILE_ROWS) tiles.push(qStart[i] + r, qStart[i] + Math.min(r + TILE_ROWS, qLen[i]), i);
    for (let j = 0; j < s.nBlocks; j++) {
      const end = s.start + Math.min((j + 1) * blockSize, s.len);
      for (let c = s.start + j * blockSize; c < end; c += KEY_TILE) keyTiles.push(c, Math.min(c + KEY_TILE, end), i, j);
    }
  });
  const { T, Hq, Hkv, D } = dims;
  return {
    T, Tk: dims.Tk ?? T, Hq, Hkv, D, blockSize, seqStart, seqLen, blockBase, qStart, qLen, qShift,
    totalBlocks: seqs.totalBlocks, maxBlocks: seqs.maxBlocks,
    tiles: Int32Array.from(tiles), nTiles: tiles.length / 3,
    keyTiles: Int32Array.from(keyTiles), nKeyTiles: keyTiles.length / 4,
  };
}
