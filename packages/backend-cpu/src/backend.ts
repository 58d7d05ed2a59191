/**
 * The CPU backend object: device tensors (f32; in SharedArrayBuffers only when a worker pool is used),
 * routings in both forms, and every Backend op validated through core before any work, then run as
 * kernel jobs on the pool. Also a dense causal baseline on the same kernels (`denseForward` /
 * `denseBackward`). Runtime specifics (cores, memory, worker threads) come from `#host`.
 */
import { host } from '#host';
import {
  type Backend, type BackwardResult, type Capabilities, type DType, type DeviceTensor, type ForwardResult, type HostTensor,
  type Layout, type MobaConfig, type ProblemShape, type Routing, type TensorLike,
  HandleTable, MobaError, bf16ToF32, checkBackwardTensors, checkCaps, checkProblem, checkRouting, checkRoutingLayout, checkTensor, collectRouting, expectShape,
  f16ToF32, fromFloat, hostTensor, plan, resolveConfig, sequences, validateKconvWeight, validateLayout, validateRoutingIndices,
} from '@moba/core';
import { KCONV_CHANNELS } from './kconv.js';
import { Pool } from './pool.js';
import { KEY_CHUNK, Storage, geometry, headMajor } from './tensor.js';

export interface CpuBackendOptions {
  /**
   * Worker threads for large problems (default: available cores, at most 16); 1 runs in the calling thread.
   * Where there are no worker threads (browsers) every value runs in the calling thread and `threads` reads 1.
   */
  threads?: number;
  /** Estimated FLOPs below which a job runs in the calling thread (default 2e7; 0 always uses workers). */
  minParallelWork?: number;
}

/** Options of the dense baseline. */
export interface DenseOptions {
  /** Softmax scale, default 1/sqrt(D). */
  scale?: number;
}

/** The CPU backend: the Backend contract plus a dense causal attention baseline on the same kernels. */
export interface CpuBackend extends Backend {
  /** Threads that run large jobs (1: the calling thread only). */
  readonly threads: number;
  /** Dense causal attention per sequence: out `[T, Hq, D]` (input dtype), lse `[T, Hq]` f32. */
  denseForward(q: DeviceTensor, k: DeviceTensor, v: DeviceTensor, layout: Layout, opts?: DenseOptions): Promise<ForwardResult>;
  /** Gradient of dense causal attention, recomputing P from `lse`. */
  denseBackward(
    q: DeviceTensor, k: DeviceTensor, v: DeviceTensor, out: DeviceTensor, lse: DeviceTensor, dOut: DeviceTensor,
    layout: Layout, opts?: DenseOptions,
  ): Promise<BackwardResult>;
}

interface RoutingStore {
  readonly indices: Int32Array; // [T, Hq, topk]
  readonly offsets: Int32Array; // [Hq·NB + 1]
  readonly rows: Int32Array;
  readonly cuSeqlens: Int32Array;
}

const NAME = 'cpu';

export class CpuBackendImpl implements CpuBackend {
  readonly name = NAME;
  readonly caps: Capabilities;
  readonly threads: number;
  readonly #pool: Pool;
  readonly #mem: Storage;
  readonly #tensors = new HandleTable<Float32Array>('CPU');
  readonly #routings = new HandleTable<RoutingStore>('CPU', 'routing', this.#tensors);
  #destroyed = false;

  constructor(opts: CpuBackendOptions = {}) {
    const workers = host.workers;
    const threads = opts.threads === undefined
      ? Math.max(1, Math.min(16, workers?.defaultCount() ?? 1))
      : checkPositiveInt('threads', opts.threads, 256);
    this.threads = workers ? threads : 1; // no worker threads here: the calling thread only
    const minWork = opts.minParallelWork ?? 2e7;
    if (typeof minWork !== 'number' || !(minWork >= 0)) {
      throw new MobaError('E_RANGE', `minParallelWork = ${String(minWork)} is invalid: must be a number >= 0`, 'minParallelWork');
    }
    this.#pool = new Pool(this.threads, minWork, workers?.load ?? null);
    // shared memory only for a pool: pages without cross-origin isolation have no SharedArrayBuffer
    this.#mem = new Storage(this.#pool.parallel);
    this.caps = Object.freeze({
      dtypes: Object.freeze(['f32', 'f16', 'bf16'] as DType[]),
      maxHeadDim: 512, maxTopk: 1024, maxBlockSize: 1 << 20,
      nonCausal: true, kconv: true, maxKconvWidth: 64,
      memoryBytes: Math.floor(host.totalMemory() / 2),
      deterministic: true,
    });
  }

