/**
 * The WebGPU backend object: device tensors are storage buffers in their dtype (f32, or f16/bf16 packed two per
 * u32 word, copied to and from the host as they are; storage.wgsl.ts), routings hold the indices buffer and the
 * collected lists, both made when the routing is. Core's shell validates every op; this file wires the stages
 * (route.ts, collect.ts, forward.ts, backward.ts, pack.ts, kconv.ts) to the device: each stage checks its buffers
 * against the device's limits before allocating, and each op submits one command buffer inside error scopes.
 */
/// <reference types="@webgpu/types" />
import {
  type Backend, type BackwardInputs, type Capabilities, type CheckedKconv, type CheckedProblem, type CheckedRoutingCall,
  type DType, type DeviceTensor, type HostTensor, type KVCache, type KVCacheOptions, type Layout, type Qkv, type Routing,
  type DeviceMemory, BackendShell, checkKeys, checkWorkspace, hostTensor, numel,
} from '@moba/core';
import type { DkdvShape } from './backward-dkdv-shape.js';
import { backwardPlan, encodeBackward } from './backward.js';
import { openCache } from './cache.js';
import { collectBytes, collectPlan, encodeCollected } from './collect.js';
import type { GpuContext } from './device.js';
import { encodeForward, forwardPlan } from './forward.js';
import { type Geometry, buildGeometry } from './geometry.js';
import { encodeKconv, encodeKconvBackward, kconvPlan } from './kconv.js';
import { L2Flush } from './flush.js';
import { Launch, type Tiles, chooseTiles } from './launch.js';
import { packer } from './pack.js';
import { ROUTE_ROWS, type RouteKernel, defaultRouteKernel, encodeRoute, routeBytes } from './route.js';
import { timeDeviceRead } from './read-probe.wgsl.js';
import type { CollectedLayout, Dims } from './shapes.js';
import { storageBytes } from './storage.wgsl.js';

const F32 = 4;

/** The WebGPU backend: the Backend contract plus the device it runs on and a live-buffer count. */
export interface WebGpuBackend extends Backend {
  readonly device: GPUDevice;
  /**
   * Buffers in use now (tensors, routings, binding placeholders); freed buffers kept for reuse are not
   * counted here but in `pooledBuffers`. Both 0 after `destroy()`.
   */
  readonly liveBuffers: number;
  readonly pooledBuffers: number;
  /** Bytes of the storage buffer holding a tensor: 4 per element for f32, 4·⌈n/2⌉ for f16/bf16 (two per word). */
  tensorBytes(t: DeviceTensor): number;
  /** GPU ms per kernel (`shader:entry`) since clearTimings(); empty unless created with `profile: true`. */
  timings(): Map<string, number>;
  /** Host ms per op since clearTimings(), always: `<op> encode` (bind groups, passes, submit), `<op> errors`. */
  hostTimings(): Map<string, number>;
  clearTimings(): void;
  /** Bench helper: clears a 256 MiB scratch buffer (kept until destroy, not counted in memoryStats) and waits (flush.ts). */
  flushL2(): Promise<void>;
  /** Bench helper (the decode bench's read bandwidth): ms of one streaming read of `bytes` by a WGSL kernel (read-probe.wgsl.ts). */
  timeDeviceRead(bytes: number): Promise<number>;
}

/** `v`, or a copy of it in a plain ArrayBuffer when it views a SharedArrayBuffer (queue.writeBuffer refuses those). */
function unshared(v: ArrayBufferView): ArrayBufferView {
  if (typeof SharedArrayBuffer === 'undefined' || !(v.buffer instanceof SharedArrayBuffer)) return v;
  return new Uint8Array(new Uint8Array(v.buffer, v.byteOffset, v.byteLength));
}

/** A routing: its indices and its collected form (CollectedLayout), made together. */
interface RoutingStore {
  readonly indices: GPUBuffer; // [T, Hq, topk] i32
  readonly collected: GPUBuffer;
  readonly lists: CollectedLayout;
}

/** Tuning and test knobs: smaller budgets than the device allows, to exercise the other tile sets and passes. */
export interface WebGpuTuning {
  /** Workgroup memory the kernels may use, in bytes (default: the device's maxComputeWorkgroupStorageSize). */
  readonly workgroupStorage?: number;
  /** Largest buffer of per-entry partials in bytes (default: the device's binding limit); smaller means more passes. */
  readonly partialBytes?: number;
  readonly poisonRecycled?: boolean; // test mode: buffers kept for reuse are filled with NaN words (POISON_WORD)
}

