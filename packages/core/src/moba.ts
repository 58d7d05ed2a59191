/**
 * One-call MoBA (ARCHITECTURE.md): `moba()` runs kconv → route → forward on a backend and returns
 * the output, lse, routing and a context; `mobaBackward()` turns an upstream gradient into
 * dq, dk, dv (and the kconv weight's gradient). The two-step API (route, then forward with any
 * routing) stays available on the Backend itself.
 *
 * Algorithm:
 *   1. k' = kconv(k, w) when a kconv weight is given (SPEC §6), else k' = k;
 *   2. routing = backend.route(q, k') (SPEC §3; no gradient);
 *   3. out, lse = backend.forward(q, k', v, routing) (SPEC §4);
 *   4. backward: dq, dk', dv = backend.backward(…) (SPEC §5); dk, dw = kconvBackward(k, w, dk').
 */
import type { Backend, DeviceTensor, Routing } from './backend.js';
import type { Layout, MobaConfig } from './config.js';
import { MobaError } from './errors.js';
import type { HostTensor } from './tensor.js';

export type TensorInput = HostTensor | DeviceTensor;

export interface MobaInputs {
  /** `[T, Hq, D]`. */
  q: TensorInput;
  /** `[T, Hkv, D]`. */
  k: TensorInput;
  /** `[T, Hkv, D]`. */
  v: TensorInput;
  /** Packed varlen layout, length batch + 1 (SPEC §1). */
  cuSeqlens: Int32Array;
  /** Optional key-convolution weight `[Hkv·D, W]` (SPEC §6). */
  kconvWeight?: TensorInput;
}

/** What the backward needs; `dispose()` frees what `moba()` allocated. */
export interface MobaContext {
  readonly backend: Backend;
  readonly layout: Layout;
  readonly cfg: MobaConfig;
  readonly q: DeviceTensor;
  readonly k: DeviceTensor;
  /** Keys after kconv (=== k without kconv). */
  readonly kUsed: DeviceTensor;
  readonly v: DeviceTensor;
  readonly w?: DeviceTensor;
  readonly out: DeviceTensor;
  readonly lse: DeviceTensor;
  readonly routing: Routing;
  dispose(): void;
}

export interface MobaResult {
  readonly out: DeviceTensor;
  readonly lse: DeviceTensor;
  readonly routing: Routing;
  readonly ctx: MobaContext;
}

export interface MobaGradients {
  readonly dq: DeviceTensor;
  readonly dk: DeviceTensor;
  readonly dv: DeviceTensor;
  readonly dKconvWeight?: DeviceTensor;
}

function isHost(t: TensorInput): t is HostTensor {
  return t !== null && typeof t === 'object' && 'data' in t && ArrayBuffer.isView((t as HostTensor).data);
}

async function onBackend(backend: Backend, t: TensorInput, owned: DeviceTensor[]): Promise<DeviceTensor> {
  if (isHost(t)) {
    const d = await backend.upload(t);
    owned.push(d);
    return d;
  }
  if (!t || (t as DeviceTensor).backend !== backend.name) {
    throw new MobaError('E_UNSUPPORTED', `tensor belongs to backend ${(t as DeviceTensor)?.backend ?? String(t)}, not ${backend.name}`, 'tensor');
  }
  return t as DeviceTensor;
}

/** Runs kconv → route → forward; see the module doc. */
export async function moba(backend: Backend, inputs: MobaInputs, cfg: MobaConfig): Promise<MobaResult> {
  const owned: DeviceTensor[] = [];
  const layout: Layout = { cuSeqlens: inputs.cuSeqlens };
  try {
    const q = await onBackend(backend, inputs.q, owned);
    const k = await onBackend(backend, inputs.k, owned);
    const v = await onBackend(backend, inputs.v, owned);
    const w = inputs.kconvWeight ? await onBackend(backend, inputs.kconvWeight, owned) : undefined;
    const kUsed = w ? await backend.kconv(k, w, layout) : k;
    if (w) owned.push(kUsed);
    const routing = await backend.route(q, kUsed, layout, cfg);
    const { out, lse } = await backend.forward(q, kUsed, v, routing, layout, cfg);
    const ctx: MobaContext = {
      backend, layout, cfg, q, k, kUsed, v, out, lse, routing,
      ...(w ? { w } : {}),
      dispose: () => backend.dispose(...owned, routing),
    };
    return { out, lse, routing, ctx };
  } catch (e) {
    backend.dispose(...owned);
    throw e;
  }
}

/** Backward of `moba()` for upstream gradient `dOut [T, Hq, D]`. */
export async function mobaBackward(backend: Backend, ctx: MobaContext, dOut: TensorInput): Promise<MobaGradients> {
  if (ctx.backend !== backend) throw new MobaError('E_UNSUPPORTED', 'mobaBackward must run on the backend that ran moba()', 'backend');
  const owned: DeviceTensor[] = [];
  try {
    const g = await onBackend(backend, dOut, owned);
    const { dq, dk: dkUsed, dv } = await backend.backward(ctx.q, ctx.kUsed, ctx.v, ctx.out, ctx.lse, g, ctx.routing, ctx.layout, ctx.cfg);
    if (!ctx.w) return { dq, dk: dkUsed, dv };
    const { dk, dw } = await backend.kconvBackward(ctx.k, ctx.w, dkUsed, ctx.layout);
    backend.dispose(dkUsed);
    return { dq, dk, dv, dKconvWeight: dw };
  } finally {
    backend.dispose(...owned);
  }
}
