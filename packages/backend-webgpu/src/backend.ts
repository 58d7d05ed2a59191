/**
 * The WebGPU backend object: device tensors are f32 storage buffers (f16/bf16 converted on upload and
 * download, outputs rounded to their dtype on the GPU), routings hold the indices buffer and, once a backward
 * needs it, the collected lists. Every op validates through core, checks every buffer against the device's
 * limits before allocating, and submits one command buffer inside error scopes.
 */
/// <reference types="@webgpu/types" />
import {
  type Backend, type BackwardResult, type Capabilities, type DType, type DeviceTensor, type ForwardResult, type HostTensor,
  type Layout, type MobaConfig, type Routing, type Sequences, type TensorLike,
  HandleTable, MobaError, checkBackwardTensors, checkCaps, checkProblem, checkRouting, checkRoutingLayout, checkTensor, expectShape, fromFloat,
  hostTensor, numel, resolveConfig, sequences, toFloat32, validateKconvWeight, validateLayout, validateRoutingIndices,
} from '@moba/core';
import { encodeBackward } from './backward.js';
import type { GpuContext } from './device.js';
import { encodeForward, encodeRound } from './forward.js';
import { type Geometry, buildGeometry } from './geometry.js';
import { encodeKconv, encodeKconvBackward } from './kconv.js';
import { Launch, type Tiles, chooseTiles } from './launch.js';
import { ROUTE_ROWS, encodeCollect, encodeRoute } from './route.js';

const NAME = 'webgpu';
const F32 = 4;

/** The WebGPU backend: the Backend contract plus the device it runs on and a live-buffer count. */
export interface WebGpuBackend extends Backend {
  readonly device: GPUDevice;
  /** Buffers this backend holds now (tensors, routings, placeholders); 0 after `destroy()`. */
  readonly liveBuffers: number;
}

interface RoutingStore {
  readonly indices: GPUBuffer; // [T, Hq, topk] i32
  collected: GPUBuffer | null; // offsets [Hq·NB + 1], rows; made by the first backward
  readonly cuSeqlens: Int32Array;
}

export class WebGpuBackendImpl implements WebGpuBackend {
  readonly name = NAME;
  readonly caps: Capabilities;
  readonly #ctx: GpuContext;
  readonly #tensors = new HandleTable<GPUBuffer>('WebGPU');
  readonly #routings = new HandleTable<RoutingStore>('WebGPU', 'routing', this.#tensors);
  #destroyed = false;

