/**
 * The buffers of one backend: labelled storage buffers counted while alive (in use and pooled apart, in
 * buffers and bytes, with the peak of the bytes in use), a pool of freed ones kept for reuse, uploads,
 * uniforms, placeholders for unused bindings, and readback to the host.
 */
/// <reference types="@webgpu/types" />
import { MobaError, fmtBytes } from '@moba/core';

/** GPUBufferUsage / GPUMapMode values (the globals are absent in Node unless installed). */
export const USAGE = { MAP_READ: 0x1, COPY_SRC: 0x4, COPY_DST: 0x8, UNIFORM: 0x40, STORAGE: 0x80, QUERY_RESOLVE: 0x200 } as const;
export const MAP_READ_MODE = 0x1;

/** The limits that bound one buffer. */
export interface BufferLimits {
  readonly maxStorageBufferBindingSize: number;
  readonly maxBufferSize: number;
}

/** Throws E_MEMORY if any of these buffers (name → bytes) exceeds the limits: the check before any allocation. */
export function checkBufferSizes(limits: BufferLimits, sizes: Record<string, number>): void {
  const max = Math.min(limits.maxStorageBufferBindingSize, limits.maxBufferSize);
  for (const [name, bytes] of Object.entries(sizes)) {
    if (bytes > max) {
      throw new MobaError('E_MEMORY', `buffer ${name} needs ${fmtBytes(bytes)}, over this device's limit of ${fmtBytes(max)} per storage binding (maxStorageBufferBindingSize / maxBufferSize)`, 'workspace');
    }
  }
}

/**
 * The size class of a recyclable temporary of `bytes`: at least 256 bytes, else the smallest of 2^k, 1.25·2^k,
 * 1.5·2^k, 1.75·2^k that holds it (at most 25% unused). Temporaries whose size changes from call to call (a
 * decode step's tables and partials grow with the cache) then still find a freed buffer of their class.
 */
export function sizeClass(bytes: number): number {
  if (bytes <= 256) return 256;
  const base = 2 ** Math.floor(Math.log2(bytes));
  for (const f of [1, 1.25, 1.5, 1.75, 2]) if (base * f >= bytes) return base * f;
  return 2 * base;
}

/** The words freed buffers are filled with in poison mode: a NaN as f32 (and as the upper f16), far out of range as an index. */
export const POISON_WORD = 0x7fa5a5a5;

/** Every buffer of every GpuContext in this process, in use or pooled (for leak checks). */
let liveBuffersTotal = 0;
export function liveBufferCount(): number {
  return liveBuffersTotal;
}

/**
 * The buffers a backend holds: destroyed with it (`destroy`), freed ones kept for reuse up to `poolCapBytes`.
 * `checkAlive` throws E_DEVICE once the device is lost (GpuContext.checkAlive).
 */
export class BufferPool {
  #buffers = new Set<GPUBuffer>(); // every buffer this pool holds: in use, or kept for reuse (#pool)
  /**
   * Freed buffers kept for reuse, by size and usage: creating and destroying the large per-op temporaries
   * (partials of ~1 GiB at 8K tokens in the 16-head, D 128, bf16, B 128, top-8 bench configuration) costs far more than the kernels on
   * some drivers. A reused buffer is cleared to zero first, as a new one would be. When a freed buffer does not
   * fit under the cap, the oldest kept ones are destroyed to make room: the sizes of the latest problem stay.
   */
  #pool = new Map<string, GPUBuffer[]>();
  #pooled = new Set<GPUBuffer>(); // in the order they were kept (oldest first)
  #pooledBytes = 0;
  #heldBytes = 0; // bytes of #buffers
  #peakInUse = 0;
  /** Most bytes of freed buffers kept for reuse (the backend sets it from its memory budget). */
  poolCapBytes = 0;
  #dummies = new Map<string, GPUBuffer>();
  /** Bytes a caller asked for, where the buffer is larger (a size class): what is bound and reported. */
  #logical = new Map<GPUBuffer, number>();
  /**
   * Test mode: every buffer kept for reuse is filled with POISON_WORD, so that an op relying on a reused buffer
   * being zero (or on bytes it did not write) gives a different result than on fresh buffers.
   */
  poisonFreed = false;

