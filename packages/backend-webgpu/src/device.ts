/**
 * The GPU side of the backend: opening a device (navigator.gpu in browsers, Dawn's `webgpu` package in Node)
 * with the adapter's limits and features, labelled buffers counted while alive, pipelines cached per device,
 * and submissions wrapped in error scopes so that validation errors and device loss become E_DEVICE.
 */
/// <reference types="@webgpu/types" />
import { MobaError, fmtBytes } from '@moba/core';

/** GPUBufferUsage / GPUMapMode values (the globals are absent in Node unless installed). */
export const USAGE = { MAP_READ: 0x1, COPY_SRC: 0x4, COPY_DST: 0x8, UNIFORM: 0x40, STORAGE: 0x80, QUERY_RESOLVE: 0x200 } as const;
const MAP_READ_MODE = 0x1;

/** Limits the backend asks for: as much as the adapter offers. */
const WANTED_LIMITS = [
  'maxStorageBufferBindingSize', 'maxBufferSize', 'maxComputeWorkgroupStorageSize', 'maxComputeInvocationsPerWorkgroup',
  'maxComputeWorkgroupSizeX', 'maxStorageBuffersPerShaderStage', 'maxComputeWorkgroupsPerDimension',
] as const;

/**
 * The `navigator.gpu` of a browser, or a new Dawn instance in Node (`null` when neither exists).
 * Dawn's object must stay referenced while any device made from it is in use: once it is garbage-collected,
 * Dawn's instance goes away under the device and the process crashes or hangs at the next GPU wait (see
 * docs/webgpu.md). In Node one Dawn instance is made per process and kept for its whole life: releasing an
 * instance after its device is destroyed still crashed now and then (a native `std::system_error` when the
 * collector ran while Dawn's threads were winding down), and one shared instance cannot be collected at all.
 */
export async function getGpu(): Promise<GPU | null> {
  const nav = (globalThis as { navigator?: { gpu?: GPU } }).navigator;
  if (nav?.gpu) return nav.gpu;
  if (typeof process === 'undefined' || !process.versions?.node) return null;
  // unquantized timestamps: they serve only the `profile` option's per-kernel times
  dawn ??= import('webgpu')
    .then((mod: { create(opts: string[]): GPU }) => mod.create(['disable-dawn-features=timestamp_quantization']))
    .catch(() => null);
  return dawn;
}

/** The process's Dawn instance (Node only), created on first use and never released. */
let dawn: Promise<GPU | null> | undefined;

/** A device and the GPU object it came from (keep both referenced while the device is in use). */
export interface OpenedDevice {
  readonly gpu: GPU;
  readonly device: GPUDevice;
}

/**
 * Opens a device with the adapter's limits and `shader-f16` when offered (and `timestamp-query` for
 * `timestamps`, when offered); E_DEVICE when there is no adapter.
 */
export async function openDevice(opts: { timestamps?: boolean } = {}): Promise<OpenedDevice> {
  const gpu = await getGpu();
  if (!gpu) throw new MobaError('E_DEVICE', 'WebGPU is not available: no navigator.gpu and no `webgpu` package (Dawn) to load', 'device');
  const adapter = await gpu.requestAdapter({ powerPreference: 'high-performance' });
  if (!adapter) throw new MobaError('E_DEVICE', 'WebGPU is available but requestAdapter() returned no adapter', 'device');
  const requiredLimits: Record<string, number> = {};
  for (const name of WANTED_LIMITS) {
    const v = (adapter.limits as unknown as Record<string, number | undefined>)[name];
    if (typeof v === 'number') requiredLimits[name] = v;
  }
  const requiredFeatures: GPUFeatureName[] = adapter.features.has('shader-f16') ? ['shader-f16'] : [];
  if (opts.timestamps && adapter.features.has('timestamp-query')) requiredFeatures.push('timestamp-query');
  try {
    const device = await adapter.requestDevice({ label: 'moba-webgpu', requiredLimits, requiredFeatures });
    return { gpu, device };
  } catch (e) {
    throw new MobaError('E_DEVICE', `requestDevice() failed: ${(e as Error).message}`, 'device');
  }
}

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

/** Every live buffer of every GpuContext in this process (for leak checks). */
let liveBuffersTotal = 0;
export function liveBufferCount(): number {
  return liveBuffersTotal;
}

const pipelineCache = new WeakMap<GPUDevice, Map<string, Promise<GPUComputePipeline>>>();

