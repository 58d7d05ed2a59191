/**
 * The CPU backend: device tensors are f32 arrays (in SharedArrayBuffers only when a worker pool is used),
 * routings keep indices and collected lists. Core's shell validates every op; this file wires the stages
 * (route.ts, collect.ts, forward.ts, backward.ts, kconv.ts; dense.ts for the dense baseline; cache.ts for the KV
 * cache) to the pool.
 * Runtime specifics (cores, memory, worker threads) come from `#host`.
 */
import { host } from '#host';
import {
  type AttentionLayout, type Backend, type BackwardInputs, type BackwardResult, type Capabilities, type CheckedKconv, type CheckedProblem, type CheckedRoutingCall,
  type DType, type DeviceTensor, type ForwardResult, type HostTensor, type KVCache, type KVCacheOptions, type Layout, type Qkv, type Routing,
  BackendShell, MobaError, bf16ToF32, checkBackwardTensors, checkInt, checkKeys, checkProblem, checkWorkspace, f16ToF32, fromFloat, hostTensor,
  resolveCacheOptions,
} from '@moba/core';
import { backward } from './backward.js';
import { CpuCache, cachePageBytes } from './cache.js';
import { type CpuRouting, collect } from './collect.js';
import { denseBackward, denseForward } from './dense.js';
import { forward } from './forward.js';
import { kconv, kconvBackward, kconvWorkspaceBytes } from './kconv.js';
import { MIN_MEMORY_BYTES, THREADS_PER_CORE, defaultMemoryBytes } from './host.js';
import { Pool } from './pool.js';
import { route } from './route.js';
import { type Cpu, KEY_TILE, Storage } from './tensor.js';

export interface CpuBackendOptions {
  /**
   * Worker threads for large problems (default: available cores, at most 16); 1 runs in the calling thread.
   * At most 4 per available core (E_RANGE above: each worker costs memory and start-up time, and more of them
   * than cores only queue). Where there are no worker threads (browsers) any value in [1, 256] runs in the
   * calling thread and `threads` reads 1.
   */
  threads?: number;
  /**
   * Workspace bytes one call may use (`caps.memoryBytes`; E_MEMORY above it), an integer ≥ 1 MiB. Default: half
   * of the machine's memory or of the process's cgroup memory limit, whichever is smaller (Node; in browsers half
   * of `navigator.deviceMemory`, 4 GiB when it is not told).
   */
  memoryBytes?: number;
  /** Estimated FLOPs below which a job runs in the calling thread (default 2e7; 0 always uses workers). */
  minParallelWork?: number;
}

/**
 * The keys `createCpuBackend` accepts (a new option adds its key here); any other key, or a null value, is
 * E_RANGE naming it.
 */
export const CPU_BACKEND_OPTION_KEYS: readonly (keyof CpuBackendOptions)[] = Object.freeze(['threads', 'minParallelWork', 'memoryBytes'] as const);

/** The keys of `denseForward` / `denseBackward` options. */
export const DENSE_OPTION_KEYS: readonly (keyof DenseOptions)[] = Object.freeze(['scale'] as const);

/** Options of the dense baseline. */
export interface DenseOptions {
  /** Softmax scale, default 1/sqrt(D). */
  scale?: number;
}

/** The CPU backend: the Backend contract plus a dense causal attention baseline on the same kernels. */
export interface CpuBackend extends Backend {
  /** Threads that run large jobs (1: the calling thread only). */
  readonly threads: number;
  /**
   * Dense causal attention per sequence: out `[T, Hq, D]` (input dtype), lse `[T, Hq]` f32. With a
   * `{ cuSeqlensQ, cuSeqlensK }` layout (SPEC §8) the queries are bottom-right aligned: T query rows, Tk keys.
   */
  denseForward(q: DeviceTensor, k: DeviceTensor, v: DeviceTensor, layout: AttentionLayout, opts?: DenseOptions): Promise<ForwardResult>;
  /** Gradient of dense causal attention, recomputing P from `lse`: dq `[T, Hq, D]`, dk, dv `[Tk, Hkv, D]`. */
  denseBackward(
    q: DeviceTensor, k: DeviceTensor, v: DeviceTensor, out: DeviceTensor, lse: DeviceTensor, dOut: DeviceTensor,
    layout: AttentionLayout, opts?: DenseOptions,
  ): Promise<BackwardResult>;
  /** A paged KV cache (SPEC §9) whose pages are allocated now; attend reads only centroids and the selected pages. */
  createCache(opts: KVCacheOptions): Promise<KVCache>;
}

