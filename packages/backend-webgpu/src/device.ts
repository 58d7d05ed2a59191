/**
 * The GPU side of the backend: opening a device (navigator.gpu in browsers, Dawn's `webgpu` package in Node)
 * with the adapter's limits and features, its liveness, and submissions wrapped in error scopes so that
 * validation errors and device loss become E_DEVICE (with per-kernel timestamps when profiling). Buffers are
 * in buffers.ts, pipelines in pipelines.ts.
 */
/// <reference types="@webgpu/types" />
import { MobaError } from '@moba/core';
import { BufferPool, MAP_READ_MODE, USAGE, checkBufferSizes } from './buffers.js';
import { type AdapterProbe, type DawnLoad, describeAdapter } from './dawn.js';
import { type ShaderSpec, compilePipeline } from './pipelines.js';
import { loadDawn } from '#dawn';

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
  return (await loadGpu()).gpu;
}

/** Like `getGpu`, with the reason when there is no GPU object (the `webgpu` package missing, no navigator.gpu). */
export async function loadGpu(): Promise<DawnLoad> {
  const nav = (globalThis as { navigator?: { gpu?: GPU } }).navigator;
  if (nav?.gpu) return { gpu: nav.gpu, reason: null };
  dawn ??= loadDawn();
  return dawn;
}

/** The process's Dawn instance (Node only), created on first use and never released. */
let dawn: Promise<DawnLoad> | undefined;

/**
 * Whether an adapter can be obtained here and what it is (name, software or hardware). Never throws; no
 * device is opened.
 */
export async function probeAdapter(): Promise<AdapterProbe> {
  try {
    const { gpu, reason } = await loadGpu();
    if (!gpu) return { available: false, reason };
    const adapter = await gpu.requestAdapter({ powerPreference: 'high-performance' });
    if (!adapter) return { available: false, reason: 'WebGPU is present but requestAdapter() returned no adapter' };
    return { available: true, ...describeAdapter(adapter) };
  } catch (e) {
    return { available: false, reason: `WebGPU adapter probe failed: ${(e instanceof Error ? e.message : String(e)).split('\n')[0]}` };
  }
}

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
  const { gpu, reason } = await loadGpu();
  if (!gpu) throw new MobaError('E_UNSUPPORTED', `WebGPU is not available: ${reason}`, 'device');
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

/** One compute pass: a pipeline, its bindings in order (binding i = buffers[i]) and the workgroup grid. */
export interface Dispatch {
  readonly pipeline: GPUComputePipeline | Promise<GPUComputePipeline>;
  readonly buffers: readonly GPUBuffer[];
  readonly grid: readonly [number, number?, number?];
}

/**
 * A device plus the bookkeeping of one backend: its buffers (destroyed with it), the per-device pipeline
 * cache, and submission with error scopes.
 */