/** A WGSL module with its bindings in order: `uniform`, `read` (read-only storage) or `rw` (storage). */
export interface ShaderSpec {
  readonly name: string;
  readonly code: string;
  readonly bindings: readonly ('uniform' | 'read' | 'rw')[];
}

/** One compute pass: a pipeline, its bindings in order (binding i = buffers[i]) and the workgroup grid. */
export interface Dispatch {
  readonly pipeline: GPUComputePipeline | Promise<GPUComputePipeline>;
  readonly buffers: readonly GPUBuffer[];
  readonly grid: readonly [number, number?, number?];
}

/**
 * A device plus the bookkeeping of one backend: its live buffers (destroyed with it), the per-device
 * pipeline cache, and submission with error scopes.
 */
export class GpuContext {
  readonly limits: GPUSupportedLimits;
  readonly hasF16: boolean;
  #buffers = new Set<GPUBuffer>(); // every buffer this context holds: in use, or kept for reuse (#pool)
  /**
   * Freed buffers kept for reuse, by size and usage: creating and destroying the large per-op temporaries
   * (partials of ~1 GiB at 8K tokens in the peers.md configuration) costs far more than the kernels on
   * some drivers. A reused buffer is cleared to zero first, as a new one would be. When a freed buffer does not
   * fit under the cap, the oldest kept ones are destroyed to make room: the sizes of the latest problem stay.
   */
  #pool = new Map<string, GPUBuffer[]>();
  #pooled = new Set<GPUBuffer>(); // in the order they were kept (oldest first)
  #pooledBytes = 0;
  /** Most bytes of freed buffers kept for reuse (the backend sets it from its memory budget). */
  poolCapBytes = 0;
  #lost: string | null = null;

  /** The GPU object the device came from, held until `destroy()` (Dawn crashes if it is collected first). */
  #gpu: GPU | null;

  /**
   * `gpu`: the object the device was opened from, when this context opened it (see `getGpu`); the context
   * keeps it referenced until `destroy()`. A caller passing its own device keeps its own GPU object alive.
   */
  constructor(readonly device: GPUDevice, readonly ownsDevice: boolean, gpu: GPU | null = null) {
    this.#gpu = gpu;
    this.limits = device.limits;
    this.hasF16 = device.features.has('shader-f16');
    device.lost.then((info) => {
      if (info.reason !== 'destroyed') this.#lost = `the WebGPU device was lost (${info.reason}): ${info.message}`;
      else this.#lost ??= 'the WebGPU device was destroyed';
    }, () => undefined);
  }

  /** The GPU object this context keeps alive (null for a caller's device, and after `destroy()`). */
  get gpu(): GPU | null {
    return this.#gpu;
  }

  #dummies = new Map<string, GPUBuffer>();

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

  get liveBuffers(): number {
    return this.#buffers.size;
  }

