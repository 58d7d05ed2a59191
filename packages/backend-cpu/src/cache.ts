/**
 * The CPU backend's paged KV cache (SPEC §9). Core's CacheShell owns the ids, the page pool with its reference
 * counts, the validation and E_MEMORY; this file holds the storage and wires the stages: append
 * (cache-append.ts, the calling thread) and attend (cache-attend.ts, on the worker pool when large). A page is
 * one MoBA block: keys after kconv and values `[Hkv, B, D]`, the f32 sum of its keys and, once full, its f32
 * centroid, all allocated at creation (in SharedArrayBuffers when the backend has a worker pool).
 */
import {
  type AppendPlan, type AttendPlan, type CacheContents, type CacheHost, type PageCopy, type ResolvedCacheOptions,
  CacheShell, hostTensor, fromFloat,
} from '@moba/core';
import { AppendScratch, type CachePool, appendEntry } from './cache-append.js';
import { cacheAttend } from './cache-attend.js';
import type { Cpu } from './tensor.js';

/** Bytes of one page as this cache allocates it: keys and values (f32), the page's f32 sum and centroid. */
export function cachePageBytes(o: { Hkv: number; D: number; blockSize: number }): number {
  return (2 * o.blockSize * o.Hkv * o.D + 2 * o.Hkv * o.D) * 4;
}

export class CpuCache extends CacheShell<Float32Array> {
  #pool: CachePool;
  readonly #cpu: Cpu;
  readonly #scratch: AppendScratch;

  /** `weight` is the kconv weight's data `[Hkv·D, W]` when `opts.W > 0` (copied). */
  constructor(host: CacheHost<Float32Array>, opts: ResolvedCacheOptions, cpu: Cpu, weight: Float32Array | null) {
    super(host, opts);
    this.#cpu = cpu;
    const { Hkv, D, blockSize: B, pages, W, maxSequences } = opts;
    const C = Hkv * D;
    const wT = new Float32Array(W * C); // [W, C]: wT[ℓ, c] = weight[c, W − 1 − ℓ]
    if (weight) for (let c = 0; c < C; c++) for (let l = 0; l < W; l++) wT[l * C + c] = weight[c * W + (W - 1 - l)]!;
    this.#pool = {
      Hkv, D, B, dtype: opts.dtype, W, wT,
      keys: cpu.mem.f32(pages * C * B), // [pages, Hkv, B, D]
      values: cpu.mem.f32(pages * C * B), // [pages, Hkv, B, D]
      sums: cpu.mem.f32(pages * C), // [pages, Hkv, D]
      centroids: cpu.mem.f32(pages * C), // [pages, Hkv, D]
      state: new Float32Array(maxSequences * Math.max(W - 1, 0) * C), // [maxSequences, W − 1, Hkv, D]
    };
    this.#scratch = new AppendScratch(C, W);
  }

  protected async doAppend(plan: AppendPlan, k: Float32Array, v: Float32Array): Promise<void> {
    for (const e of plan.entries) appendEntry(this.#pool, e, k, v, this.#scratch);
  }

  protected doAttend(plan: AttendPlan, q: Float32Array): Promise<{ out: Float32Array; lse: Float32Array }> {
    return cacheAttend(this.#cpu, this.#pool, plan, q);
  }

  protected async doFork(src: number, dst: number, copy: PageCopy | null): Promise<void> {
    const c = this.#pool;
    const C = c.Hkv * c.D;
    const n = Math.max(c.W - 1, 0) * C;
    c.state.copyWithin(dst * n, src * n, (src + 1) * n);
    if (!copy) return;
    for (let h = 0; h < c.Hkv; h++) { // the first `tokens` rows of each head of the open page
      const from = (copy.src * c.Hkv + h) * c.B * c.D;
      const to = (copy.dst * c.Hkv + h) * c.B * c.D;
      c.keys.copyWithin(to, from, from + copy.tokens * c.D);
      c.values.copyWithin(to, from, from + copy.tokens * c.D);
    }
    c.sums.copyWithin(copy.dst * C, copy.src * C, (copy.src + 1) * C);
  }

  protected async doRead(slot: number, length: number, pages: Int32Array): Promise<CacheContents> {
    const c = this.#pool;
    const { Hkv, D, B } = c;
    const C = Hkv * D;
    const k = new Float32Array(length * C); // [length, Hkv, D]
    const v = new Float32Array(length * C);
    for (let p = 0; p < length; p++) {
      const page = pages[Math.floor(p / B)]!;
      for (let h = 0; h < Hkv; h++) {
        const src = ((page * Hkv + h) * B + (p % B)) * D;
        k.set(c.keys.subarray(src, src + D), (p * Hkv + h) * D);
        v.set(c.values.subarray(src, src + D), (p * Hkv + h) * D);
      }
    }
    const full = Math.floor(length / B);
    const centroids = new Float32Array(full * C); // [full, Hkv, D]
    for (let j = 0; j < full; j++) centroids.set(c.centroids.subarray(pages[j]! * C, (pages[j]! + 1) * C), j * C);
    const openCount = length % B;
    const openSum = openCount > 0 ? c.sums.slice(pages[full]! * C, (pages[full]! + 1) * C) : new Float32Array(C);
    const n = Math.max(c.W - 1, 0);
    const state = length > 0 ? c.state.slice(slot * n * C, (slot + 1) * n * C) : new Float32Array(n * C);
    return {
      length,
      k: fromFloat(k, c.dtype, [length, Hkv, D]), v: fromFloat(v, c.dtype, [length, Hkv, D]),
      centroids: hostTensor('f32', [full, Hkv, D], centroids),
      openSum: hostTensor('f32', [Hkv, D], openSum), openCount,
      kconvState: hostTensor('f32', [n, Hkv, D], state),
      pages: Int32Array.from(pages),
    };
  }

  protected async doDestroy(): Promise<void> {
    const none = new Float32Array(0);
    this.#pool = { ...this.#pool, keys: none, values: none, sums: none, centroids: none, state: none }; // the pool goes with its last reference
  }

  protected metaBytes(): number {
    return this.#pool.state.byteLength + this.#pool.wT.byteLength;
  }
}
