/**
 * The WebGPU backend object: device tensors are storage buffers in their dtype (f32, or f16/bf16 packed two per
 * u32 word, copied to and from the host as they are; storage.wgsl.ts), routings hold the indices buffer and, once a backward
 * needs it, the collected lists. Every op validates through core, checks every buffer against the device's
 * limits before allocating, and submits one command buffer inside error scopes.
 */
/// <reference types="@webgpu/types" />
import {
  type Backend, type BackwardResult, type Capabilities, type DType, type DeviceTensor, type ForwardResult, type HostTensor,
  type Layout, type MobaConfig, type Routing, type Sequences, type TensorLike,
  HandleTable, MobaError, checkBackwardTensors, checkCaps, checkProblem, checkRouting, checkRoutingLayout, checkTensor, expectShape,
  hostTensor, numel, resolveConfig, sequences, validateKconvWeight, validateLayout, validateRoutingIndices,
} from '@moba/core';
import { encodeBackward } from './backward.js';
import type { GpuContext } from './device.js';
import { encodeForward } from './forward.js';
import { type Geometry, buildGeometry } from './geometry.js';
import { encodeKconv, encodeKconvBackward } from './kconv.js';
import type { DkdvShape } from './backward-dkdv-shape.js';
import { type CollectedLayout, Launch, type Tiles, chooseTiles, collectedLayout } from './launch.js';
import { backwardPlan, collectBytes, forwardPlan, routeBytes } from './plan.js';
import { ROUTE_ROWS, type RouteKernel, collectScratchBytes, defaultRouteKernel, encodeCollect, encodeRoute } from './route.js';
import { storageBytes } from './storage.wgsl.js';

const NAME = 'webgpu';
const F32 = 4;

/** The WebGPU backend: the Backend contract plus the device it runs on and a live-buffer count. */
export interface WebGpuBackend extends Backend {
  readonly device: GPUDevice;
  /** Buffers this backend holds now (tensors, routings, placeholders); 0 after `destroy()`. */
  readonly liveBuffers: number;
  /** Bytes of the storage buffer holding a tensor: 4 per element for f32, 4·⌈n/2⌉ for f16/bf16 (two per word). */
  tensorBytes(t: DeviceTensor): number;
  /** GPU ms per kernel (`shader:entry`) since the last `clearTimings()`; empty unless created with `profile: true`. */
  timings(): Map<string, number>;
  clearTimings(): void;
}

interface RoutingStore {
  readonly indices: GPUBuffer; // [T, Hq, topk] i32
  collected: GPUBuffer | null; // CollectedLayout (launch.ts); made by the first forward or backward
  readonly cuSeqlens: Int32Array;
}

/** Tuning and test knobs: smaller budgets than the device allows, to exercise the other tile sets and passes. */
export interface WebGpuTuning {
  /** Workgroup memory the kernels may use, in bytes (default: the device's maxComputeWorkgroupStorageSize). */
  readonly workgroupStorage?: number;
  /** Largest buffer of per-entry partials in bytes (default: the device's binding limit); smaller means more passes. */
  readonly partialBytes?: number;
  /** Fields of the v2 dK/dV kernel's shape to impose instead of the chosen ones (rows per invocation, rounds). */
  readonly dkdvShape?: Partial<Omit<DkdvShape, 'oc4'>>;
  /** Routing top-k kernel (route.ts): `split` (up to 16 competing slots, else `owner`) or `owner`; default: defaultRouteKernel. */
  readonly routeKernel?: RouteKernel;
}

export class WebGpuBackendImpl implements WebGpuBackend {
  readonly name = NAME;
  readonly caps: Capabilities;
  readonly #ctx: GpuContext;
  readonly #tensors = new HandleTable<GPUBuffer>('WebGPU');
  readonly #routings = new HandleTable<RoutingStore>('WebGPU', 'routing', this.#tensors);
  readonly #tuning: WebGpuTuning;
  #destroyed = false;

