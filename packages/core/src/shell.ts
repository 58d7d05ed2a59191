/**
 * The shell every backend shares: one checked entry per contract call, one handle store for tensors and
 * routings, and the lifecycle (dispose, destroy, sync). A backend extends `BackendShell` and implements
 * only its stages (`doRoute`, `doForward`, …), which receive inputs already validated against SPEC §7
 * and the backend's caps, the problem's plan, and the backend's own data behind each handle. The shell
 * wraps what a stage returns into handles with the contract's shapes and dtypes.
 */
import {
  type BackwardResult, type Backend, type Capabilities, type CheckedKconv, type CheckedProblem, type CheckedRoutingCall,
  type DeviceTensor, type ForwardResult, type Routing,
  checkBackwardTensors, checkKconv, checkProblem, checkRouting, checkRoutingCall,
} from './backend.js';
import type { Layout, MobaConfig } from './config.js';
import type { DType } from './dtype.js';
import { MobaError } from './errors.js';
import { HandleTable, checkRoutingLayout } from './handles.js';
import { type HostTensor, checkTensor } from './tensor.js';

/** Tensor data of one attention call, by contract name. */
export interface Qkv<T> { readonly q: T; readonly k: T; readonly v: T }
export interface BackwardInputs<T> extends Qkv<T> { readonly out: T; readonly lse: T; readonly dOut: T }

interface RoutingEntry<R> {
  readonly store: R;
  readonly cuSeqlens: Int32Array;
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
  /** Routes and collects (SPEC §3); `p.shape.Hkv` and `p.shape.D` come from k. */
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
  /** Extra liveness checks of the device, run before every call (e.g. make its context current). */
  protected checkDevice(): void {}
  /** Called for every new handle (e.g. to register it for collection). */
  protected adopted(_handle: DeviceTensor | Routing, _data: TData | RData): void {}

  // ---------------------------------------------------------------- the contract

  async upload(t: HostTensor): Promise<DeviceTensor> {
    this.alive();
    checkTensor('tensor', t);
    if (!this.caps.dtypes.includes(t.dtype)) {
      throw new MobaError('E_UNSUPPORTED', `dtype ${t.dtype} is not supported by the ${this.#label} backend: allowed ${this.caps.dtypes.join(', ')}`, 'dtype');
    }
    return this.wrap(t.dtype, t.shape, await this.doUpload(t));
  }

  async download(t: DeviceTensor): Promise<HostTensor> {
    return this.doDownload(t, this.tensor('tensor', t));
  }

  async route(q: DeviceTensor, k: DeviceTensor, layout: Layout, cfg: MobaConfig): Promise<Routing> {
    this.alive();
    const p = checkProblem(this.caps, q, k, null, layout, cfg);
    const store = await this.doRoute(p, this.tensor('q', q), this.tensor('k', k), layout);
    return this.#newRouting(store, p.shape.T, p.shape.Hq, layout, p.cfg);
  }

  async routingFromIndices(indices: Int32Array, shape: { T: number; Hq: number }, layout: Layout, cfg: MobaConfig): Promise<Routing> {
    this.alive();
    const p = checkRoutingCall(this.caps, indices, shape, layout, cfg);
    const store = await this.doRoutingFromIndices(indices, p, layout);
    return this.#newRouting(store, p.T, p.Hq, layout, p.cfg);
  }

