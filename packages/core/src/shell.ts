/**
 * The shell every backend shares: one checked entry per contract call, one handle store for tensors and
 * routings, and the lifecycle (dispose, destroy, sync). A backend extends `BackendShell` and implements
 * only its stages (`doRoute`, `doForward`, …), which receive inputs already validated against SPEC §7
 * and the backend's caps, the problem's plan, and the backend's own data behind each handle. The shell
 * wraps what a stage returns into handles with the contract's shapes and dtypes.
 */
import {
  type BackwardResult, type Backend, type Capabilities, type CheckedProblem, type CheckedRoutingCall,
  type DeviceTensor, type ForwardResult, type MemoryStats, type Routing,
  checkBackwardTensors, checkProblem, checkRouting, checkRoutingCall,
} from './backend.js';
import { type CheckedKconv, checkKconv } from './kconv-check.js';
import type { Layout, MobaConfig } from './config.js';
import type { DType } from './dtype.js';
import { MobaError } from './errors.js';
import { HandleTable, MemoryLedger, checkRoutingLayout } from './handles.js';
import { type AttentionLayout, type QueryRows, toQKLayout } from './layout.js';
import { type HostTensor, checkTensor } from './tensor.js';

export { timeBackend, wrapBackend, type BackendOp, type TimingHooks } from './wrap.js';

/** What a backend counts of its device memory beyond the handles (BackendShell.deviceMemory). */
export interface DeviceMemory {
  /** Bytes allocated and neither freed nor pooled: the handles' data plus the backend's scratch. */
  readonly inUseBytes: number;
  /** Bytes of freed buffers kept for reuse. */
  readonly pooledBytes: number;
  /** Most of `inUseBytes` at once since creation or the last `resetDevicePeak()`. */
  readonly peakBytes: number;
}

/** Tensor data of one attention call, by contract name. */
export interface Qkv<T> { readonly q: T; readonly k: T; readonly v: T }
export interface BackwardInputs<T> extends Qkv<T> { readonly out: T; readonly lse: T; readonly dOut: T }

interface RoutingEntry<R> {
  readonly store: R;
  /** The layout it was made for, as query and key boundaries. */
  readonly cuSeqlensQ: Int32Array;
  readonly cuSeqlensK: Int32Array;
}

/**
 * Base class of a backend whose tensors hold `TData` and whose routings hold `RData`. `label` names the
 * backend in messages (`'CPU'`, `'WebGPU'`, `'CUDA'`).
 */
export abstract class BackendShell<TData, RData> implements Backend {
  abstract readonly name: string;
  abstract readonly caps: Capabilities;
  readonly #label: string;
  readonly #tensors: HandleTable<TData>;
  readonly #routings: HandleTable<RoutingEntry<RData>>;
  readonly #ledger = new MemoryLedger();
  #destroyed = false;

  constructor(label: string) {
    this.#label = label;
    this.#tensors = new HandleTable<TData>(label);
    this.#routings = new HandleTable<RoutingEntry<RData>>(label, 'routing', this.#tensors);
  }

  // ---------------------------------------------------------------- the stages a backend implements

  /** The data of a new tensor holding `t` (checked, dtype within caps). */
  protected abstract doUpload(t: HostTensor): Promise<TData>;
  protected abstract doDownload(t: DeviceTensor, data: TData): Promise<HostTensor>;
  /**
   * Routes and collects (SPEC §3); `p.shape.Hkv` and `p.shape.D` come from k. Every stage's `layout` is the key
   * layout (`p.keys`); with fewer queries than keys (only where `caps.qkLayout`) `p.queries` maps the query rows.
   */
  protected abstract doRoute(p: CheckedProblem, q: TData, k: TData, layout: Layout): Promise<RData>;
  /** A routing from validated indices, collected the same way as one from `doRoute`. */
  protected abstract doRoutingFromIndices(indices: Int32Array, p: CheckedRoutingCall, layout: Layout): Promise<RData>;
  protected abstract doRoutingIndices(r: Routing, store: RData): Promise<Int32Array>;
  protected abstract doForward(p: CheckedProblem, t: Qkv<TData>, r: RData, layout: Layout): Promise<{ out: TData; lse: TData }>;
  protected abstract doBackward(p: CheckedProblem, t: BackwardInputs<TData>, r: RData, layout: Layout): Promise<{ dq: TData; dk: TData; dv: TData }>;
  protected abstract doKconv(p: CheckedKconv, k: TData, w: TData, layout: Layout): Promise<TData>;
  protected abstract doKconvBackward(p: CheckedKconv, k: TData, w: TData, dkOut: TData, layout: Layout): Promise<{ dk: TData; dw: TData }>;
  /** Waits for the device's queued work. */
  protected abstract doSync(): Promise<void>;
  /** Frees what a disposed tensor or routing held (`handle` is the disposed handle). */
  protected abstract freeTensor(data: TData, handle: DeviceTensor): void;
  protected abstract freeRouting(store: RData, handle: Routing): void;
  /** Releases the device after every handle was forgotten (runs once). */
  protected abstract doDestroy(): Promise<void>;
  /** Bytes behind a tensor's data and a routing's store (MemoryStats `liveBytes`). */
  protected abstract bytesOf(data: TData): number;
  protected abstract routingBytesOf(store: RData): number;
  /** The device's own counts (GPU allocators); null: the shell's count of the handles is all there is. */
  protected deviceMemory(): DeviceMemory | null {
    return null;
  }
  protected resetDevicePeak(): void {}
  /** Bytes allocated since creation, ever increasing (host backends: bounds each call's peak; 0: not counted). */
  protected allocatedBytes(): number {
    return 0;
  }
  /** Extra liveness checks of the device, run before every call (e.g. make its context current). */
  protected checkDevice(): void {}
  /** Called for every new handle (e.g. to register it for collection). */
  protected adopted(_handle: DeviceTensor | Routing, _data: TData | RData): void {}

