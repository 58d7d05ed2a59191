/**
 * A complete, slow Backend built on the float64 reference of `@moba/core/reference`: the baseline the
 * testkit checks itself against, and the worked example of docs/writing-a-backend.md. Tensors live in
 * host memory. Core's shell (`BackendShell`) validates every call as SPEC §7 requires before a stage runs,
 * so the stages below only compute.
 */
import {
  type Backend, type BackwardInputs, type Capabilities, type CheckedKconv, type CheckedProblem, type DType, type DeviceTensor, type HostTensor,
  type AttentionLayout, type Layout, type Qkv, BackendShell, fromFloat, hostTensor, toFloat64,
} from '@moba/core';
import { referenceBackward, referenceForward, referenceKconv, referenceKconvBackward, referenceRoute } from '@moba/core/reference';

export interface ReferenceBackendOptions {
  /** Backend name (default `'reference'`). */
  name?: string;
  /** Overrides of the declared capabilities. */
  caps?: Partial<Capabilities>;
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
};

/**
 * Creates the reference backend. `caps` may narrow (or widen) what it declares, e.g. to exercise the
 * testkit's capability handling.
 */
export function createReferenceBackend(opts: ReferenceBackendOptions = {}): Backend {
  return new ReferenceBackend(opts.name ?? 'reference', { ...DEFAULT_CAPS, ...opts.caps });
}

const f64 = toFloat64;
/** The problem's layout for the reference: query rows on top of the stage's key layout (SPEC §8). */
const qkOf = (p: CheckedProblem, keys: Layout): AttentionLayout => (p.queries.selfAttention ? keys : { cuSeqlensQ: p.queries.cuSeqlensQ, cuSeqlensK: keys.cuSeqlens });
const put = (values: Float64Array, dtype: DType, shape: readonly number[]): HostTensor => fromFloat(values, dtype, shape);

class ReferenceBackend extends BackendShell<HostTensor, Int32Array> {
  constructor(readonly name: string, readonly caps: Capabilities) {
    super(name);
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