  /** Throws E_DEVICE if the device was lost. */
  checkAlive(): void {
    if (this.#lost) throw new MobaError('E_DEVICE', this.#lost, 'device');
  }

  /** Throws E_MEMORY, before anything is allocated, if any of these buffers exceeds the device's limits. */
  checkSizes(sizes: Record<string, number>): void {
    checkBufferSizes(this.limits, sizes);
  }

  /** A labelled storage buffer (at least 16 bytes: empty bindings are invalid). */
  buffer(label: string, bytes: number, usage = USAGE.STORAGE | USAGE.COPY_SRC | USAGE.COPY_DST): GPUBuffer {
    this.checkAlive();
    this.checkSizes({ [label]: bytes });
    const size = Math.max(16, Math.ceil(bytes / 4) * 4);
    const reused = this.#pool.get(`${size}:${usage}`)?.pop();
    if (reused) {
      this.#pooled.delete(reused);
      this.#pooledBytes -= size;
      reused.label = label;
      const enc = this.device.createCommandEncoder();
      enc.clearBuffer(reused); // zero, as a new buffer is; queued before any later write or use
      this.device.queue.submit([enc.finish()]);
      return reused;
    }
    const b = this.device.createBuffer({ label, size, usage });
    this.#buffers.add(b);
    liveBuffersTotal++;
    return b;
  }

  /** A storage buffer holding `data`. */
  upload(label: string, data: ArrayBufferView, usage?: number): GPUBuffer {
    const b = this.buffer(label, data.byteLength, usage);
    if (data.byteLength > 0) this.device.queue.writeBuffer(b, 0, data.buffer, data.byteOffset, data.byteLength); // byteLength % 4 === 0
    return b;
  }

  /** A uniform buffer of u32 words (pass f32 through `f32bits`). */
  uniforms(label: string, words: readonly number[]): GPUBuffer {
    const data = new Uint32Array(Math.max(4, Math.ceil(words.length / 4) * 4));
    data.set(words);
    return this.upload(label, data, USAGE.UNIFORM | USAGE.COPY_DST);
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
        continue;
      }
      this.#destroyBuffer(b);
    }
  }

  /** Bytes of freed buffers kept for reuse. */
  get pooledBytes(): number {
    return this.#pooledBytes;
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
      liveBuffersTotal--;
      b.destroy();
    }
  }

  /**
   * A compute pipeline for `entry` of a shader, cached per device. Every entry point of a shader shares one
   * explicit layout, `bindings[i]` being binding i, so a launcher binds the same list for all of them.
   * A shader that fails to compile gives E_DEVICE with the compiler's message (and is not cached).
   */
  async pipeline(shader: ShaderSpec, entry: string, constants: Record<string, number> = {}): Promise<GPUComputePipeline> {
    const key = `${shader.name}:${entry}:${Object.entries(constants).map(([k, v]) => `${k}=${v}`).join(',')}`;
    let cache = pipelineCache.get(this.device);
    if (!cache) pipelineCache.set(this.device, (cache = new Map()));
    let p = cache.get(key);
    if (!p) {
      const dev = this.device;
      dev.pushErrorScope('validation'); // compile errors come back through the async pipeline's rejection
      const module = dev.createShaderModule({ label: shader.name, code: shader.code });
      const entries: GPUBindGroupLayoutEntry[] = shader.bindings.map((kind, binding) => ({
        binding, visibility: 0x4, // GPUShaderStage.COMPUTE
        buffer: { type: kind === 'uniform' ? 'uniform' : kind === 'read' ? 'read-only-storage' : 'storage' },
      }));
      const bgl = dev.createBindGroupLayout({ label: `${shader.name} layout`, entries });
      const layout = dev.createPipelineLayout({ label: `${shader.name} pipeline layout`, bindGroupLayouts: [bgl] });
      p = Promise.resolve(dev.createComputePipeline({ label: key, layout, compute: { module, entryPoint: entry, constants } }));
      const scope = dev.popErrorScope();
      cache.set(key, p);
      const err = await scope;
      if (err) {
        cache.delete(key);
        p.catch(() => undefined);
        const info = await module.getCompilationInfo();
        const msgs = info.messages.map((m) => `${m.lineNum}:${m.linePos} ${m.message}`).join('; ');
        throw new MobaError('E_DEVICE', `WebGPU shader ${key} failed: ${msgs || err.message}`, 'device');
      }
    }
    try {
      return await p;
    } catch (e) {
      cache.delete(key);
      throw new MobaError('E_DEVICE', `WebGPU pipeline ${key} failed: ${(e as Error).message}`, 'device');
    }
  }

  /** GPU time per kernel (`shader:entry`) in ms, summed over the submissions since profiling was enabled. */
  readonly kernelMs = new Map<string, number>();
  #profiling = false;

  /** Times every compute pass with timestamp queries from now on; false when the device lacks `timestamp-query`. */
  enableProfiling(): boolean {
    this.#profiling = this.device.features.has('timestamp-query');
    return this.#profiling;
  }

  /** Encodes the dispatches in order into one command buffer, submits it, and turns GPU errors into E_DEVICE. */
  async run(label: string, dispatches: readonly Dispatch[]): Promise<void> {
    this.checkAlive();
    const dev = this.device;
    const pipelines = await Promise.all(dispatches.map((d) => d.pipeline));
    const prof = this.#profiling ? new Profile(dev, pipelines.length) : null;
    dev.pushErrorScope('internal');
    dev.pushErrorScope('out-of-memory');
    dev.pushErrorScope('validation');
    let scopes: Promise<GPUError | null>[];
    try {
      const enc = dev.createCommandEncoder({ label });
      for (const [i, d] of dispatches.entries()) {
        const pipeline = pipelines[i]!;
        const bind = dev.createBindGroup({
          label: `${pipeline.label} bindings`,
          layout: pipeline.getBindGroupLayout(0),
          entries: d.buffers.map((buffer, binding) => ({ binding, resource: { buffer } })),
        });
        const pass = enc.beginComputePass({ label: pipeline.label, ...(prof ? { timestampWrites: prof.next(pipeline.label) } : {}) });
        pass.setPipeline(pipeline);
        pass.setBindGroup(0, bind);
        pass.dispatchWorkgroups(d.grid[0], d.grid[1] ?? 1, d.grid[2] ?? 1);
        pass.end();
      }
      prof?.resolve(enc);
      dev.queue.submit([enc.finish()]);
    } finally {
      // pop all three now, synchronously and even if encoding threw, so the scope stack stays balanced and
      // no other op's scopes can interleave with ours
      scopes = [dev.popErrorScope(), dev.popErrorScope(), dev.popErrorScope()];
    }
    const errors = (await Promise.all(scopes)).filter((e): e is GPUError => e !== null);
    this.checkAlive();
    if (errors.length > 0) {
      prof?.destroy();
      throw new MobaError('E_DEVICE', `WebGPU error in ${label}: ${errors.map((e) => e.message).join('; ')}`, 'device');
    }
    if (prof) await prof.collect(this.kernelMs);
  }

  /** Copies a buffer's first `bytes` back to the host. */
  async read(src: GPUBuffer, bytes: number): Promise<ArrayBuffer> {
    this.checkAlive();
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
        this.checkAlive();
        throw new MobaError('E_DEVICE', `mapAsync failed for ${src.label}: ${(e as Error).message}`, 'device');
      }
      const out = staging.getMappedRange().slice(0, bytes);
      staging.unmap();
      return out;
    } finally {
      this.free(staging);
    }
  }

  /** Frees every buffer; destroys the device when this context opened it. */
  destroy(): void {
    for (const b of [...this.#buffers]) this.#destroyBuffer(b);
    this.#pool.clear();
    this.#pooled.clear();
    this.#pooledBytes = 0;
    this.#dummies.clear();
    if (this.ownsDevice) this.device.destroy();
    this.#gpu = null; // after the device: lets Node exit once nothing else holds Dawn
  }
}

/** Timestamp queries around each compute pass of one submission (profiling only). */
class Profile {
  readonly #set: GPUQuerySet;
  readonly #resolved: GPUBuffer;
  readonly #staging: GPUBuffer;
  readonly #names: string[] = [];

  constructor(dev: GPUDevice, passes: number) {
    const n = Math.max(1, passes);
    this.#set = dev.createQuerySet({ label: 'moba profile', type: 'timestamp', count: 2 * n });
    this.#resolved = dev.createBuffer({ label: 'moba profile resolve', size: 16 * n, usage: USAGE.QUERY_RESOLVE | USAGE.COPY_SRC });
    this.#staging = dev.createBuffer({ label: 'moba profile readback', size: 16 * n, usage: USAGE.MAP_READ | USAGE.COPY_DST });
  }

  /** The timestamp writes of the next pass; `label` is the pipeline key (`shader:entry:constants`). */
  next(label: string): GPUComputePassTimestampWrites {
    const i = this.#names.length;
    this.#names.push(label.split(':').slice(0, 2).join(':'));
    return { querySet: this.#set, beginningOfPassWriteIndex: 2 * i, endOfPassWriteIndex: 2 * i + 1 };
  }

  resolve(enc: GPUCommandEncoder): void {
    const n = this.#names.length;
    if (n === 0) return;
    enc.resolveQuerySet(this.#set, 0, 2 * n, this.#resolved, 0);
    enc.copyBufferToBuffer(this.#resolved, 0, this.#staging, 0, 16 * n);
  }

  /** Adds each pass's duration (ms) to `into[name]`, then frees the queries. */
  async collect(into: Map<string, number>): Promise<void> {
    try {
      if (this.#names.length === 0) return;
      await this.#staging.mapAsync(MAP_READ_MODE);
      const t = new BigUint64Array(this.#staging.getMappedRange().slice(0));
      this.#staging.unmap();
      this.#names.forEach((name, i) => {
        const ns = t[2 * i + 1]! > t[2 * i]! ? Number(t[2 * i + 1]! - t[2 * i]!) : 0;
        into.set(name, (into.get(name) ?? 0) + ns / 1e6);
      });
    } finally {
      this.destroy();
    }
  }

  destroy(): void {
    this.#set.destroy();
    this.#resolved.destroy();
    this.#staging.destroy();
  }
}

/** The bits of an f32, for uniform words. */
export function f32bits(x: number): number {
  const f = new Float32Array([x]);
  return new Uint32Array(f.buffer)[0]!;
}

/** Splits `n` workgroups into a grid within `maxPerDim` (x fastest); shaders rebuild `id = x + y·gridX`. */
export function grid1d(n: number, maxPerDim: number): [number, number] {
  if (n <= maxPerDim) return [Math.max(n, 1), 1];
  const y = Math.ceil(n / maxPerDim);
  return [Math.ceil(n / y), y];
}
