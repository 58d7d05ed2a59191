/**
 * The KV cache's append stage (SPEC §9, §6): new raw keys and values of one sequence go into its pages.
 * With kconv, `k'_t = k_t + SiLU(Σ_ℓ w_ℓ ⊙ k_{t−ℓ})` reads the taps before the chunk from the sequence's
 * state (its last W − 1 raw keys), so a sequence appended in any chunks holds the keys of one kconv over the
 * whole sequence (the same arithmetic as kconv.ts, bitwise). Each page keeps an f32 running sum of its keys;
 * the token that fills a page writes its centroid `sum / B`. Runs in the calling thread (a step appends a few
 * tokens; the work is O(tokens · Hkv · D · W)).
 */
import { type AppendEntry, type DType, roundTo } from '@moba/core';

/** The pool and per-sequence state of one CPU cache; every array is f32 (values exact in the cache dtype). */
export interface CachePool {
  readonly Hkv: number;
  readonly D: number;
  readonly B: number;
  readonly dtype: DType;
  /** kconv width (0: none). */
  readonly W: number;
  /** Convolved keys and values `[pages, Hkv, B, D]`: a page is head-major, so one head's block is contiguous. */
  readonly keys: Float32Array;
  readonly values: Float32Array;
  /** f32 sum of each page's keys `[pages, Hkv, D]` (its first `tokens` rows). */
  readonly sums: Float32Array;
  /** f32 centroid of each full page `[pages, Hkv, D]` (sum / B; stale for open pages). */
  readonly centroids: Float32Array;
  /** kconv state `[maxSequences, W − 1, Hkv, D]`: the last W − 1 raw keys, oldest first, zero before the start. */
  readonly state: Float32Array;
  /** kconv weight transposed `[W, Hkv·D]`: `wT[ℓ, c] = w_ℓ[c] = weight[c, W − 1 − ℓ]`. */
  readonly wT: Float32Array;
}

/** Scratch of one append: the pre-activation and the convolved key of one token, the new state. */
export class AppendScratch {
  readonly z: Float64Array;
  readonly state: Float32Array;
  constructor(C: number, W: number) {
    this.z = new Float64Array(C);
    this.state = new Float32Array(Math.max(W - 1, 0) * C);
  }
}

/** Appends rows `[e.row, e.row + e.count)` of raw `k`, `v` `[T, Hkv, D]` to the sequence of entry `e`. */
export function appendEntry(c: CachePool, e: AppendEntry, k: Float32Array, v: Float32Array, s: AppendScratch): void {
  const { Hkv, D, B, W } = c;
  const C = Hkv * D;
  for (let i = 0; i < e.count; i++) {
    const p = e.pos0 + i; // position in the sequence
    const page = e.pages[Math.floor(p / B)]!;
    const o = p % B; // row in the page
    const kRow = (e.row + i) * C;
    if (W > 0) convolve(c, e, k, i, s.z);
    if (o === 0) c.sums.fill(0, page * C, (page + 1) * C); // a page starts (maybe reused after a free)
    for (let h = 0; h < Hkv; h++) {
      const dst = ((page * Hkv + h) * B + o) * D;
      const src = kRow + h * D;
      if (W > 0) activate(c.dtype, k, src, s.z, h * D, c.keys, dst, D);
      else c.keys.set(k.subarray(src, src + D), dst);
      c.values.set(v.subarray(src, src + D), dst);
      addTo(c.sums, (page * Hkv + h) * D, c.keys, dst, D); // f32 running sum: the Float32Array store rounds each step
    }
    if (o === B - 1) { // the page is full: its centroid, in f32
      for (let x = page * C; x < (page + 1) * C; x++) c.centroids[x] = c.sums[x]! / B;
    }
  }
  if (W > 1) shiftState(c, e, k, s);
}

/** keys[dst + d] = k[src + d] + SiLU(z[zo + d]) as the dtype holds it: k + z·σ(z), exactly as kconv.ts. */
function activate(dtype: DType, k: Float32Array, src: number, z: Float64Array, zo: number, keys: Float32Array, dst: number, D: number): void {
  if (dtype === 'f32') {
    for (let d = 0; d < D; d++) {
      const x = z[zo + d]!;
      keys[dst + d] = k[src + d]! + x / (1 + Math.exp(-x)); // the Float32Array store rounds
    }
  } else {
    for (let d = 0; d < D; d++) {
      const x = z[zo + d]!;
      keys[dst + d] = roundTo(dtype, k[src + d]! + x / (1 + Math.exp(-x)));
    }
  }
}

/** sums[so + d] += keys[ko + d] for d < D. */
function addTo(sums: Float32Array, so: number, keys: Float32Array, ko: number, D: number): void {
  for (let d = 0; d < D; d++) sums[so + d] += keys[ko + d]!;
}

/** The raw key row of position `p` (≥ 0, ≥ e.pos0 − (W − 1)): in the chunk or in the state. */
function rawAt(c: CachePool, e: AppendEntry, k: Float32Array, p: number): { a: Float32Array; off: number } {
  const C = c.Hkv * c.D;
  if (p >= e.pos0) return { a: k, off: (e.row + p - e.pos0) * C };
  return { a: c.state, off: (e.slot * (c.W - 1) + p - e.pos0 + c.W - 1) * C };
}

/** z[c] = Σ_ℓ wT[ℓ, c] · k[p − ℓ, c] for taps at positions ≥ 0 (before the start they read zero: skipped). */
function convolve(c: CachePool, e: AppendEntry, k: Float32Array, i: number, z: Float64Array): void {
  const C = c.Hkv * c.D;
  const p = e.pos0 + i;
  z.fill(0);
  for (let l = 0; l < c.W && p - l >= 0; l++) {
    const { a, off } = rawAt(c, e, k, p - l);
    const wo = l * C;
    for (let x = 0; x < C; x++) z[x] += c.wT[wo + x]! * a[off + x]!;
  }
}

/** The sequence's last W − 1 raw keys after the append (zero before the sequence start). */
function shiftState(c: CachePool, e: AppendEntry, k: Float32Array, s: AppendScratch): void {
  const C = c.Hkv * c.D;
  const n = c.W - 1;
  const end = e.pos0 + e.count;
  s.state.fill(0);
  for (let i = 0; i < n; i++) {
    const p = end - n + i;
    if (p < 0) continue;
    const { a, off } = rawAt(c, e, k, p);
    s.state.set(a.subarray(off, off + C), i * C);
  }
  c.state.set(s.state, e.slot * n * C);
}