  // ---------------------------------------------------------------- the contract

  async upload<D extends DType>(t: HostTensor<D>): Promise<DeviceTensor<D>> {
    this.alive();
    checkTensor('tensor', t);
    if (!this.caps.dtypes.includes(t.dtype)) {
      throw new MobaError('E_UNSUPPORTED', `dtype ${t.dtype} is not supported by the ${this.#label} backend: allowed ${this.caps.dtypes.join(', ')}`, 'dtype');
    }
    return this.wrap(t.dtype, t.shape, await this.measured(() => this.doUpload(t))) as DeviceTensor<D>;
  }

  async download<D extends DType>(t: DeviceTensor<D>): Promise<HostTensor<D>> {
    // The hooks return the tensor's own dtype (checked by the testkit's round-trip properties).
    return (await this.doDownload(t, this.tensor('tensor', t))) as HostTensor<D>;
  }

  async route(q: DeviceTensor, k: DeviceTensor, layout: AttentionLayout, cfg: MobaConfig): Promise<Routing> {
    this.alive();
    const p = checkProblem(this.caps, q, k, null, layout, cfg);
    const store = await this.measured(() => this.doRoute(p, this.tensor('q', q), this.tensor('k', k), p.keys));
    return this.#newRouting(store, p.shape.T, p.shape.Hq, layout, p.cfg);
  }

  async routingFromIndices(indices: Int32Array, shape: { T: number; Hq: number }, layout: AttentionLayout, cfg: MobaConfig): Promise<Routing> {
    this.alive();
    const p = checkRoutingCall(this.caps, indices, shape, layout, cfg);
    const store = await this.measured(() => this.doRoutingFromIndices(indices, p, p.keys));
    return this.#newRouting(store, p.T, p.Hq, layout, p.cfg);
  }

