/**
 * Device buffers of one backend: allocation with a size-keyed reuse pool (released buffers kept up to
 * POOL_CAP bytes, given back when an allocation would not fit otherwise), reusable workspace slots,
 * per-op scratch lists, the E_MEMORY check against free device memory, live/peak statistics, and the
 * collection of buffers whose handles were garbage-collected without dispose().
 */
import { MobaError } from '@moba/core';
import type { CudaDriver } from './driver.js';
import { checkFits, reserveBytes, slotAction } from './memory.js';

export interface Buf {
  ptr: bigint;
  readonly bytes: number;
  freed: boolean;
}

/** Most bytes of released buffers kept for reuse. */
export const POOL_CAP = 16 * 2 ** 30;

export class Allocator {
  readonly #drv: CudaDriver;
  /** Bytes kept free for the driver and other allocations. */
  readonly reserve: number;
  readonly #live = new Set<Buf>();
  readonly #workspace = new Map<string, Buf>();
  /** Released device buffers kept for reuse, by size (cuMemAlloc/cuMemFree cost more than small ops at 8K). */
  readonly #pool = new Map<number, bigint[]>();
  #pooledBytes = 0;
  /** Free device memory at the last query, and bytes allocated here since (frees are not subtracted: conservative). */
  #freeSeen: number | null = null;
  #allocatedSince = 0;
  #liveBytes = 0;
  #peakBytes = 0;
  #destroyed = false;
  /** Frees the memory of tensors and routings that were garbage-collected without dispose(). */
  readonly #gc = new FinalizationRegistry<Buf>((b) => {
    if (this.#destroyed || b.freed) return;
    this.#live.delete(b);
    this.#freeQuietly(b);
  });

  constructor(drv: CudaDriver, totalBytes: number) {
    this.#drv = drv;
    this.reserve = reserveBytes(totalBytes);
  }

  /** Frees `b` when `handle` is garbage-collected (until `unregister(handle)`). */
  register(handle: object, b: Buf): void {
    this.#gc.register(handle, b, handle);
  }

  unregister(handle: object): void {
    this.#gc.unregister(handle);
  }

  /** E_MEMORY before allocating when `bytes` more do not fit in free device memory. */
  fits(what: string, bytes: number): void {
    // cuMemGetInfo costs ~25 µs, a decode step's whole budget at 8K: a request below a quarter of the free memory
    // estimated from the last query and this allocator's own allocations since is let through without one
    if (this.#freeSeen !== null && bytes <= (this.#freeSeen - this.#allocatedSince - this.reserve) / 4) return;
    let free = this.#memFree();
    if (bytes > free - this.reserve && this.#pooledBytes > 0) {
      this.trimPool(); // cached buffers count as free
      free = this.#memFree();
    }
    checkFits(what, bytes, free, this.reserve);
  }

  /** Free device memory now (and the base of fits()' estimate). */
  #memFree(): number {
    const free = this.#drv.memInfo().free;
    this.#freeSeen = free;
    this.#allocatedSince = 0;
    return free;
  }

  /** cuMemAlloc; out of memory (another process took what fits() estimated free) is E_MEMORY. */
  #memAlloc(size: number): bigint {
    let p: bigint;
    try {
      p = this.#drv.memAlloc(size);
    } catch (e) {
      if (e instanceof Error && e.message.includes('CUDA_ERROR_OUT_OF_MEMORY')) {
        this.#freeSeen = null;
        throw new MobaError('E_MEMORY', `a device allocation of ${size} bytes failed: out of device memory (${e.message})`, 'workspace');
      }
      throw e;
    }
    this.#allocatedSince += size;
    return p;
  }

  /** Frees every cached buffer. */
  trimPool(): void {
    for (const list of this.#pool.values()) for (const p of list) this.#drv.memFree(p);
    this.#pool.clear();
    this.#pooledBytes = 0;
  }

  alloc(bytes: number): Buf {
    const size = Math.max(bytes, 16);
    const cached = this.#pool.get(size)?.pop();
    let p: bigint;
    if (cached !== undefined) {
      p = cached;
      this.#pooledBytes -= size;
    } else {
      try {
        p = this.#memAlloc(size);
      } catch (e) {
        if (this.#pooledBytes === 0) throw e;
        this.trimPool(); // out of memory with buffers cached: give them back and try once more
        p = this.#memAlloc(size);
      }
    }
    const b: Buf = { ptr: p, bytes, freed: false };
    this.#live.add(b);
    this.#liveBytes += Math.max(bytes, 16);
    this.#peakBytes = Math.max(this.#peakBytes, this.#liveBytes);
    return b;
  }

  #freeQuietly(b: Buf): void {
    if (b.freed) return;
    b.freed = true;
    this.#liveBytes -= Math.max(b.bytes, 16);
    try { this.#drv.memFree(b.ptr); } catch { /* the context may be gone */ }
  }

  /** Returns a buffer to the cache (every op has synchronised before its buffers can be released). */
  release(b: Buf): void {
    if (b.freed || this.#destroyed) return;
    this.#live.delete(b);
    b.freed = true;
    const size = Math.max(b.bytes, 16);
    this.#liveBytes -= size;
    if (this.#pooledBytes + size > POOL_CAP) {
      this.#drv.memFree(b.ptr);
      return;
    }
    const list = this.#pool.get(size);
    if (list) list.push(b.ptr);
    else this.#pool.set(size, [b.ptr]);
    this.#pooledBytes += size;
  }

  /** A buffer for the current op only: listed in `scratch`, which the op releases when it ends. */
  scratch(scratch: Buf[], bytes: number): Buf {
    const b = this.alloc(bytes);
    scratch.push(b);
    return b;
  }

  /** A reusable workspace buffer of at least `bytes` (same-sized problems reuse it). */
  slot(name: string, bytes: number): Buf {
    const have = this.#workspace.get(name);
    if (slotAction(have?.bytes, bytes) === 'reuse') return have!;
    if (have) this.release(have);
    const b = this.alloc(bytes);
    this.#workspace.set(name, b);
    return b;
  }

  /** Uploads a small int32 table into its workspace slot. */
  small(name: string, data: Int32Array): bigint {
    const b = this.slot(name, data.byteLength);
    this.#drv.copyHtoD(b.ptr, data);
    return b.ptr;
  }

  stats(): { liveBytes: number; peakBytes: number; cachedBytes: number } {
    return { liveBytes: this.#liveBytes, peakBytes: this.#peakBytes, cachedBytes: this.#pooledBytes };
  }

  resetPeak(): void {
    this.#peakBytes = this.#liveBytes;
  }

  /** From now on nothing is released to the pool or freed by collection (the backend is being destroyed). */
  markDestroyed(): void {
    this.#destroyed = true;
  }

  /** Frees every live and cached buffer (after markDestroyed()). */
  freeAll(): void {
    for (const b of this.#live) this.#freeQuietly(b);
    this.#live.clear();
    try { this.trimPool(); } catch { /* the context may be gone */ }
    this.#workspace.clear();
  }
}
