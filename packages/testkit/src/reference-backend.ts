/**
 * A complete, slow Backend built on the float64 reference of `@moba/core/reference`: the baseline the
 * testkit checks itself against, and the worked example of docs/writing-a-backend.md. Tensors live in
 * host memory. Core's shell (`BackendShell`) validates every call as SPEC §7 requires before a stage runs,
 * so the stages below only compute.
 */
import {
  type Backend, type BackwardInputs, type Capabilities, type CheckedKconv, type CheckedProblem, type DType, type DeviceTensor, type HostTensor,
  type AttentionLayout, type CacheHost, type KVCache, type KVCacheOptions, type Layout, type Qkv, type ResolvedCacheOptions,
  BackendShell, fromFloat, hostTensor, resolveCacheOptions, toFloat64,
} from '@moba/core';
import { referenceBackward, referenceForward, referenceKconv, referenceKconvBackward, referenceRoute } from '@moba/core/reference';
import { ReferenceCache, referencePageBytes } from './reference-cache.js';

/** Makes the cache `createCache` returns: a `ReferenceCache` or a subclass (the testkit's faulty caches). */
export type ReferenceCacheFactory = (host: CacheHost<HostTensor>, opts: ResolvedCacheOptions, kconvWeight: Float64Array | null) => KVCache;

export interface ReferenceBackendOptions {
  /** Backend name (default `'reference'`). */
  name?: string;
  /** Overrides of the declared capabilities. */
  caps?: Partial<Capabilities>;
  /** The KV cache class to use (default `ReferenceCache`); the testkit's own tests inject faulty subclasses. */
  cache?: ReferenceCacheFactory;
}

const DEFAULT_CAPS: Capabilities = {
  dtypes: ['f32', 'f16', 'bf16'],
  maxHeadDim: 256,
  maxTopk: 64,
  maxBlockSize: 4096,
  nonCausal: true,
  kconv: true,
  maxKconvWidth: 8,
  kconvWeightDtype: 'any',
  memoryBytes: 256 * 2 ** 20,
  deterministic: true,
  qkLayout: true,
  kvCache: true,
  cacheDense: true,
};

/**
 * Creates the reference backend. `caps` may narrow (or widen) what it declares, e.g. to exercise the
 * testkit's capability handling.
 */
export function createReferenceBackend(opts: ReferenceBackendOptions = {}): Backend {
  const cache = opts.cache ?? ((host, o, w) => new ReferenceCache(host, o, w));
  return new ReferenceBackend(opts.name ?? 'reference', { ...DEFAULT_CAPS, ...opts.caps }, cache);
}

const f64 = toFloat64;
/** The problem's layout for the reference: query rows on top of the stage's key layout (SPEC §8). */
const qkOf = (p: CheckedProblem, keys: Layout): AttentionLayout => (p.queries.selfAttention ? keys : { cuSeqlensQ: p.queries.cuSeqlensQ, cuSeqlensK: keys.cuSeqlens });
const put = (values: Float64Array, dtype: DType, shape: readonly number[]): HostTensor => fromFloat(values, dtype, shape);

class ReferenceBackend extends BackendShell<HostTensor, Int32Array> {
  constructor(readonly name: string, readonly caps: Capabilities, private readonly makeCache: ReferenceCacheFactory) {
    super(name);
  }

  /** SPEC §9: core checks the options and sizes the pool; the cache lends this backend's tensor handles. */
  async createCache(opts: KVCacheOptions): Promise<KVCache> {
    this.alive();
    const resolved = resolveCacheOptions(this.caps, opts, referencePageBytes);
    const weight = opts.kconvWeight === undefined ? null : toFloat64(this.tensor('kconvWeight', opts.kconvWeight));
    const host: CacheHost<HostTensor> = {
      name: this.name, caps: this.caps, tensor: (param, t) => this.tensor(param, t), wrap: (dtype, shape, data) => this.wrap(dtype, shape, data),
    };
    return this.makeCache(host, resolved, weight);
  }

  protected async doUpload(t: HostTensor): Promise<HostTensor> {
    return hostTensor(t.dtype, t.shape, t.data.slice());
  }

  protected async doDownload(_t: DeviceTensor, h: HostTensor): Promise<HostTensor> {
    return hostTensor(h.dtype, h.shape, h.data.slice());
  }

  protected async doRoute(p: CheckedProblem, q: HostTensor, k: HostTensor, layout: Layout): Promise<Int32Array> {
    return referenceRoute(f64(q), f64(k), p.shape, qkOf(p, layout), p.cfg);
  }

  protected async doRoutingFromIndices(indices: Int32Array): Promise<Int32Array> {
    return indices.slice();
  }

  protected async doRoutingIndices(_r: unknown, indices: Int32Array): Promise<Int32Array> {
    return indices.slice();
  }

  protected async doForward(p: CheckedProblem, t: Qkv<HostTensor>, indices: Int32Array, layout: Layout): Promise<{ out: HostTensor; lse: HostTensor }> {
    const { T, Hq, D, dtype } = p.shape;
    const res = referenceForward(f64(t.q), f64(t.k), f64(t.v), indices, p.shape, qkOf(p, layout), p.cfg);
    return { out: put(res.out, dtype, [T, Hq, D]), lse: put(res.lse, 'f32', [T, Hq]) };
  }

  protected async doBackward(p: CheckedProblem, t: BackwardInputs<HostTensor>, indices: Int32Array, layout: Layout): Promise<{ dq: HostTensor; dk: HostTensor; dv: HostTensor }> {
    const { T, Tk, Hq, Hkv, D, dtype } = p.shape;
    const g = referenceBackward(f64(t.q), f64(t.k), f64(t.v), f64(t.out), f64(t.lse), f64(t.dOut), indices, p.shape, qkOf(p, layout), p.cfg);
    return { dq: put(g.dq, dtype, [T, Hq, D]), dk: put(g.dk, dtype, [Tk, Hkv, D]), dv: put(g.dv, dtype, [Tk, Hkv, D]) };
  }

  protected async doKconv(p: CheckedKconv, k: HostTensor, w: HostTensor, layout: Layout): Promise<HostTensor> {
    return put(referenceKconv(f64(k), f64(w), p.C, p.W, layout), p.dtype, k.shape);
  }

  protected async doKconvBackward(p: CheckedKconv, k: HostTensor, w: HostTensor, dkOut: HostTensor, layout: Layout): Promise<{ dk: HostTensor; dw: HostTensor }> {
    const g = referenceKconvBackward(f64(k), f64(w), f64(dkOut), p.C, p.W, layout);
    return { dk: put(g.dk, p.dtype, k.shape), dw: put(g.dw, p.wDtype, w.shape) };
  }

  /** Host memory: the bytes of a tensor's data and of a routing's indices; no scratch, no pool. */
  protected bytesOf(h: HostTensor): number {
    return h.data.byteLength;
  }

  protected routingBytesOf(indices: Int32Array): number {
    return indices.byteLength;
  }

  protected async doSync(): Promise<void> {}
  protected freeTensor(): void {}
  protected freeRouting(): void {}
  protected async doDestroy(): Promise<void> {}
}