  async routingIndices(r: Routing): Promise<Int32Array> {
    return this.doRoutingIndices(r, this.#routing(r).store);
  }

  async forward(q: DeviceTensor, k: DeviceTensor, v: DeviceTensor, r: Routing, layout: AttentionLayout, cfg: MobaConfig): Promise<ForwardResult> {
    this.alive();
    const p = checkProblem(this.caps, q, k, v, layout, cfg);
    checkRouting(r, this.name, p.shape, p.cfg);
    const rs = this.#routingFor(r, p.queries, p.keys);
    const res = await this.measured(() => this.doForward(p, { q: this.tensor('q', q), k: this.tensor('k', k), v: this.tensor('v', v) }, rs, p.keys));
    const { T, Hq, D, dtype } = p.shape;
    return { out: this.wrap(dtype, [T, Hq, D], res.out), lse: this.wrap('f32', [T, Hq], res.lse) };
  }

  async backward(
    q: DeviceTensor, k: DeviceTensor, v: DeviceTensor, out: DeviceTensor, lse: DeviceTensor, dOut: DeviceTensor,
    r: Routing, layout: AttentionLayout, cfg: MobaConfig,
  ): Promise<BackwardResult> {
    this.alive();
    const p = checkProblem(this.caps, q, k, v, layout, cfg);
    checkRouting(r, this.name, p.shape, p.cfg);
    checkBackwardTensors(p.shape, out, lse, dOut);
    const rs = this.#routingFor(r, p.queries, p.keys);
    const t = {
      q: this.tensor('q', q), k: this.tensor('k', k), v: this.tensor('v', v),
      out: this.tensor('out', out), lse: this.tensor('lse', lse), dOut: this.tensor('dOut', dOut),
    };
    const g = await this.measured(() => this.doBackward(p, t, rs, p.keys));
    const { T, Tk, Hq, Hkv, D, dtype } = p.shape;
    return { dq: this.wrap(dtype, [T, Hq, D], g.dq), dk: this.wrap(dtype, [Tk, Hkv, D], g.dk), dv: this.wrap(dtype, [Tk, Hkv, D], g.dv) };
  }

  async kconv(k: DeviceTensor, w: DeviceTensor, layout: Layout): Promise<DeviceTensor> {
    this.alive();
    const p = checkKconv(this.caps, k, w, layout);
    const out = await this.measured(() => this.doKconv(p, this.tensor('k', k), this.tensor('kconvWeight', w), layout));
    return this.wrap(p.dtype, [p.T, p.Hkv, p.D], out);
  }

  async kconvBackward(k: DeviceTensor, w: DeviceTensor, dkOut: DeviceTensor, layout: Layout): Promise<{ dk: DeviceTensor; dw: DeviceTensor }> {
    this.alive();
    const p = checkKconv(this.caps, k, w, layout, dkOut);
    const g = await this.measured(() => this.doKconvBackward(p, this.tensor('k', k), this.tensor('kconvWeight', w), this.tensor('dkOut', dkOut), layout));
    return { dk: this.wrap(p.dtype, [p.T, p.Hkv, p.D], g.dk), dw: this.wrap(p.wDtype, [p.C, p.W], g.dw) };
  }

  async sync(): Promise<void> {
    this.alive();
    await this.doSync();
  }

  dispose(...items: (DeviceTensor | Routing)[]): void {
    for (const it of items) {
      const data = this.#tensors.free(it);
      if (data !== undefined) {
        this.#ledger.remove(it);
        this.freeTensor(data, it as DeviceTensor);
        continue;
      }
      const r = this.#routings.free(it);
      if (r === undefined) continue;
      this.#ledger.remove(it);
      this.freeRouting(r.store, it as Routing);
    }
  }

  async destroy(): Promise<void> {
    if (this.#destroyed) return;
    this.#destroyed = true;
    this.#tensors.clear(); // drop every reference to the backend's data
    this.#routings.clear();
    this.#ledger.clear();
    await this.doDestroy();
  }

  memoryStats(): MemoryStats {
    if (this.#destroyed) return { liveBytes: 0, liveTensors: 0, liveRoutings: 0, scratchBytes: 0, pooledBytes: 0, peakBytes: 0 };
    const l = this.#ledger;
    const dev = this.deviceMemory();
    const scratchBytes = dev ? Math.max(0, dev.inUseBytes - l.liveBytes) : 0;
    const peakBytes = Math.max(l.peakBytes, dev?.peakBytes ?? 0, l.liveBytes + scratchBytes);
    return { liveBytes: l.liveBytes, liveTensors: l.liveTensors, liveRoutings: l.liveRoutings, scratchBytes, pooledBytes: dev?.pooledBytes ?? 0, peakBytes };
  }

  resetPeakMemory(): void {
    if (this.#destroyed) return;
    this.resetDevicePeak();
    const dev = this.deviceMemory();
    this.#ledger.resetPeak(Math.max(this.#ledger.liveBytes, dev?.inUseBytes ?? 0));
  }

  // ---------------------------------------------------------------- for the backend's own extra ops

  /** Whether `destroy()` has run. */
  protected get destroyed(): boolean {
    return this.#destroyed;
  }

  /** E_DEVICE once destroyed; then the backend's own device checks. */
  protected alive(): void {
    if (this.#destroyed) throw new MobaError('E_DEVICE', `the ${this.#label} backend was destroyed: create a new one`, 'backend');
    this.checkDevice();
  }

  /** The data of one of this backend's live tensors; another backend's or a disposed tensor is refused. */
  protected tensor(param: string, t: unknown): TData {
    this.alive();
    return this.#tensors.get(param, t);
  }

  /**
   * Runs one op's stage and raises the peak to the bytes in use when it started plus all it allocated
   * (`allocatedBytes`); backends' own ops (a dense baseline) may run through it too.
   */
  protected async measured<R>(stage: () => Promise<R>): Promise<R> {
    const dev = this.deviceMemory();
    const start = Math.max(this.#ledger.liveBytes, dev?.inUseBytes ?? 0);
    const a0 = this.allocatedBytes();
    try {
      return await stage();
    } finally {
      this.#ledger.note(start + this.allocatedBytes() - a0);
    }
  }

  /** A new tensor handle for `data`. */
  protected wrap(dtype: DType, shape: readonly number[], data: TData): DeviceTensor {
    const t: DeviceTensor = Object.freeze({ backend: this.name, dtype, shape: Object.freeze([...shape]) });
    this.#tensors.add(t, data);
    this.#ledger.add(t, this.bytesOf(data), false);
    this.adopted(t, data);
    return t;
  }

  #routing(r: Routing): RoutingEntry<RData> {
    this.alive();
    return this.#routings.get('routing', r);
  }

  /** A routing of this backend made for the same query and key layout. */
  #routingFor(r: Routing, queries: QueryRows, keys: Layout): RData {
    return checkRoutingLayout(this.#routing(r), queries.cuSeqlensQ, keys.cuSeqlens).store;
  }

  #newRouting(store: RData, T: number, Hq: number, layout: AttentionLayout, rc: { topk: number; blockSize: number; causal: boolean }): Routing {
    const r: Routing = Object.freeze({ backend: this.name, T, Hq, topk: rc.topk, blockSize: rc.blockSize, causal: rc.causal });
    this.#routings.add(r, { store, ...toQKLayout(layout) });
    this.#ledger.add(r, this.routingBytesOf(store), true);
    this.adopted(r, store);
    return r;
  }
}