export class CpuBackendImpl extends BackendShell<Float32Array, CpuRouting> implements CpuBackend {
  readonly name = 'cpu';
  readonly caps: Capabilities;
  readonly threads: number;
  readonly #cpu: Cpu;

  constructor(opts: CpuBackendOptions = {}) {
    super('CPU');
    checkKeys(opts, CPU_BACKEND_OPTION_KEYS, 'CPU backend option');
    const workers = host.workers;
    const cores = Math.max(1, workers?.defaultCount() ?? 1);
    const threads = opts.threads === undefined ? Math.min(16, cores) : checkThreads(opts.threads, workers ? cores : null);
    this.threads = workers ? threads : 1; // no worker threads here: the calling thread only
    const memoryBytes = opts.memoryBytes === undefined
      ? defaultMemoryBytes(host.totalMemory(), host.memoryLimit())
      : checkInt('memoryBytes', opts.memoryBytes, MIN_MEMORY_BYTES);
    const minWork = opts.minParallelWork ?? 2e7;
    if (typeof minWork !== 'number' || !(minWork >= 0)) {
      throw new MobaError('E_RANGE', `minParallelWork = ${String(minWork)} is invalid: must be a number >= 0`, 'minParallelWork');
    }
    const pool = new Pool(this.threads, minWork, workers?.load ?? null);
    // shared memory only for a pool: pages without cross-origin isolation have no SharedArrayBuffer
    this.#cpu = { pool, mem: new Storage(pool.parallel) };
    this.caps = Object.freeze({
      dtypes: Object.freeze(['f32', 'f16', 'bf16'] as DType[]),
      maxHeadDim: 512, maxTopk: 1024, maxBlockSize: 1 << 20,
      nonCausal: true, kconv: true, maxKconvWidth: 64, kconvWeightDtype: 'any',
      memoryBytes,
      deterministic: true, qkLayout: true, kvCache: true,
      maxCacheTopk: 1 << 20, cacheDense: true, // an attend holds no [T, Hq, topk] routing: topk may cover every block (dense decode)
    });
  }