/** Experiment knobs (unstable: they may change or vanish in any release). */
export interface WebGpuUnstable {
  /** Fields of the v2 dK/dV kernel's shape to impose instead of the chosen ones (rows per invocation, rounds). */
  readonly dkdvShape?: Partial<Omit<DkdvShape, 'oc4'>>;
  /** Routing top-k kernel (route.ts): `split` (up to 16 competing slots, else `owner`) or `owner`; default: defaultRouteKernel. */
  readonly routeKernel?: RouteKernel;
}

/**
 * The keys `createWebGpuBackend` accepts, per level (a new option adds its key here); any other key, or a null
 * value, is E_RANGE naming it.
 */
export const WEBGPU_OPTION_KEYS = Object.freeze({
  options: Object.freeze(['device', 'memoryBytes', 'bufferCacheBytes', 'profile', 'tuning', 'unstable']),
  tuning: Object.freeze(['workgroupStorage', 'partialBytes', 'poisonRecycled']),
  unstable: Object.freeze(['dkdvShape', 'routeKernel']),
  dkdvShape: Object.freeze(['rw', 'dk', 'rc', 'vk']),
}) satisfies Record<string, readonly string[]>;

/** Checks the keys of `createWebGpuBackend` options, nested objects included, before anything is opened. */
export function checkWebGpuOptions(opts: unknown): void {
  const K = WEBGPU_OPTION_KEYS;
  checkKeys(opts, K.options, 'WebGPU backend option');
  const o = opts as { tuning?: unknown; unstable?: { dkdvShape?: unknown } };
  if (o.tuning !== undefined) checkKeys(o.tuning, K.tuning, 'WebGPU tuning option');
  if (o.unstable !== undefined) {
    checkKeys(o.unstable, K.unstable, 'WebGPU unstable option');
    if (o.unstable.dkdvShape !== undefined) checkKeys(o.unstable.dkdvShape, K.dkdvShape, 'WebGPU unstable.dkdvShape field');
  }
}

export class WebGpuBackendImpl extends BackendShell<GPUBuffer, RoutingStore> implements WebGpuBackend {
  readonly name = 'webgpu';
  readonly caps: Capabilities;
  readonly #ctx: GpuContext;
  readonly #tuning: WebGpuTuning;
  readonly #unstable: WebGpuUnstable;
  #l2: L2Flush | null = null;

  constructor(ctx: GpuContext, memoryBytes: number, tuning: WebGpuTuning = {}, unstable: WebGpuUnstable = {}) {
    super('WebGPU');
    this.#ctx = ctx;
    ctx.buffers.poolCapBytes = Math.min(2 ** 29, Math.floor(memoryBytes / 8)); // default bufferCacheBytes (index.ts)
    this.#tuning = tuning;
    this.#unstable = unstable;
    this.caps = Object.freeze({
      dtypes: Object.freeze(['f32', 'f16', 'bf16'] as DType[]),
      maxHeadDim: 256, maxTopk: 64, maxBlockSize: 1 << 20,
      nonCausal: true, kconv: true, maxKconvWidth: 64, kconvWeightDtype: 'any',
      memoryBytes, deterministic: true, qkLayout: true, kvCache: true, cacheDense: true,
    });
  }