  async upload(t: HostTensor): Promise<DeviceTensor> {
    this.#alive();
    checkTensor('tensor', t);
    const data = this.#mem.f32(t.data.length);
    if (t.dtype === 'f32') data.set(t.data);
    else {
      const decode = t.dtype === 'f16' ? f16ToF32 : bf16ToF32;
      for (let i = 0; i < data.length; i++) data[i] = decode(t.data[i]);
    }
    return this.#wrap(t.dtype, t.shape, data);
  }

  async download(t: DeviceTensor): Promise<HostTensor> {
    const data = this.#data('tensor', t);
    if (t.dtype === 'f32') return hostTensor('f32', t.shape, new Float32Array(data));
    return fromFloat(data, t.dtype, t.shape); // values are already exact in the dtype
  }

  async route(q: DeviceTensor, k: DeviceTensor, layout: Layout, cfg: MobaConfig): Promise<Routing> {
    this.#alive();
    const { shape, cfg: rc, seqs } = checkProblem(this.caps, q, k, k, layout, cfg);
    const qd = this.#data('q', q);
    const kd = this.#data('k', k);
    const { T, Hq, Hkv, D } = shape;
    const geo = geometry(shape, seqs, rc.blockSize);
    const centroids = this.#mem.f32(seqs.totalBlocks * Hkv * D); // [totalBlocks, Hkv, D]
    await this.#pool.run('centroids', { geo, k: kd, centroids }, seqs.totalBlocks, T * Hkv * D);
    const indices = this.#mem.i32(T * Hq * rc.topk); // [T, Hq, topk]
    const work = plan(shape, layout, rc).flops.route;
    await this.#pool.run('route', { geo, q: qd, centroids, topk: rc.topk, causal: rc.causal, indices }, geo.nTiles * Hq, work);
    return this.#newRouting(indices, T, Hq, layout, rc);
  }

  async routingFromIndices(indices: Int32Array, shape: { T: number; Hq: number }, layout: Layout, cfg: MobaConfig): Promise<Routing> {
    this.#alive();
    if (!shape || typeof shape !== 'object') throw new MobaError('E_SHAPE', 'shape must be { T, Hq }', 'shape');
    const T = checkPositiveInt('T', shape.T);
    const Hq = checkPositiveInt('Hq', shape.Hq);
    validateLayout(layout, T);
    const rc = resolveConfig(cfg, 1, this.caps); // the scale is not used by a routing
    validateRoutingIndices(indices, T, Hq, sequences(layout, rc.blockSize), rc);
    return this.#newRouting(this.#mem.copyI32(indices), T, Hq, layout, rc);
  }