  readonly #checkAlive: () => void;

  constructor(readonly device: GPUDevice, readonly limits: BufferLimits, checkAlive: () => void = () => {}) {
    this.#checkAlive = checkAlive;
  }

  /**
   * A 16-byte placeholder for a binding an entry point does not use. Read-only placeholders may be shared;
   * writable bindings of one dispatch must not alias (a validation error), so each `slot` gets its own.
   */
  placeholder(kind: 'read' | 'rw', slot = 0): GPUBuffer {
    const key = kind === 'read' ? 'read' : `rw ${slot}`;
    let b = this.#dummies.get(key);
    if (!b) this.#dummies.set(key, (b = this.buffer(`placeholder ${key}`, 16)));
    return b;
  }

  /** Buffers in use (tensors, routings, placeholders, temporaries of an op in flight): held, not pooled. */
  get liveBuffers(): number {
    return this.#buffers.size - this.#pooled.size;
  }

  /** Freed buffers kept for reuse. */
  get pooledBuffers(): number {
    return this.#pooled.size;
  }

  /** Every buffer this pool holds (in use + pooled); 0 after destroy(). */
  get heldBuffers(): number {
    return this.#buffers.size;
  }

  /** Bytes of the buffers in use. */
  get inUseBytes(): number {
    return this.#heldBytes - this.#pooledBytes;
  }

  /** Most bytes in use at once since creation or `resetPeak()`. */
  get peakBytes(): number {
    return this.#peakInUse;
  }

  resetPeak(): void {
    this.#peakInUse = this.inUseBytes;
  }

  /**
   * A labelled storage buffer (at least 16 bytes: empty bindings are invalid). `classed`: a temporary, made
   * (or reused) at its size class so that it can be recycled across calls of varying size; only its first
   * `bytes` are bound (`sizeOf`). A reused buffer is cleared to zero, as a new one is, unless `overwritten`
   * (the caller writes all of its first `bytes` before any use).
   */
  buffer(label: string, bytes: number, usage: number = USAGE.STORAGE | USAGE.COPY_SRC | USAGE.COPY_DST, classed = false, overwritten = false): GPUBuffer {
    this.#checkAlive();
    checkBufferSizes(this.limits, { [label]: bytes });
    const logical = Math.max(16, Math.ceil(bytes / 4) * 4);
    const size = classed ? Math.min(sizeClass(logical), Math.max(logical, Math.min(this.limits.maxBufferSize, this.limits.maxStorageBufferBindingSize))) : logical;
    const reused = this.#pool.get(`${size}:${usage}`)?.pop();
    const b = reused ?? this.device.createBuffer({ label, size, usage });
    if (size !== logical) this.#logical.set(b, logical);
    else this.#logical.delete(b);
    if (reused) {
      this.#pooled.delete(reused);
      this.#pooledBytes -= size;
      reused.label = label;
      if (!overwritten) {
        const enc = this.device.createCommandEncoder();
        enc.clearBuffer(reused); // zero, as a new buffer is; queued before any later write or use
        this.device.queue.submit([enc.finish()]);
      }
    } else {
      this.#buffers.add(b);
      this.#heldBytes += b.size;
      liveBuffersTotal++;
    }
    this.#notePeak();
    return b;
  }

  /** The bytes of `b` in use: what its caller asked for (rounded to 4, ≥ 16), below `b.size` for a size class. */
  sizeOf(b: GPUBuffer): number {
    return this.#logical.get(b) ?? b.size;
  }

  /** A storage buffer holding `data`; `classed`: a recyclable temporary (see `buffer`). */
  upload(label: string, data: ArrayBufferView, usage?: number, classed = false): GPUBuffer {
    const full = data.byteLength >= 16 && data.byteLength % 4 === 0;
    const b = this.buffer(label, data.byteLength, usage, classed, full);
    if (data.byteLength > 0) this.device.queue.writeBuffer(b, 0, data.buffer, data.byteOffset, data.byteLength); // byteLength % 4 === 0
    return b;
  }