export class GpuContext {
  readonly limits: GPUSupportedLimits;
  readonly buffers: BufferPool;
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
    this.buffers = new BufferPool(device, device.limits, () => this.checkAlive());
    device.lost.then((info) => {
      if (info.reason !== 'destroyed') this.#lost = `the WebGPU device was lost (${info.reason}): ${info.message}`;
      else this.#lost ??= 'the WebGPU device was destroyed';
    }, () => undefined);
  }

  /** The GPU object this context keeps alive (null for a caller's device, and after `destroy()`). */
  get gpu(): GPU | null {
    return this.#gpu;
  }

  /** Throws E_DEVICE if the device was lost. */
  checkAlive(): void {
    if (this.#lost) throw new MobaError('E_DEVICE', this.#lost, 'device');
  }

  /** Throws E_MEMORY, before anything is allocated, if any of these buffers exceeds the device's limits. */
  checkSizes(sizes: Record<string, number>): void {
    checkBufferSizes(this.limits, sizes);
  }

  /** The compute pipeline of `entry` of a shader (pipelines.ts). */
  pipeline(shader: ShaderSpec, entry: string, constants: Record<string, number> = {}): Promise<GPUComputePipeline> {
    return compilePipeline(this.device, shader, entry, constants);
  }

  /** GPU time per kernel (`shader:entry`) in ms, summed over the submissions since profiling was enabled. */
  readonly kernelMs = new Map<string, number>();
  #profiling = false;
  /**
   * Host ms per op label, always recorded: `<label> encode` (pipelines awaited, bind groups made, passes encoded,
   * submitted) and `<label> errors` (waiting for the error scopes after the submit).
   */
  readonly hostMs = new Map<string, number>();
  /** A compute pass per dispatch even without profiling (MOBA_WEBGPU_PASS_PER_DISPATCH=1: the bench's comparison). */
  readonly passPerDispatch = (globalThis as { process?: { env?: Record<string, string | undefined> } }).process?.env?.MOBA_WEBGPU_PASS_PER_DISPATCH === '1';

  /** Times every compute pass with timestamp queries from now on; false when the device lacks `timestamp-query`. */
  enableProfiling(): boolean {
    this.#profiling = this.device.features.has('timestamp-query');
    return this.#profiling;
  }

  /** Encodes the dispatches in order into one command buffer, submits it, and turns GPU errors into E_DEVICE. */
  async run(label: string, dispatches: readonly Dispatch[]): Promise<void> {
    this.checkAlive();
    const dev = this.device;
    const t0 = performance.now();
    const pipelines = await Promise.all(dispatches.map((d) => d.pipeline));
    const prof = this.#profiling ? new Profile(dev, pipelines.length) : null;
    dev.pushErrorScope('internal');
    dev.pushErrorScope('out-of-memory');
    dev.pushErrorScope('validation');
    let scopes: Promise<GPUError | null>[];
    try {
      const enc = dev.createCommandEncoder({ label });
      // one compute pass for all dispatches (each dispatch is its own usage scope: WebGPU orders their storage
      // accesses); a pass per dispatch when profiling, for its timestamps
      let pass: GPUComputePassEncoder | null = null;
      for (const [i, d] of dispatches.entries()) {
        const pipeline = pipelines[i]!;
        const bind = dev.createBindGroup({
          label: `${pipeline.label} bindings`,
          layout: pipeline.getBindGroupLayout(0),
          entries: d.buffers.map((buffer, binding) => ({ binding, resource: { buffer, size: this.buffers.sizeOf(buffer) } })),
        });
        if (prof || this.passPerDispatch) pass?.end();
        if (prof || this.passPerDispatch || !pass) pass = enc.beginComputePass({ label: prof ? pipeline.label : label, ...(prof ? { timestampWrites: prof.next(pipeline.label) } : {}) });
        pass.setPipeline(pipeline);
        pass.setBindGroup(0, bind);
        pass.dispatchWorkgroups(d.grid[0], d.grid[1] ?? 1, d.grid[2] ?? 1);
      }
      pass?.end();
      prof?.resolve(enc);
      dev.queue.submit([enc.finish()]);
    } finally {
      // pop all three now, synchronously and even if encoding threw, so the scope stack stays balanced and
      // no other op's scopes can interleave with ours
      scopes = [dev.popErrorScope(), dev.popErrorScope(), dev.popErrorScope()];
    }
    const t1 = performance.now();
    const errors = (await Promise.all(scopes)).filter((e): e is GPUError => e !== null);
    this.addHost(`${label} encode`, t1 - t0);
    this.addHost(`${label} errors`, performance.now() - t1);
    this.checkAlive();
    if (errors.length > 0) {
      prof?.destroy();
      throw new MobaError('E_DEVICE', `WebGPU error in ${label}: ${errors.map((e) => e.message).join('; ')}`, 'device');
    }
    if (prof) await prof.collect(this.kernelMs);
  }

  /** Adds `ms` to the host time `key` (hostMs). */
  addHost(key: string, ms: number): void {
    this.hostMs.set(key, (this.hostMs.get(key) ?? 0) + ms);
  }

  /** Frees every buffer; destroys the device when this context opened it. */
  destroy(): void {
    this.buffers.destroy();
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