  get device(): GPUDevice { return this.#ctx.device; }
  get liveBuffers(): number { return this.#ctx.buffers.liveBuffers; } get pooledBuffers(): number { return this.#ctx.buffers.pooledBuffers; }

  tensorBytes(t: DeviceTensor): number { return this.#ctx.buffers.sizeOf(this.tensor('tensor', t)); }
  async timeDeviceRead(bytes: number): Promise<number> { this.alive(); return timeDeviceRead(this.#ctx, this.caps.memoryBytes, bytes); }

  async createCache(opts: KVCacheOptions): Promise<KVCache> {
    this.alive();
    return openCache(this.#ctx, { name: this.name, caps: this.caps, tensor: (p, t) => this.tensor(p, t), wrap: (d, s, b) => this.wrap(d, s, b) }, opts);
  }

  timings(): Map<string, number> { return new Map(this.#ctx.kernelMs); } hostTimings(): Map<string, number> { return new Map(this.#ctx.hostMs); }
  clearTimings(): void { this.#ctx.kernelMs.clear(); this.#ctx.hostMs.clear(); }
  async flushL2(): Promise<void> { this.alive(); this.#ctx.checkAlive(); await (this.#l2 ??= new L2Flush(this.#ctx.device)).flush(); }

  protected override checkDevice(): void { this.#ctx.checkAlive(); }

  protected async doUpload(t: HostTensor): Promise<GPUBuffer> {
    this.#ctx.checkSizes({ tensor: storageBytes(t.data.length, t.dtype) });
    let data: ArrayBufferView = unshared(t.data);
    if (t.dtype !== 'f32' && t.data.length % 2 === 1) { // whole words: the last one's high half is 0
      const padded = new Uint16Array(t.data.length + 1);
      padded.set(t.data);
      data = padded;
    }
    return this.#ctx.buffers.upload(`tensor ${t.dtype} [${t.shape.join(', ')}]`, data); // the bits as they are
  }

  protected async doDownload(t: DeviceTensor, buf: GPUBuffer): Promise<HostTensor> {
    const n = numel(t.shape);
    if (t.dtype === 'f32') return hostTensor('f32', t.shape, new Float32Array(await this.#ctx.buffers.read(buf, n * F32)));
    return hostTensor(t.dtype, t.shape, new Uint16Array(await this.#ctx.buffers.read(buf, n * 2)));
  }

  protected async doRoute(p: CheckedProblem, q: GPUBuffer, k: GPUBuffer): Promise<RoutingStore> {
    const { shape, cfg, seqs } = p;
    const geo = buildGeometry(seqs, shape.T, cfg.blockSize, ROUTE_ROWS, p.queries);
    const bytes = routeBytes(shape, cfg.topk, geo);
    const c = collectPlan(seqs, shape.T, shape.Hq, cfg, p.queries);
    this.#ctx.checkSizes({ ...bytes, ...collectBytes(c.lists) });
    const l = new Launch(this.#ctx);
    const indices = l.temp('routing indices', bytes.indices!);
    const kernel = this.#unstable.routeKernel ?? defaultRouteKernel(this.#ctx.device);
    const b = { geom: l.tempData('geometry', geo.words), q, k, cent: l.temp('centroids', bytes.centroids!), indices };
    encodeRoute(l, geo, shape, shape.dtype, cfg, this.#tiles(shape.D), b, kernel);
    return this.#collect(l, 'route', indices, { T: shape.T, Hq: shape.Hq, topk: cfg.topk }, c);
  }

  protected async doRoutingFromIndices(indices: Int32Array, p: CheckedRoutingCall): Promise<RoutingStore> {
    const c = collectPlan(p.seqs, p.T, p.Hq, p.cfg, p.queries);
    this.#ctx.checkSizes({ indices: indices.byteLength, ...collectBytes(c.lists) });
    const l = new Launch(this.#ctx);
    const buf = l.tempData('routing indices', unshared(indices));
    return this.#collect(l, 'routing from indices', buf, { T: p.T, Hq: p.Hq, topk: p.cfg.topk }, c);
  }

  protected async doRoutingIndices(r: Routing, store: RoutingStore): Promise<Int32Array> {
    return new Int32Array(await this.#ctx.buffers.read(store.indices, r.T * r.Hq * r.topk * 4));
  }

  protected async doForward(p: CheckedProblem, t: Qkv<GPUBuffer>, r: RoutingStore): Promise<{ out: GPUBuffer; lse: GPUBuffer }> {
    const { shape, cfg, seqs } = p;
    const { passes, bytes } = forwardPlan(shape, cfg.topk, seqs.totalBlocks, this.#ctx.limits, this.#tuning.partialBytes);
    this.#ctx.checkSizes(bytes);
    const l = new Launch(this.#ctx);
    const out = l.temp('out', bytes.out);
    const lse = l.temp('lse', bytes.lse);
    const b = { ...t, indices: r.indices, collected: r.collected, out, lse };
    encodeForward(l, shape, shape.dtype, cfg, this.#tiles(shape.D), r.lists, passes, b, packer(l, shape.dtype));
    await this.#submitKeeping(l, 'forward', out, lse);
    return { out, lse };
  }

  protected async doBackward(p: CheckedProblem, t: BackwardInputs<GPUBuffer>, r: RoutingStore): Promise<{ dq: GPUBuffer; dk: GPUBuffer; dv: GPUBuffer }> {
    const { shape, cfg, seqs } = p;
    const { passes, bytes } = backwardPlan(shape, cfg, seqs.totalBlocks, this.#ctx.limits, this.#tuning.partialBytes);
    this.#ctx.checkSizes(bytes);
    const l = new Launch(this.#ctx);
    const dq = l.temp('dq', bytes.dq);
    const dk = l.temp('dk', bytes['dk, dv']);
    const dv = l.temp('dv', bytes['dk, dv']);
    const work = l.temp('lse, delta and dq partials', bytes.work);
    const b = { ...t, indices: r.indices, collected: r.collected, work, dq, dk, dv };
    encodeBackward(l, shape, shape.dtype, cfg, this.#tiles(shape.D), r.lists, passes, b, packer(l, shape.dtype));
    await this.#submitKeeping(l, 'backward', dq, dk, dv);
    return { dq, dk, dv };
  }

  protected async doKconv(p: CheckedKconv, k: GPUBuffer, w: GPUBuffer, layout: Layout): Promise<GPUBuffer> {
    const plan = kconvPlan(p, layout);
    checkWorkspace(this.caps, 'kconv', plan.workspace);
    this.#ctx.checkSizes(plan.bytes);
    const l = new Launch(this.#ctx);
    const out = l.temp('kconv out', plan.bytes['kconv out']);
    encodeKconv(l, this.#ctx, plan.geo, p.T, p.C, p.W, this.#kconvBuffers(l, p, plan.geo, k, w), out);
    await this.#submitKeeping(l, 'kconv', out);
    return out;
  }

  protected async doKconvBackward(p: CheckedKconv, k: GPUBuffer, w: GPUBuffer, dkOut: GPUBuffer, layout: Layout): Promise<{ dk: GPUBuffer; dw: GPUBuffer }> {
    const plan = kconvPlan(p, layout);
    checkWorkspace(this.caps, 'kconv', plan.workspace);
    this.#ctx.checkSizes(plan.backwardBytes);
    const l = new Launch(this.#ctx);
    const dk = l.temp('kconv dk', plan.backwardBytes['kconv out']);
    const dw = l.temp('kconv dw', plan.backwardBytes['kconv dw']);
    const dz = l.temp('kconv dz', plan.backwardBytes['kconv dz']);
    encodeKconvBackward(l, this.#ctx, plan.geo, p.T, p.C, p.W, this.#kconvBuffers(l, p, plan.geo, k, w), dkOut, dz, dk, dw);
    await this.#submitKeeping(l, 'kconv backward', dk, dw);
    return { dk, dw };
  }

  protected bytesOf(buf: GPUBuffer): number {
    return this.#ctx.buffers.sizeOf(buf);
  }

  protected routingBytesOf(r: RoutingStore): number {
    return this.#ctx.buffers.sizeOf(r.indices) + this.#ctx.buffers.sizeOf(r.collected);
  }

  protected override deviceMemory(): DeviceMemory {
    const b = this.#ctx.buffers;
    return { inUseBytes: b.inUseBytes, pooledBytes: b.pooledBytes, peakBytes: b.peakBytes };
  }

  protected override resetDevicePeak(): void {
    this.#ctx.buffers.resetPeak();
  }

  protected async doSync(): Promise<void> {
    await this.#ctx.device.queue.onSubmittedWorkDone();
  }

  protected freeTensor(buf: GPUBuffer): void {
    this.#ctx.buffers.free(buf);
  }

  protected freeRouting(store: RoutingStore): void {
    this.#ctx.buffers.free(store.indices, store.collected);
  }

  protected async doDestroy(): Promise<void> {
    this.#l2?.destroy();
    this.#ctx.destroy();
  }

  #tiles(D: number): Tiles {
    return chooseTiles(this.#ctx.limits, D, this.#tuning.workgroupStorage, this.#unstable.dkdvShape);
  }

  /** Collects `indices` (encoded into `l` after what is there), submits, and keeps both as the routing. */
  async #collect(l: Launch, label: string, indices: GPUBuffer, dims: Omit<Dims, 'Hkv' | 'D'> & { topk: number }, c: { geo: Geometry; lists: CollectedLayout }): Promise<RoutingStore> {
    const collected = encodeCollected(l, c.geo, dims, c.lists, indices);
    await this.#submitKeeping(l, label, indices, collected);
    return { indices, collected, lists: c.lists };
  }

  #kconvBuffers(l: Launch, p: CheckedKconv, geo: Geometry, k: GPUBuffer, w: GPUBuffer) {
    return { geom: l.tempData('geometry', geo.words), k, w, kind: p.dtype, wKind: p.wDtype };
  }

  /** Submits, keeping `results` (freed, with everything else, if the submission fails). */
  async #submitKeeping(l: Launch, label: string, ...results: GPUBuffer[]): Promise<void> {
    l.keep(...results);
    try {
      await l.submit(label);
    } catch (e) {
      l.discard(...results);
      throw e;
    }
  }
}