  async routingIndices(r: Routing): Promise<Int32Array> {
    return new Int32Array(this.#routing(r).indices);
  }

  async forward(q: DeviceTensor, k: DeviceTensor, v: DeviceTensor, r: Routing, layout: Layout, cfg: MobaConfig): Promise<ForwardResult> {
    this.#alive();
    const { shape, cfg: rc, seqs } = checkProblem(this.caps, q, k, v, layout, cfg);
    checkRouting(r, NAME, shape, rc);
    const rs = this.#routingFor(r, layout);
    const { T, Hq, D } = shape;
    const geo = geometry(shape, seqs, rc.blockSize);
    const out = this.#mem.f32(T * Hq * D); // [T, Hq, D]
    const lse = this.#mem.f32(T * Hq); // [T, Hq]
    const args = {
      geo, ...this.#headMajor(shape, q, k, v), scale: rc.scale, causal: rc.causal,
      dtype: shape.dtype, topk: rc.topk, indices: rs.indices, offsets: rs.offsets, rows: rs.rows, out, lse,
    };
    await this.#pool.run('forward', args, geo.nTiles * Hq, plan(shape, layout, rc).flops.forward);
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
    const geo = geometry(shape, seqs, rc.blockSize);
    const args = { ...this.#gradArgs(shape, geo, rc.scale, rc.causal, { q, k, v, out, lse, dOut }), topk: rc.topk, ...rs };
    const work = plan(shape, layout, rc).flops.backward;
    await this.#pool.run('delta', args, geo.nTiles, 2 * shape.T * shape.Hq * shape.D);
    await this.#pool.run('dkdv', args, geo.nChunks * shape.Hkv, work);
    await this.#pool.run('dq', args, geo.nTiles * shape.Hq, work);
    return this.#gradResult(shape, args);
  }

  async denseForward(q: DeviceTensor, k: DeviceTensor, v: DeviceTensor, layout: Layout, opts: DenseOptions = {}): Promise<ForwardResult> {
    this.#alive();
    const { shape, cfg: rc, seqs } = checkProblem(this.caps, q, k, v, layout, { blockSize: KEY_CHUNK, topk: 1, scale: opts?.scale });
    const { T, Hq, D } = shape;
    const geo = geometry(shape, seqs, KEY_CHUNK);
    const out = this.#mem.f32(T * Hq * D); // [T, Hq, D]
    const lse = this.#mem.f32(T * Hq); // [T, Hq]
    const args = { geo, ...this.#headMajor(shape, q, k, v), scale: rc.scale, causal: true, dtype: shape.dtype, out, lse };
    await this.#pool.run('denseForward', args, geo.nTiles * Hq, plan(shape, layout, rc).flops.denseForward);
    return { out: this.#wrap(shape.dtype, [T, Hq, D], out), lse: this.#wrap('f32', [T, Hq], lse) };
  }

  async denseBackward(
    q: DeviceTensor, k: DeviceTensor, v: DeviceTensor, out: DeviceTensor, lse: DeviceTensor, dOut: DeviceTensor,
    layout: Layout, opts: DenseOptions = {},
  ): Promise<BackwardResult> {
    this.#alive();
    const { shape, cfg: rc, seqs } = checkProblem(this.caps, q, k, v, layout, { blockSize: KEY_CHUNK, topk: 1, scale: opts?.scale });
    checkBackwardTensors(shape, out, lse, dOut);
    const geo = geometry(shape, seqs, KEY_CHUNK);
    const args = this.#gradArgs(shape, geo, rc.scale, true, { q, k, v, out, lse, dOut });
    const work = plan(shape, layout, rc).flops.denseBackward;
    await this.#pool.run('delta', args, geo.nTiles, 2 * shape.T * shape.Hq * shape.D);
    await this.#pool.run('denseDkdv', args, geo.nChunks * shape.Hkv, work);
    await this.#pool.run('denseDq', args, geo.nTiles * shape.Hq, work);
    return this.#gradResult(shape, args);
  }

  async kconv(k: DeviceTensor, w: DeviceTensor, layout: Layout): Promise<DeviceTensor> {
    const { args, T, C, W } = this.#kconvArgs(k, w, layout);
    const out = this.#mem.f32(T * C); // [T, Hkv, D]
    await this.#pool.run('kconv', { ...args, out }, args.geo.nTiles, 2 * T * C * W);
    return this.#wrap(k.dtype, k.shape, out);
  }

  async kconvBackward(k: DeviceTensor, w: DeviceTensor, dkOut: DeviceTensor, layout: Layout): Promise<{ dk: DeviceTensor; dw: DeviceTensor }> {
    const { args, T, C, W } = this.#kconvArgs(k, w, layout);
    expectShape('dkOut', dkOut, k.shape, k.dtype);
    const all = {
      ...args, dkOut: this.#data('dkOut', dkOut), wDtype: w.dtype,
      dz: this.#mem.f32(T * C), dk: this.#mem.f32(T * C), dw: this.#mem.f32(C * W), // [T, C], [T, C], [C, W]
    };
    await this.#pool.run('kconvDz', all, args.geo.nTiles, 2 * T * C * W);
    await this.#pool.run('kconvDk', all, args.geo.nTiles, 2 * T * C * W);
    await this.#pool.run('kconvDw', all, Math.ceil(C / KCONV_CHANNELS), 2 * T * C * W);
    return { dk: this.#wrap(k.dtype, k.shape, all.dk), dw: this.#wrap(w.dtype, [C, W], all.dw) };
  }

  dispose(...items: (DeviceTensor | Routing)[]): void {
    for (const it of items) {
      if (this.#tensors.free(it) === undefined) this.#routings.free(it);
    }
  }

  async destroy(): Promise<void> {
    if (this.#destroyed) return;
    this.#destroyed = true;
    this.#tensors.clear(); // drop every buffer this backend still references
    this.#routings.clear();
    await this.#pool.close();
  }

  #alive(): void {
    if (this.#destroyed) throw new MobaError('E_DEVICE', 'the CPU backend was destroyed: create a new one', 'backend');
  }

  #wrap(dtype: DType, shape: readonly number[], data: Float32Array): DeviceTensor {
    const t: DeviceTensor = Object.freeze({ backend: NAME, dtype, shape: Object.freeze([...shape]) });
    this.#tensors.add(t, data);
    return t;
  }

  /** The f32 data of a tensor of this backend; another backend's or a disposed tensor is rejected. */
  #data(param: string, t: TensorLike): Float32Array {
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

  #newRouting(indices: Int32Array, T: number, Hq: number, layout: Layout, rc: { topk: number; blockSize: number; causal: boolean }): Routing {
    const seqs = sequences(layout, rc.blockSize);
    const c = collectRouting(indices, T, Hq, rc.topk, seqs);
    const store: RoutingStore = { indices, offsets: this.#mem.copyI32(c.offsets), rows: this.#mem.copyI32(c.rows), cuSeqlens: Int32Array.from(layout.cuSeqlens) };
    const r: Routing = Object.freeze({ backend: NAME, T, Hq, topk: rc.topk, blockSize: rc.blockSize, causal: rc.causal });
    this.#routings.add(r, store);
    return r;
  }

  #gradArgs(shape: ProblemShape, geo: ReturnType<typeof geometry>, scale: number, causal: boolean, t: Record<'q' | 'k' | 'v' | 'out' | 'lse' | 'dOut', DeviceTensor>) {
    const { T, Hq, Hkv, D } = shape;
    return {
      geo, scale, causal, dtype: shape.dtype,
      ...this.#headMajor(shape, t.q, t.k, t.v),
      out: this.#data('out', t.out), lse: this.#data('lse', t.lse), dOut: headMajor(this.#mem, this.#data('dOut', t.dOut), T, Hq, D),
      delta: this.#mem.f64(T * Hq), // [T, Hq]
      dq: this.#mem.f32(T * Hq * D), dk: this.#mem.f32(T * Hkv * D), dv: this.#mem.f32(T * Hkv * D),
    };
  }

  /** Head-major working copies of q `[Hq, T, D]`, k and v `[Hkv, T, D]` for the attention kernels. */
  #headMajor(shape: ProblemShape, q: DeviceTensor, k: DeviceTensor, v: DeviceTensor): { q: Float32Array; k: Float32Array; v: Float32Array } {
    const { T, Hq, Hkv, D } = shape;
    const [qd, kd, vd] = [this.#data('q', q), this.#data('k', k), this.#data('v', v)];
    return { q: headMajor(this.#mem, qd, T, Hq, D), k: headMajor(this.#mem, kd, T, Hkv, D), v: headMajor(this.#mem, vd, T, Hkv, D) };
  }

  #gradResult(shape: ProblemShape, a: { dq: Float32Array; dk: Float32Array; dv: Float32Array }): BackwardResult {
    const { T, Hq, Hkv, D, dtype } = shape;
    return { dq: this.#wrap(dtype, [T, Hq, D], a.dq), dk: this.#wrap(dtype, [T, Hkv, D], a.dk), dv: this.#wrap(dtype, [T, Hkv, D], a.dv) };
  }

  /** Validates a kconv call (SPEC §6, §7) and builds the kernel arguments. */
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
    const need = 3 * T * C * 4 + 4 * C * W;
    if (need > this.caps.memoryBytes) throw new MobaError('E_MEMORY', `kconv workspace of ${need} bytes exceeds this backend's limit of ${this.caps.memoryBytes}`, 'workspace');
    const wd = this.#data('kconvWeight', w);
    const kd = this.#data('k', k);
    const wT = this.#mem.f32(W * C); // [W, C], wT[ℓ, c] = weight[c, W−1−ℓ]
    for (let c = 0; c < C; c++) for (let l = 0; l < W; l++) wT[l * C + c] = wd[c * W + (W - 1 - l)];
    const geo = geometry({ T, Hq: Hkv, Hkv, D }, sequences(layout, KEY_CHUNK), KEY_CHUNK);
    return { args: { geo, k: kd, wT, W, dtype: k.dtype }, T, C, W };
  }
}

function checkPositiveInt(param: string, v: unknown, max = Number.MAX_SAFE_INTEGER): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > max) {
    throw new MobaError('E_RANGE', `${param} = ${String(v)} is invalid: must be an integer in [1, ${max}]`, param);
  }
  return v;
}