  async routingIndices(r: Routing): Promise<Int32Array> {
    return this.doRoutingIndices(r, this.#routing(r).store);
  }

  async forward(q: DeviceTensor, k: DeviceTensor, v: DeviceTensor, r: Routing, layout: Layout, cfg: MobaConfig): Promise<ForwardResult> {
    this.alive();
    const p = checkProblem(this.caps, q, k, v, layout, cfg);
    checkRouting(r, this.name, p.shape, p.cfg);
    const rs = this.#routingFor(r, layout);
    const res = await this.doForward(p, { q: this.tensor('q', q), k: this.tensor('k', k), v: this.tensor('v', v) }, rs, layout);
    const { T, Hq, D, dtype } = p.shape;
    return { out: this.wrap(dtype, [T, Hq, D], res.out), lse: this.wrap('f32', [T, Hq], res.lse) };
  }

  async backward(
    q: DeviceTensor, k: DeviceTensor, v: DeviceTensor, out: DeviceTensor, lse: DeviceTensor, dOut: DeviceTensor,
    r: Routing, layout: Layout, cfg: MobaConfig,
  ): Promise<BackwardResult> {
    this.alive();
    const p = checkProblem(this.caps, q, k, v, layout, cfg);
    checkRouting(r, this.name, p.shape, p.cfg);
    checkBackwardTensors(p.shape, out, lse, dOut);
    const rs = this.#routingFor(r, layout);
    const t = {
      q: this.tensor('q', q), k: this.tensor('k', k), v: this.tensor('v', v),
      out: this.tensor('out', out), lse: this.tensor('lse', lse), dOut: this.tensor('dOut', dOut),
    };
    const g = await this.doBackward(p, t, rs, layout);
    const { T, Hq, Hkv, D, dtype } = p.shape;
    return { dq: this.wrap(dtype, [T, Hq, D], g.dq), dk: this.wrap(dtype, [T, Hkv, D], g.dk), dv: this.wrap(dtype, [T, Hkv, D], g.dv) };
  }

  async kconv(k: DeviceTensor, w: DeviceTensor, layout: Layout): Promise<DeviceTensor> {
    this.alive();
    const p = checkKconv(this.caps, k, w, layout);
    const out = await this.doKconv(p, this.tensor('k', k), this.tensor('kconvWeight', w), layout);
    return this.wrap(p.dtype, [p.T, p.Hkv, p.D], out);
  }

  async kconvBackward(k: DeviceTensor, w: DeviceTensor, dkOut: DeviceTensor, layout: Layout): Promise<{ dk: DeviceTensor; dw: DeviceTensor }> {
    this.alive();
    const p = checkKconv(this.caps, k, w, layout, dkOut);
    const g = await this.doKconvBackward(p, this.tensor('k', k), this.tensor('kconvWeight', w), this.tensor('dkOut', dkOut), layout);
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
        this.freeTensor(data, it as DeviceTensor);
        continue;
      }
      const r = this.#routings.free(it);
      if (r !== undefined) this.freeRouting(r.store, it as Routing);
    }
  }

  async destroy(): Promise<void> {
    if (this.#destroyed) return;
    this.#destroyed = true;
    this.#tensors.clear(); // drop every reference to the backend's data
    this.#routings.clear();
    await this.doDestroy();
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

  /** A new tensor handle for `data`. */
  protected wrap(dtype: DType, shape: readonly number[], data: TData): DeviceTensor {
    const t: DeviceTensor = Object.freeze({ backend: this.name, dtype, shape: Object.freeze([...shape]) });
    this.#tensors.add(t, data);
    this.adopted(t, data);
    return t;
  }

  #routing(r: Routing): RoutingEntry<RData> {
    this.alive();
    return this.#routings.get('routing', r);
  }

  /** A routing of this backend made for the same sequence layout. */
  #routingFor(r: Routing, layout: Layout): RData {
    return checkRoutingLayout(this.#routing(r), layout).store;
  }

  #newRouting(store: RData, T: number, Hq: number, layout: Layout, rc: { topk: number; blockSize: number; causal: boolean }): Routing {
    const r: Routing = Object.freeze({ backend: this.name, T, Hq, topk: rc.topk, blockSize: rc.blockSize, causal: rc.causal });
    this.#routings.add(r, { store, cuSeqlens: Int32Array.from(layout.cuSeqlens) });
    this.adopted(r, store);
    return r;
  }
}

/**
 * A backend that delegates every member of the contract to `inner`, except those in `over`: for
 * instrumentation (timing, event logs) and for deliberately faulty test backends.
 */
export function wrapBackend(inner: Backend, over: Partial<Backend> = {}): Backend {
  const b: Backend = {
    name: inner.name,
    caps: inner.caps,
    upload: (t) => inner.upload(t),
    download: (t) => inner.download(t),
    route: (q, k, l, c) => inner.route(q, k, l, c),
    routingFromIndices: (i, s, l, c) => inner.routingFromIndices(i, s, l, c),
    routingIndices: (r) => inner.routingIndices(r),
    forward: (q, k, v, r, l, c) => inner.forward(q, k, v, r, l, c),
    backward: (q, k, v, o, lse, g, r, l, c) => inner.backward(q, k, v, o, lse, g, r, l, c),
    kconv: (k, w, l) => inner.kconv(k, w, l),
    kconvBackward: (k, w, g, l) => inner.kconvBackward(k, w, g, l),
    sync: () => inner.sync(),
    dispose: (...items) => inner.dispose(...items),
    destroy: () => inner.destroy(),
  };
  return { ...b, ...over };
}

/** The contract's data ops, as `timeBackend` names them. */
export type BackendOp = 'upload' | 'download' | 'route' | 'routingFromIndices' | 'routingIndices' | 'forward' | 'backward' | 'kconv' | 'kconvBackward';

export interface TimingHooks {
  /** Called before an op starts (after the device went idle). */
  start?(op: BackendOp): void;
  /** Called with the op's milliseconds, from an idle device to the op's completion on the device (also when it failed). */
  end(op: BackendOp, ms: number): void;
}

/**
 * A backend whose every data op is timed to device completion: `sync()` before the op starts (so earlier
 * work is not counted) and after it resolves (so queued work is), then `hooks.end(op, ms)`. Results are
 * exactly those of `inner`.
 */
export function timeBackend(inner: Backend, hooks: TimingHooks): Backend {
  const time = async <R>(op: BackendOp, f: () => Promise<R>): Promise<R> => {
    await inner.sync();
    hooks.start?.(op);
    const t0 = performance.now();
    try {
      const r = await f();
      await inner.sync();
      return r;
    } finally {
      hooks.end(op, performance.now() - t0);
    }
  };
  return wrapBackend(inner, {
    upload: (t) => time('upload', () => inner.upload(t)),
    download: (t) => time('download', () => inner.download(t)),
    route: (q, k, l, c) => time('route', () => inner.route(q, k, l, c)),
    routingFromIndices: (i, s, l, c) => time('routingFromIndices', () => inner.routingFromIndices(i, s, l, c)),
    routingIndices: (r) => time('routingIndices', () => inner.routingIndices(r)),
    forward: (q, k, v, r, l, c) => time('forward', () => inner.forward(q, k, v, r, l, c)),
    backward: (q, k, v, o, lse, g, r, l, c) => time('backward', () => inner.backward(q, k, v, o, lse, g, r, l, c)),
    kconv: (k, w, l) => time('kconv', () => inner.kconv(k, w, l)),
    kconvBackward: (k, w, g, l) => time('kconvBackward', () => inner.kconvBackward(k, w, g, l)),
  });
}
