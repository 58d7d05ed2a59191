/**
 * A complete, slow Backend built on the float64 reference of `@moba/core/reference`: the baseline the
 * testkit checks itself against, and the worked example of docs/writing-a-backend.md. Tensors live in
 * host memory; every entry point validates exactly as SPEC §7 requires before it computes anything.
 */
import {
  type Backend, type Capabilities, type DType, type DeviceTensor, type HostTensor, type Layout, type MobaConfig, type Routing,
  MobaError, checkBackwardTensors, checkCaps, checkProblem, checkRouting, checkTensor, expectShape, fromFloat, hostTensor, resolveConfig,
  sequences, toFloat64, validateKconvWeight, validateLayout, validateRoutingIndices,
} from '@moba/core';
import { referenceBackward, referenceForward, referenceKconv, referenceKconvBackward, referenceRoute } from '@moba/core/reference';

export interface ReferenceBackendOptions {
  /** Backend name (default `'reference'`). */
  name?: string;
  /** Overrides of the declared capabilities. */
  caps?: Partial<Capabilities>;
}

interface RefTensor extends DeviceTensor {
  readonly id: number;
}

interface RefRouting extends Routing {
  readonly id: number;
}

const DEFAULT_CAPS: Capabilities = {
  dtypes: ['f32', 'f16', 'bf16'],
  maxHeadDim: 256,
  maxTopk: 64,
  maxBlockSize: 4096,
  nonCausal: true,
  kconv: true,
  maxKconvWidth: 8,
  memoryBytes: 256 * 2 ** 20,
  deterministic: true,
};

/**
 * Creates the reference backend. `caps` may narrow (or widen) what it declares, e.g. to exercise the
 * testkit's capability handling.
 */