  constructor(ctx: GpuContext, memoryBytes: number, tuning: WebGpuTuning = {}) {
    this.#ctx = ctx;
    ctx.poolCapBytes = Math.floor(memoryBytes / 4); // freed buffers kept for reuse (GpuContext.free)
    this.#tuning = tuning;
    this.caps = Object.freeze({
      dtypes: Object.freeze(['f32', 'f16', 'bf16'] as DType[]),
      maxHeadDim: 256, maxTopk: 64, maxBlockSize: 1 << 20,
      nonCausal: true, kconv: true, maxKconvWidth: 64,
      memoryBytes, deterministic: true,
    });
  }

  get device(): GPUDevice {
    return this.#ctx.device;
  }

  get liveBuffers(): number {
    return this.#ctx.liveBuffers;
  }

  tensorBytes(t: DeviceTensor): number {
    return this.#buffer('tensor', t).size;
  }

  timings(): Map<string, number> {
    return new Map(this.#ctx.kernelMs);
  }

  clearTimings(): void {
    this.#ctx.kernelMs.clear();
  }

  async upload(t: HostTensor): Promise<DeviceTensor> {
    this.#alive();
    checkTensor('tensor', t);
    if (!this.caps.dtypes.includes(t.dtype)) throw new MobaError('E_UNSUPPORTED', `dtype ${t.dtype} is not supported by the WebGPU backend`, 'dtype');
    this.#ctx.checkSizes({ tensor: storageBytes(t.data.length, t.dtype) });
    let data: ArrayBufferView = t.data;
    if (t.dtype !== 'f32' && t.data.length % 2 === 1) { // whole words: the last one's high half is 0
      const padded = new Uint16Array(t.data.length + 1);
      padded.set(t.data);
      data = padded;
    }
    const buf = this.#ctx.upload(`tensor ${t.dtype} [${t.shape.join(', ')}]`, data); // the bits as they are
    return this.#wrap(t.dtype, t.shape, buf);
  }

  async download(t: DeviceTensor): Promise<HostTensor> {
    const buf = this.#buffer('tensor', t);
    const n = numel(t.shape);
    if (t.dtype === 'f32') return hostTensor('f32', t.shape, new Float32Array(await this.#ctx.read(buf, n * F32)));
    return hostTensor(t.dtype, t.shape, new Uint16Array(await this.#ctx.read(buf, n * 2)));
  }

  async route(q: DeviceTensor, k: DeviceTensor, layout: Layout, cfg: MobaConfig): Promise<Routing> {
    this.#alive();
    const { shape, cfg: rc, seqs } = checkProblem(this.caps, q, k, k, layout, cfg);
    const { T, Hq, D } = shape;
    const tiles = this.#tiles(D);
    const geo = buildGeometry(seqs, T, rc.blockSize, ROUTE_ROWS);
    const bytes = routeBytes(shape, rc.topk, geo);
    this.#ctx.checkSizes(bytes);
    const [qb, kb] = [this.#buffer('q', q), this.#buffer('k', k)];
    const l = new Launch(this.#ctx);
    const indices = l.temp('routing indices', bytes.indices!);
    encodeRoute(l, geo, shape, shape.dtype, rc, tiles, { geom: l.tempData('geometry', geo.words), q: qb, k: kb, cent: l.temp('centroids', bytes.centroids!), indices },
      this.#tuning.routeKernel ?? defaultRouteKernel(this.#ctx.device));
    l.keep(indices);
    try {
      await l.submit('route');
    } catch (e) {
      l.discard(indices);
      throw e;
    }
    return this.#newRouting(indices, T, Hq, layout, rc);
  }

  async routingFromIndices(indices: Int32Array, shape: { T: number; Hq: number }, layout: Layout, cfg: MobaConfig): Promise<Routing> {
    this.#alive();
    if (!shape || typeof shape !== 'object') throw new MobaError('E_SHAPE', 'shape must be { T, Hq }', 'shape');
    const T = positiveInt('T', shape.T);
    const Hq = positiveInt('Hq', shape.Hq);
    validateLayout(layout, T);
    const rc = resolveConfig(cfg, 1, this.caps); // the scale is not used by a routing
    validateRoutingIndices(indices, T, Hq, sequences(layout, rc.blockSize), rc);
    this.#ctx.checkSizes({ indices: indices.byteLength });
    return this.#newRouting(this.#ctx.upload('routing indices', indices), T, Hq, layout, rc);
  }

  async routingIndices(r: Routing): Promise<Int32Array> {
    const s = this.#routing(r);
    return new Int32Array(await this.#ctx.read(s.indices, r.T * r.Hq * r.topk * 4));
  }

  async forward(q: DeviceTensor, k: DeviceTensor, v: DeviceTensor, r: Routing, layout: Layout, cfg: MobaConfig): Promise<ForwardResult> {
    this.#alive();
    const { shape, cfg: rc, seqs } = checkProblem(this.caps, q, k, v, layout, cfg);
    checkRouting(r, NAME, shape, rc);
    const rs = this.#routingFor(r, layout);
    const { T, Hq, D } = shape;
    const tiles = this.#tiles(D);
    const geo = this.#attnGeometry(seqs, T, rc.blockSize, tiles);
    const lists = collectedLayout(T, Hq, rc.topk, geo);
    const { passes, bytes } = forwardPlan(shape, rc.topk, seqs.totalBlocks, this.#ctx.limits, this.#tuning.partialBytes);
    this.#ctx.checkSizes({ ...bytes, ...this.#collectBytes(rs, lists) });
    const [qb, kb, vb] = [this.#buffer('q', q), this.#buffer('k', k), this.#buffer('v', v)];
    const l = new Launch(this.#ctx);
    const collected = this.#encodeCollected(l, rs, geo, { T, Hq, topk: rc.topk }, lists);
    const out = l.temp('out', bytes.out);
    const lse = l.temp('lse', bytes.lse);
    encodeForward(l, shape, shape.dtype, rc, tiles, lists, passes, { q: qb, k: kb, v: vb, indices: rs.indices, collected, out, lse });
    await this.#submitCollected(l, 'forward', rs, collected, out, lse);
    return { out: this.#wrap(shape.dtype, [T, Hq, D], out), lse: this.#wrap('f32', [T, Hq], lse) };
  }

  async backward(
    q: DeviceTensor, k: DeviceTensor, v: DeviceTensor, out: DeviceTensor, lse: DeviceTensor, dOut: DeviceTensor,
    r: Routing, layout: Layout, cfg: MobaConfig,
  ): Promise<BackwardResult> {
    this.#alive();
    const { shape, cfg: rc, seqs } = checkProblem(this.caps, q, k, v, layout, cfg);
    checkRouting(r, NAME, shape, rc);
    checkBackwardTensors(shape, out, lse, dOut);
    const rs = this.#routingFor(r, layout);
    const { T, Hq, Hkv, D, dtype } = shape;
    const tiles = this.#tiles(D);
    const geo = this.#attnGeometry(seqs, T, rc.blockSize, tiles);
    const lists = collectedLayout(T, Hq, rc.topk, geo);
    const { passes, bytes } = backwardPlan(shape, rc, seqs.totalBlocks, this.#ctx.limits, this.#tuning.partialBytes);
    this.#ctx.checkSizes({ ...bytes, ...this.#collectBytes(rs, lists) });
    const b = {
      q: this.#buffer('q', q), k: this.#buffer('k', k), v: this.#buffer('v', v),
      out: this.#buffer('out', out), lse: this.#buffer('lse', lse), dOut: this.#buffer('dOut', dOut),
    };
    const l = new Launch(this.#ctx);
    const collected = this.#encodeCollected(l, rs, geo, { T, Hq, topk: rc.topk }, lists);
    const dq = l.temp('dq', bytes.dq);
    const dk = l.temp('dk', bytes['dk, dv']);
    const dv = l.temp('dv', bytes['dk, dv']);
    const work = l.temp('lse, delta and dq shares', bytes.work);
    encodeBackward(l, shape, dtype, rc, tiles, lists, passes, { ...b, indices: rs.indices, collected, work, dq, dk, dv });
    await this.#submitCollected(l, 'backward', rs, collected, dq, dk, dv);
    return { dq: this.#wrap(dtype, [T, Hq, D], dq), dk: this.#wrap(dtype, [T, Hkv, D], dk), dv: this.#wrap(dtype, [T, Hkv, D], dv) };
  }

  async kconv(k: DeviceTensor, w: DeviceTensor, layout: Layout): Promise<DeviceTensor> {
    const a = this.#kconvArgs(k, w, layout);
    const l = new Launch(this.#ctx);
    const out = l.temp('kconv out', storageBytes(a.T * a.C, k.dtype));
    encodeKconv(l, this.#ctx, a.geo, a.T, a.C, a.W, { geom: l.tempData('geometry', a.geo.words), k: a.k, w: a.w, kind: k.dtype, wKind: w.dtype }, out);
    await this.#submitKeeping(l, 'kconv', out);
    return this.#wrap(k.dtype, k.shape, out);
  }

  async kconvBackward(k: DeviceTensor, w: DeviceTensor, dkOut: DeviceTensor, layout: Layout): Promise<{ dk: DeviceTensor; dw: DeviceTensor }> {
    const a = this.#kconvArgs(k, w, layout);
    expectShape('dkOut', dkOut, k.shape, k.dtype);
    const g = this.#buffer('dkOut', dkOut);
    const l = new Launch(this.#ctx);
    this.#ctx.checkSizes({ 'kconv dz': a.T * a.C * F32 });
    const dk = l.temp('kconv dk', storageBytes(a.T * a.C, k.dtype));
    const dw = l.temp('kconv dw', storageBytes(a.C * a.W, w.dtype));
    const dz = l.temp('kconv dz', a.T * a.C * F32);
    const b = { geom: l.tempData('geometry', a.geo.words), k: a.k, w: a.w, kind: k.dtype, wKind: w.dtype };
    encodeKconvBackward(l, this.#ctx, a.geo, a.T, a.C, a.W, b, g, dz, dk, dw);
    await this.#submitKeeping(l, 'kconv backward', dk, dw);
    return { dk: this.#wrap(k.dtype, k.shape, dk), dw: this.#wrap(w.dtype, [a.C, a.W], dw) };
  }

  async sync(): Promise<void> {
    this.#alive();
    await this.#ctx.device.queue.onSubmittedWorkDone();
  }

  dispose(...items: (DeviceTensor | Routing)[]): void {
    for (const it of items) {
      const buf = this.#tensors.free(it);
      if (buf) {
        this.#ctx.free(buf);
        continue;
      }
      const r = this.#routings.free(it);
      if (r) this.#ctx.free(r.indices, r.collected ?? undefined);
    }
  }

  async destroy(): Promise<void> {
    if (this.#destroyed) return;
    this.#destroyed = true;
    this.#tensors.clear();
    this.#routings.clear();
    this.#ctx.destroy();
  }

  #alive(): void {
    if (this.#destroyed) throw new MobaError('E_DEVICE', 'the WebGPU backend was destroyed: create a new one', 'backend');
    this.#ctx.checkAlive();
  }

  #tiles(D: number): Tiles {
    return chooseTiles(this.#ctx.limits, D, this.#tuning.workgroupStorage, this.#tuning.dkdvShape);
  }

  #attnGeometry(seqs: Sequences, T: number, blockSize: number, tiles: Tiles): Geometry {
    return buildGeometry(seqs, T, blockSize, tiles.rows);
  }

  /** Sizes of the collect buffers a call will allocate (none once the routing has its collected form). */
  #collectBytes(rs: RoutingStore, lists: CollectedLayout): Record<string, number> {
    return rs.collected ? {} : collectBytes(lists);
  }

  /** The routing's collected form: the kept one, or a new one encoded into `l` (kept by #submitCollected). */
  #encodeCollected(l: Launch, rs: RoutingStore, geo: Geometry, dims: { T: number; Hq: number; topk: number }, lists: CollectedLayout): GPUBuffer {
    if (rs.collected) return rs.collected;
    const sizes = collectScratchBytes(lists);
    const collected = l.temp('collected routing', lists.words * 4);
    encodeCollect(l, geo, dims, lists, {
      indices: rs.indices, counters: l.temp('collect counters', sizes.counters), scratch: l.temp('collect scratch', sizes.scratch), collected,
    });
    return collected;
  }

  /** Submits, keeping `results` and, when this call made it, the routing's collected form. */
  async #submitCollected(l: Launch, label: string, rs: RoutingStore, collected: GPUBuffer, ...results: GPUBuffer[]): Promise<void> {
    const fresh = rs.collected !== collected;
    await this.#submitKeeping(l, label, ...results, ...(fresh ? [collected] : []));
    if (fresh) rs.collected = collected;
  }

  async #submitKeeping(l: Launch, label: string, ...results: GPUBuffer[]): Promise<void> {
    l.keep(...results);
    try {
      await l.submit(label);
    } catch (e) {
      l.discard(...results);
      throw e;
    }
  }

  #wrap(dtype: DType, shape: readonly number[], buf: GPUBuffer): DeviceTensor {
    const t: DeviceTensor = Object.freeze({ backend: NAME, dtype, shape: Object.freeze([...shape]) });
    this.#tensors.add(t, buf);
    return t;
  }

  /** The buffer of a tensor of this backend; another backend's or a disposed tensor is rejected. */
  #buffer(param: string, t: TensorLike): GPUBuffer {
    this.#alive();
    return this.#tensors.get(param, t);
  }

  #routing(r: Routing): RoutingStore {
    this.#alive();
    return this.#routings.get('routing', r);
  }

  /** A routing checked to be this backend's and made for the same sequence layout. */
  #routingFor(r: Routing, layout: Layout): RoutingStore {
    return checkRoutingLayout(this.#routing(r), layout);
  }

  #newRouting(indices: GPUBuffer, T: number, Hq: number, layout: Layout, rc: { topk: number; blockSize: number; causal: boolean }): Routing {
    const r: Routing = Object.freeze({ backend: NAME, T, Hq, topk: rc.topk, blockSize: rc.blockSize, causal: rc.causal });
    this.#routings.add(r, { indices, collected: null, cuSeqlens: Int32Array.from(layout.cuSeqlens) });
    return r;
  }

  /** Validates a kconv call (SPEC §6, §7) and checks its buffers before anything is allocated. */
  #kconvArgs(k: DeviceTensor, w: DeviceTensor, layout: Layout) {
    this.#alive();
    if (!k || !Array.isArray(k.shape) || k.shape.length !== 3 || k.shape.some((s) => !Number.isInteger(s) || s < 1)) {
      throw new MobaError('E_SHAPE', `k.shape = [${k?.shape?.join(', ')}] is invalid: must be [T, Hkv, D] with every dimension >= 1`, 'k.shape');
    }
    const [T, Hkv, D] = k.shape as [number, number, number];
    checkCaps(this.caps, { T, Hq: Hkv, Hkv, D, dtype: k.dtype });
    validateLayout(layout, T);
    const W = validateKconvWeight(w, Hkv, D, this.caps.maxKconvWidth);
    if (!this.caps.dtypes.includes(w.dtype)) throw new MobaError('E_DTYPE', `kconvWeight.dtype = ${String(w.dtype)} is invalid: must be one of f32, f16, bf16`, 'kconvWeight.dtype');
    const C = Hkv * D;
    const need = 2 * storageBytes(T * C, k.dtype) + T * C * F32 + 2 * storageBytes(C * W, w.dtype); // backward: dkOut, dk, dz, w, dw
    if (need > this.caps.memoryBytes) throw new MobaError('E_MEMORY', `kconv workspace of ${need} bytes exceeds this backend's limit of ${this.caps.memoryBytes}`, 'workspace');
    const whole = Math.max(1, T); // one block and one tile per sequence: kconv only needs sequence bounds
    const geo = buildGeometry(sequences(layout, whole), T, whole, whole);
    this.#ctx.checkSizes({ 'kconv out': storageBytes(T * C, k.dtype), geometry: geo.words.byteLength });
    const wb = this.#buffer('kconvWeight', w);
    const kb = this.#buffer('k', k);
    return { T, C, W, geo, k: kb, w: wb };
  }
}

function positiveInt(param: string, v: unknown): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 1) throw new MobaError('E_RANGE', `${param} = ${String(v)} is invalid: must be an integer >= 1`, param);
  return v;
}