  async denseForward(q: DeviceTensor, k: DeviceTensor, v: DeviceTensor, layout: AttentionLayout, opts: DenseOptions = {}): Promise<ForwardResult> {
    this.alive();
    checkKeys(opts, DENSE_OPTION_KEYS, 'denseForward option');
    const p = checkProblem(this.caps, q, k, v, layout, { blockSize: KEY_TILE, topk: 1, scale: opts.scale });
    const res = await this.measured(() => denseForward(this.#cpu, p, { q: this.tensor('q', q), k: this.tensor('k', k), v: this.tensor('v', v) }));
    const { T, Hq, D, dtype } = p.shape;
    return { out: this.wrap(dtype, [T, Hq, D], res.out), lse: this.wrap('f32', [T, Hq], res.lse) };
  }

  async denseBackward(
    q: DeviceTensor, k: DeviceTensor, v: DeviceTensor, out: DeviceTensor, lse: DeviceTensor, dOut: DeviceTensor,
    layout: AttentionLayout, opts: DenseOptions = {},
  ): Promise<BackwardResult> {
    this.alive();
    checkKeys(opts, DENSE_OPTION_KEYS, 'denseBackward option');
    const p = checkProblem(this.caps, q, k, v, layout, { blockSize: KEY_TILE, topk: 1, scale: opts.scale });
    checkBackwardTensors(p.shape, out, lse, dOut);
    const t = {
      q: this.tensor('q', q), k: this.tensor('k', k), v: this.tensor('v', v),
      out: this.tensor('out', out), lse: this.tensor('lse', lse), dOut: this.tensor('dOut', dOut),
    };
    const g = await this.measured(() => denseBackward(this.#cpu, p, t));
    const { T, Tk, Hq, Hkv, D, dtype } = p.shape;
    return { dq: this.wrap(dtype, [T, Hq, D], g.dq), dk: this.wrap(dtype, [Tk, Hkv, D], g.dk), dv: this.wrap(dtype, [Tk, Hkv, D], g.dv) };
  }

  async createCache(opts: KVCacheOptions): Promise<KVCache> {
    this.alive();
    const r = resolveCacheOptions(this.caps, opts, cachePageBytes);
    const weight = r.W > 0 ? this.tensor('kconvWeight', opts.kconvWeight) : null;
    const host = {
      name: this.name, caps: this.caps,
      tensor: (param: string, t: unknown) => this.tensor(param, t),
      wrap: (dtype: DType, shape: readonly number[], data: Float32Array) => this.wrap(dtype, shape, data),
    };
    return new CpuCache(host, r, this.#cpu, weight);
  }

  protected async doUpload(t: HostTensor): Promise<Float32Array> {
    const data = this.#cpu.mem.f32(t.data.length);
    if (t.dtype === 'f32') data.set(t.data);
    else {
      const decode = t.dtype === 'f16' ? f16ToF32 : bf16ToF32;
      for (let i = 0; i < data.length; i++) data[i] = decode(t.data[i]);
    }
    return data;
  }

  protected async doDownload(t: DeviceTensor, data: Float32Array): Promise<HostTensor> {
    if (t.dtype === 'f32') return hostTensor('f32', t.shape, new Float32Array(data));
    return fromFloat(data, t.dtype, t.shape); // values are already exact in the dtype
  }

  protected async doRoute(p: CheckedProblem, q: Float32Array, k: Float32Array): Promise<CpuRouting> {
    const indices = await route(this.#cpu, p, q, k);
    return collect(this.#cpu.mem, indices, p.shape.T, p.shape.Hq, p.cfg.topk, p.seqs, p.queries);
  }

  protected async doRoutingFromIndices(indices: Int32Array, p: CheckedRoutingCall): Promise<CpuRouting> {
    return collect(this.#cpu.mem, this.#cpu.mem.copyI32(indices), p.T, p.Hq, p.cfg.topk, p.seqs, p.queries);
  }

  protected async doRoutingIndices(_r: Routing, store: CpuRouting): Promise<Int32Array> {
    return new Int32Array(store.indices);
  }

  protected doForward(p: CheckedProblem, t: Qkv<Float32Array>, r: CpuRouting): Promise<{ out: Float32Array; lse: Float32Array }> {
    return forward(this.#cpu, p, t, r);
  }

  protected doBackward(p: CheckedProblem, t: BackwardInputs<Float32Array>, r: CpuRouting): Promise<{ dq: Float32Array; dk: Float32Array; dv: Float32Array }> {
    return backward(this.#cpu, p, t, r);
  }

  protected doKconv(p: CheckedKconv, k: Float32Array, w: Float32Array, layout: Layout): Promise<Float32Array> {
    checkWorkspace(this.caps, 'kconv', kconvWorkspaceBytes(p));
    return kconv(this.#cpu, p, k, w, layout);
  }

  protected doKconvBackward(p: CheckedKconv, k: Float32Array, w: Float32Array, dkOut: Float32Array, layout: Layout): Promise<{ dk: Float32Array; dw: Float32Array }> {
    checkWorkspace(this.caps, 'kconv', kconvWorkspaceBytes(p));
    return kconvBackward(this.#cpu, p, k, w, dkOut, layout);
  }

  protected bytesOf(data: Float32Array): number {
    return data.byteLength;
  }

  protected routingBytesOf(r: CpuRouting): number {
    return r.indices.byteLength + r.offsets.byteLength + r.rows.byteLength;
  }

  protected override allocatedBytes(): number {
    return this.#cpu.mem.allocatedBytes;
  }

  protected async doSync(): Promise<void> {
    // every job has finished when the op that ran it resolves
  }

  protected freeTensor(): void {
    // the arrays go with their last reference
  }

  protected freeRouting(): void {}

  protected async doDestroy(): Promise<void> {
    await this.#cpu.pool.close();
  }
}

/** `threads` as given: an integer in [1, 4 × cores] where workers run (`cores` known), else in [1, 256]. */
function checkThreads(threads: unknown, cores: number | null): number {
  if (cores === null) return checkInt('threads', threads, 1, 256);
  const cap = THREADS_PER_CORE * cores;
  if (typeof threads === 'number' && Number.isInteger(threads) && threads > cap) {
    throw new MobaError('E_RANGE', `threads = ${threads} is invalid: must be an integer in [1, ${cap}] (at most ${THREADS_PER_CORE} per available core; this host has ${cores})`, 'threads');
  }
  return checkInt('threads', threads, 1, cap);
}