  /** A uniform buffer of u32 words (pass f32 through `f32bits`). */
  uniforms(label: string, words: readonly number[]): GPUBuffer {
    const data = new Uint32Array(Math.max(4, Math.ceil(words.length / 4) * 4));
    data.set(words);
    return this.upload(label, data, USAGE.UNIFORM | USAGE.COPY_DST, true);
  }

  /**
   * Gives buffers back: kept for reuse (only COPY_DST buffers, which can be cleared), the oldest kept ones
   * destroyed when the pool would exceed its cap; else destroyed. Work already submitted that uses them is
   * unaffected (the queue is ordered).
   */
  free(...bufs: (GPUBuffer | undefined)[]): void {
    for (const b of bufs) {
      if (!b || !this.#buffers.has(b) || this.#pooled.has(b)) continue;
      if ((b.usage & USAGE.COPY_DST) !== 0 && b.mapState === 'unmapped' && b.size <= this.poolCapBytes) {
        for (const old of this.#pooled) {
          if (this.#pooledBytes + b.size <= this.poolCapBytes) break;
          this.#evict(old);
        }
        const key = `${b.size}:${b.usage}`;
        const list = this.#pool.get(key);
        if (list) list.push(b);
        else this.#pool.set(key, [b]);
        this.#pooled.add(b);
        this.#pooledBytes += b.size;
        this.#logical.delete(b);
        if (this.poisonFreed) this.device.queue.writeBuffer(b, 0, new Uint32Array(b.size / 4).fill(POISON_WORD));
        continue;
      }
      this.#destroyBuffer(b);
    }
  }

  /** Bytes of freed buffers kept for reuse. */
  get pooledBytes(): number {
    return this.#pooledBytes;
  }

  /** Destroys every buffer kept for reuse (before reporting that a request does not fit). */
  trim(): void {
    for (const b of [...this.#pooled]) this.#evict(b);
  }

  #notePeak(): void {
    this.#peakInUse = Math.max(this.#peakInUse, this.inUseBytes);
  }

  #evict(b: GPUBuffer): void {
    const list = this.#pool.get(`${b.size}:${b.usage}`);
    list?.splice(list.indexOf(b), 1);
    this.#pooled.delete(b);
    this.#pooledBytes -= b.size;
    this.#destroyBuffer(b);
  }

  #destroyBuffer(b: GPUBuffer): void {
    if (this.#buffers.delete(b)) {
      this.#logical.delete(b);
      this.#heldBytes -= b.size;
      liveBuffersTotal--;
      b.destroy();
    }
  }

  /** Copies a buffer's first `bytes` back to the host. */
  async read(src: GPUBuffer, bytes: number): Promise<ArrayBuffer> {
    this.#checkAlive();
    if (bytes === 0) return new ArrayBuffer(0);
    const size = Math.ceil(bytes / 4) * 4;
    const staging = this.buffer(`${src.label} readback`, size, USAGE.MAP_READ | USAGE.COPY_DST);
    try {
      const enc = this.device.createCommandEncoder({ label: `read ${src.label}` });
      enc.copyBufferToBuffer(src, 0, staging, 0, size);
      this.device.queue.submit([enc.finish()]);
      try {
        await staging.mapAsync(MAP_READ_MODE);
      } catch (e) {
        this.#checkAlive();
        throw new MobaError('E_DEVICE', `mapAsync failed for ${src.label}: ${(e as Error).message}`, 'device');
      }
      const out = staging.getMappedRange().slice(0, bytes);
      staging.unmap();
      return out;
    } finally {
      this.free(staging);
    }
  }

  /** Frees every buffer. */
  destroy(): void {
    for (const b of [...this.#buffers]) this.#destroyBuffer(b);
    this.#pool.clear();
    this.#pooled.clear();
    this.#pooledBytes = 0;
    this.#peakInUse = 0;
    this.#dummies.clear();
    this.#logical.clear();
  }
}