  constructor(ctx: GpuContext, memoryBytes: number) {
    this.#ctx = ctx;
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

  async upload(t: HostTensor): Promise<DeviceTensor> {
    this.#alive();
    checkTensor('tensor', t);
    if (!this.caps.dtypes.includes(t.dtype)) throw new MobaError('E_UNSUPPORTED', `dtype ${t.dtype} is not supported by the WebGPU backend`, 'dtype');
    this.#ctx.checkSizes({ tensor: t.data.length * F32 });
    const buf = this.#ctx.upload(`tensor ${t.dtype} [${t.shape.join(', ')}]`, toFloat32(t));
    return this.#wrap(t.dtype, t.shape, buf);
  }

  async download(t: DeviceTensor): Promise<HostTensor> {
    const buf = this.#buffer('tensor', t);
    const data = new Float32Array(await this.#ctx.read(buf, numel(t.shape) * F32));
    return t.dtype === 'f32' ? hostTensor('f32', t.shape, data) : fromFloat(data, t.dtype, t.shape); // exact: already rounded
  }

  async route(q: DeviceTensor, k: DeviceTensor, layout: Layout, cfg: MobaConfig): Promise<Routing> {
    this.#alive();
    const { shape, cfg: rc, seqs } = checkProblem(this.caps, q, k, k, layout, cfg);
    const { T, Hq, Hkv, D } = shape;
    const tiles = this.#tiles(D);
    const geo = buildGeometry(seqs, T, rc.blockSize, ROUTE_ROWS, tiles.keys);
    const bytes = { geometry: geo.words.byteLength, centroids: seqs.totalBlocks * Hkv * D * F32, indices: T * Hq * rc.topk * 4 };
    this.#ctx.checkSizes(bytes);
    const [qb, kb] = [this.#buffer('q', q), this.#buffer('k', k)];
    const l = new Launch(this.#ctx);
    const indices = l.temp('routing indices', bytes.indices);
    encodeRoute(l, geo, shape, rc, tiles, { geom: l.tempData('geometry', geo.words), q: qb, k: kb, cent: l.temp('centroids', bytes.centroids), indices });
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
    const bytes = { geometry: geo.words.byteLength, out: T * Hq * D * F32, lse: T * Hq * F32 };
    this.#ctx.checkSizes(bytes);
    const [qb, kb, vb] = [this.#buffer('q', q), this.#buffer('k', k), this.#buffer('v', v)];
    const l = new Launch(this.#ctx);
    const out = l.temp('out', bytes.out);
    const lse = l.temp('lse', bytes.lse);
    encodeForward(l, geo, shape, rc, tiles, { geom: l.tempData('geometry', geo.words), q: qb, k: kb, v: vb, indices: rs.indices, out, lse });
    encodeRound(l, out, T * Hq * D, shape.dtype);
    await this.#submitKeeping(l, 'forward', out, lse);
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
    const lists = Hq * seqs.totalBlocks;
    const bytes = {
      geometry: geo.words.byteLength, counts: lists * 4, collected: (lists + 1 + T * Hq * rc.topk) * 4,
      stats: 2 * T * Hq * F32, dkv: 2 * T * Hkv * D * F32, dq: T * Hq * D * F32,
    };
    this.#ctx.checkSizes(bytes);
    const b = {
      q: this.#buffer('q', q), k: this.#buffer('k', k), v: this.#buffer('v', v),
      out: this.#buffer('out', out), lse: this.#buffer('lse', lse), dOut: this.#buffer('dOut', dOut),
    };
    const l = new Launch(this.#ctx);
    const geom = l.tempData('geometry', geo.words);
    let collected = rs.collected;
    if (!collected) {
      collected = l.temp('collected routing', bytes.collected);
      encodeCollect(l, geo, { T, Hq, topk: rc.topk }, { geom, indices: rs.indices, counts: l.temp('collect counts', bytes.counts), collected });
    }
    const dq = l.temp('dq', bytes.dq);
    const dk = l.temp('dk', bytes.dkv / 2);
    const dv = l.temp('dv', bytes.dkv / 2);
    const dkv = l.temp('dk dv', bytes.dkv);
    encodeBackward(l, geo, shape, rc, tiles, { ...b, geom, indices: rs.indices, collected, stats: l.temp('lse delta', bytes.stats), dkv, dq });
    l.copy(dkv, 0, dk, bytes.dkv / 2);
    l.copy(dkv, bytes.dkv / 2, dv, bytes.dkv / 2);
    for (const [buf, n] of [[dq, T * Hq * D], [dk, T * Hkv * D], [dv, T * Hkv * D]] as const) encodeRound(l, buf, n, dtype);
    const fresh = !rs.collected;
    await this.#submitKeeping(l, 'backward', dq, dk, dv, ...(fresh ? [collected] : []));
    if (fresh) rs.collected = collected;
    return { dq: this.#wrap(dtype, [T, Hq, D], dq), dk: this.#wrap(dtype, [T, Hkv, D], dk), dv: this.#wrap(dtype, [T, Hkv, D], dv) };
  }

  async kconv(k: DeviceTensor, w: DeviceTensor, layout: Layout): Promise<DeviceTensor> {
    const a = this.#kconvArgs(k, w, layout);
    const l = new Launch(this.#ctx);
    const out = l.temp('kconv out', a.T * a.C * F32);
    encodeKconv(l, this.#ctx, a.geo, a.T, a.C, a.W, { geom: l.tempData('geometry', a.geo.words), k: a.k, w: a.w }, out);
    encodeRound(l, out, a.T * a.C, k.dtype);
    await this.#submitKeeping(l, 'kconv', out);
    return this.#wrap(k.dtype, k.shape, out);
  }

  async kconvBackward(k: DeviceTensor, w: DeviceTensor, dkOut: DeviceTensor, layout: Layout): Promise<{ dk: DeviceTensor; dw: DeviceTensor }> {
    const a = this.#kconvArgs(k, w, layout);
    expectShape('dkOut', dkOut, k.shape, k.dtype);
    const g = this.#buffer('dkOut', dkOut);
    const l = new Launch(this.#ctx);
    const dk = l.temp('kconv dk', a.T * a.C * F32);
    const dw = l.temp('kconv dw', a.C * a.W * F32);
    const dz = l.temp('kconv dz', a.T * a.C * F32);
    encodeKconvBackward(l, this.#ctx, a.geo, a.T, a.C, a.W, { geom: l.tempData('geometry', a.geo.words), k: a.k, w: a.w }, g, dz, dk, dw);
    encodeRound(l, dk, a.T * a.C, k.dtype);
    encodeRound(l, dw, a.C * a.W, w.dtype);
    await this.#submitKeeping(l, 'kconv backward', dk, dw);
    return { dk: this.#wrap(k.dtype, k.shape, dk), dw: this.#wrap(w.dtype, [a.C, a.W], dw) };
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
    return chooseTiles(this.#ctx.limits, D);
  }

  #attnGeometry(seqs: Sequences, T: number, blockSize: number, tiles: Tiles): Geometry {
    return buildGeometry(seqs, T, blockSize, tiles.rows, tiles.keys);
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
    const need = 3 * T * C * F32 + 2 * C * W * F32;
    if (need > this.caps.memoryBytes) throw new MobaError('E_MEMORY', `kconv workspace of ${need} bytes exceeds this backend's limit of ${this.caps.memoryBytes}`, 'workspace');
    const whole = Math.max(1, T); // one block and one tile per sequence: kconv only needs sequence bounds
    const geo = buildGeometry(sequences(layout, whole), T, whole, whole, whole);
    this.#ctx.checkSizes({ 'kconv out': T * C * F32, geometry: geo.words.byteLength });
    const wb = this.#buffer('kconvWeight', w);
    const kb = this.#buffer('k', k);
    return { T, C, W, geo, k: kb, w: wb };
  }
}

function positiveInt(param: string, v: unknown): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 1) throw new MobaError('E_RANGE', `${param} = ${String(v)} is invalid: must be an integer >= 1`, param);
  return v;
}