export function createReferenceBackend(opts: ReferenceBackendOptions = {}): Backend {
  const name = opts.name ?? 'reference';
  const caps: Capabilities = { ...DEFAULT_CAPS, ...opts.caps };
  const tensors = new Map<number, HostTensor>();
  const routings = new Map<number, Int32Array>();
  let nextId = 1;
  let destroyed = false;

  const alive = (): void => {
    if (destroyed) throw new MobaError('E_DEVICE', `backend ${name} was destroyed`, 'backend');
  };
  const host = (t: DeviceTensor, param: string): HostTensor => {
    alive();
    const id = (t as RefTensor)?.id;
    if (!t || t.backend !== name) throw new MobaError('E_UNSUPPORTED', `${param} belongs to backend ${t?.backend ?? String(t)}, not ${name}`, param);
    const h = tensors.get(id);
    if (!h) throw new MobaError('E_DEVICE', `${param} was disposed`, param);
    return h;
  };
  const f64 = (t: DeviceTensor, param: string): Float64Array => toFloat64(host(t, param));
  const put = (h: HostTensor): DeviceTensor => {
    const id = nextId++;
    tensors.set(id, h);
    return { backend: name, dtype: h.dtype, shape: [...h.shape], id } as RefTensor;
  };
  const putRouting = (indices: Int32Array, T: number, Hq: number, cfg: { topk: number; blockSize: number; causal: boolean }): Routing => {
    const id = nextId++;
    routings.set(id, indices);
    return { backend: name, T, Hq, topk: cfg.topk, blockSize: cfg.blockSize, causal: cfg.causal, id } as RefRouting;
  };
  const indicesOf = (r: Routing): Int32Array => {
    alive();
    if (!r || r.backend !== name) throw new MobaError('E_UNSUPPORTED', `routing belongs to backend ${r?.backend ?? String(r)}, not ${name}`, 'routing');
    const ix = routings.get((r as RefRouting).id);
    if (!ix) throw new MobaError('E_DEVICE', 'routing was disposed', 'routing');
    return ix;
  };
  const kconvArgs = (k: DeviceTensor, w: DeviceTensor, layout: Layout): { C: number; W: number } => {
    if (!caps.kconv) throw new MobaError('E_UNSUPPORTED', `backend ${name} does not support kconv`, 'kconv');
    const kh = host(k, 'k');
    const wh = host(w, 'kconvWeight');
    if (kh.shape.length !== 3) throw new MobaError('E_SHAPE', `k.shape = [${kh.shape.join(', ')}] is invalid: must be [T, Hkv, D]`, 'k.shape');
    const [T, Hkv, D] = kh.shape as [number, number, number];
    checkCaps(caps, { T, Hq: Hkv, Hkv, D, dtype: kh.dtype });
    const W = validateKconvWeight(wh, Hkv, D, caps.maxKconvWidth);
    if (wh.dtype !== kh.dtype) throw new MobaError('E_DTYPE', `kconvWeight.dtype = ${wh.dtype} is invalid: must equal k.dtype = ${kh.dtype}`, 'kconvWeight.dtype');
    validateLayout(layout, T);
    return { C: Hkv * D, W };
  };
  const out = (values: Float64Array, dtype: DType, shape: readonly number[]): DeviceTensor => put(fromFloat(values, dtype, shape));

  return {
    name,
    caps,
    async upload(t) {
      alive();
      checkTensor('tensor', t);
      if (!caps.dtypes.includes(t.dtype)) throw new MobaError('E_UNSUPPORTED', `dtype ${t.dtype} is not supported by backend ${name}: allowed ${caps.dtypes.join(', ')}`, 'dtype');
      return put(hostTensor(t.dtype, t.shape, t.data.slice()));
    },
    async download(t) {
      const h = host(t, 'tensor');
      return hostTensor(h.dtype, h.shape, h.data.slice());
    },
    async route(q, k, layout, cfg) {
      const { shape, cfg: rc } = checkProblem(caps, q, k, k, layout, cfg);
      const indices = referenceRoute(f64(q, 'q'), f64(k, 'k'), shape, layout, rc);
      return putRouting(indices, shape.T, shape.Hq, rc);
    },
    async routingFromIndices(indices, shape, layout, cfg: MobaConfig) {
      alive();
      const rc = resolveConfig(cfg, 1, caps);
      if (!rc.causal && !caps.nonCausal) throw new MobaError('E_UNSUPPORTED', 'causal = false is not supported (caps.nonCausal is false)', 'causal');
      validateLayout(layout, shape?.T);
      validateRoutingIndices(indices, shape.T, shape.Hq, sequences(layout, rc.blockSize), rc);
      return putRouting(indices.slice(), shape.T, shape.Hq, rc);
    },
    async routingIndices(r) {
      return indicesOf(r).slice();
    },
    async forward(q, k, v, r, layout, cfg) {
      const { shape, cfg: rc } = checkProblem(caps, q, k, v, layout, cfg);
      checkRouting(r, name, shape, rc);
      const res = referenceForward(f64(q, 'q'), f64(k, 'k'), f64(v, 'v'), indicesOf(r), shape, layout, rc);
      return { out: out(res.out, shape.dtype, q.shape), lse: out(res.lse, 'f32', [shape.T, shape.Hq]) };
    },
    async backward(q, k, v, o, lse, dOut, r, layout, cfg) {
      const { shape, cfg: rc } = checkProblem(caps, q, k, v, layout, cfg);
      checkBackwardTensors(shape, o, lse, dOut);
      checkRouting(r, name, shape, rc);
      const g = referenceBackward(f64(q, 'q'), f64(k, 'k'), f64(v, 'v'), f64(o, 'out'), f64(lse, 'lse'), f64(dOut, 'dOut'), indicesOf(r), shape, layout, rc);
      return { dq: out(g.dq, shape.dtype, q.shape), dk: out(g.dk, shape.dtype, k.shape), dv: out(g.dv, shape.dtype, v.shape) };
    },
    async kconv(k, w, layout) {
      const { C, W } = kconvArgs(k, w, layout);
      return out(referenceKconv(f64(k, 'k'), f64(w, 'kconvWeight'), C, W, layout), k.dtype, k.shape);
    },
    async kconvBackward(k, w, dkOut, layout) {
      const { C, W } = kconvArgs(k, w, layout);
      expectShape('dkOut', host(dkOut, 'dkOut'), k.shape, k.dtype);
      const g = referenceKconvBackward(f64(k, 'k'), f64(w, 'kconvWeight'), f64(dkOut, 'dkOut'), C, W, layout);
      return { dk: out(g.dk, k.dtype, k.shape), dw: out(g.dw, w.dtype, w.shape) };
    },
    dispose(...items) {
      for (const it of items) {
        const id = (it as RefTensor | RefRouting | undefined)?.id;
        if (id === undefined || it.backend !== name) continue;
        tensors.delete(id);
        routings.delete(id);
      }
    },
    async destroy() {
      tensors.clear();
      routings.clear();
      destroyed = true;
    },
  };
}
