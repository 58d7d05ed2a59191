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
import { CONFIG_KEYS, type Layout, type MobaConfig } from './config.js';
import type { AttentionLayout } from './layout.js';
import { MobaError, checkKeys } from './errors.js';
import { type HostTensor, asHostTensor } from './tensor.js';

export type TensorInput = HostTensor | DeviceTensor;

export interface MobaInputs {
  /** `[T, Hq, D]` (`[Tq, Hq, D]` with `cuSeqlensQ`). */
  q: TensorInput;
  /** `[T, Hkv, D]`. */
  k: TensorInput;
  /** `[T, Hkv, D]`. */
  v: TensorInput;
  /** Packed varlen layout, length batch + 1 (SPEC §1); with `cuSeqlensQ`, the keys' boundaries. */
  cuSeqlens: Int32Array;
  /**
   * Query boundaries when there are fewer queries than keys (SPEC §8, bottom-right aligned: the queries of
   * sequence b are its last `cuSeqlensQ[b+1] − cuSeqlensQ[b]` positions). Needs `caps.qkLayout`.
   */
  cuSeqlensQ?: Int32Array;
  /** Optional key-convolution weight `[Hkv·D, W]` (SPEC §6). */
  kconvWeight?: TensorInput;
}

/** What the backward needs; `dispose()` frees what `moba()` allocated. */
export interface MobaContext {
  readonly backend: Backend;
  /** The attention layout (one `cuSeqlens`, or `{ cuSeqlensQ, cuSeqlensK }`). */
  readonly layout: AttentionLayout;
  /** The keys' layout (kconv runs on it). */
  readonly keyLayout: Layout;
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

/** The keys a `moba()` inputs object may have. */
export const MOBA_INPUT_KEYS: readonly string[] = Object.freeze(['q', 'k', 'v', 'cuSeqlens', 'cuSeqlensQ', 'kconvWeight']);

function isHost(t: TensorInput): t is HostTensor {
  return 'data' in t;
}

/** `t` on `backend` (uploaded into `owned` when it is a HostTensor); anything else is refused naming `param`. */
async function onBackend(backend: Backend, param: string, t: TensorInput, owned: DeviceTensor[]): Promise<DeviceTensor> {
  if (t === null || typeof t !== 'object' || Array.isArray(t) || ArrayBuffer.isView(t)) {
    const got = Array.isArray(t) ? 'an array' : ArrayBuffer.isView(t) ? `a bare ${t.constructor.name}` : String(t);
    throw new MobaError('E_SHAPE', `${param} = ${got} is invalid: must be a HostTensor { dtype, shape, data } or a DeviceTensor of backend ${backend.name}`, param);
  }
  if (isHost(t)) {
    const h = asHostTensor(param, t);
    const d = await backend.upload(h);
    owned.push(d);
    return d;
  }
  if ((t as DeviceTensor).backend !== backend.name) {
    throw new MobaError('E_UNSUPPORTED', `${param} belongs to backend ${String((t as DeviceTensor).backend)}, not ${backend.name}`, param);
  }
  return t as DeviceTensor;
}

/** Runs kconv → route → forward; see the module doc. */
export async function moba(backend: Backend, inputs: MobaInputs, cfg: MobaConfig): Promise<MobaResult> {
  checkKeys(inputs, MOBA_INPUT_KEYS, 'moba() input', MOBA_INPUT_KEYS); // nulls: named by the tensor checks below
  checkKeys(cfg, CONFIG_KEYS, 'config key'); // the rest of the config is checked by route(), before any kernel runs
  const owned: DeviceTensor[] = [];
  const keyLayout: Layout = { cuSeqlens: inputs.cuSeqlens };
  const layout: AttentionLayout = inputs.cuSeqlensQ === undefined ? keyLayout : { cuSeqlensQ: inputs.cuSeqlensQ, cuSeqlensK: inputs.cuSeqlens };
  try {
    const q = await onBackend(backend, 'q', inputs.q, owned);
    const k = await onBackend(backend, 'k', inputs.k, owned);
    const v = await onBackend(backend, 'v', inputs.v, owned);
    const w = inputs.kconvWeight === undefined ? undefined : await onBackend(backend, 'kconvWeight', inputs.kconvWeight, owned);
    const kUsed = w ? await backend.kconv(k, w, keyLayout) : k;
    if (w) owned.push(kUsed);
    const routing = await backend.route(q, kUsed, layout, cfg);
    const { out, lse } = await backend.forward(q, kUsed, v, routing, layout, cfg);
    const ctx: MobaContext = {
      backend, layout, keyLayout, cfg, q, k, kUsed, v, out, lse, routing,
      ...(w ? { w } : {}),
      dispose: () => backend.dispose(...owned, routing),
    };
    return { out, lse, routing, ctx };
  } catch (e) {
    backend.dispose(...owned);
    throw e;
  }
}

/** Backward of `moba()` for upstream gradient `dOut [T, Hq, D]` (`[Tq, Hq, D]`): dk, dv for every key row. */
export async function mobaBackward(backend: Backend, ctx: MobaContext, dOut: TensorInput): Promise<MobaGradients> {
  if (ctx === null || typeof ctx !== 'object') throw new MobaError('E_RANGE', `ctx = ${String(ctx)} is invalid: must be the ctx that moba() returned`, 'ctx');
  if (ctx.backend !== backend) throw new MobaError('E_UNSUPPORTED', 'mobaBackward must run on the backend that ran moba()', 'backend');
  const owned: DeviceTensor[] = [];
  try {
    const g = await onBackend(backend, 'dOut', dOut, owned);
    const { dq, dk: dkUsed, dv } = await backend.backward(ctx.q, ctx.kUsed, ctx.v, ctx.out, ctx.lse, g, ctx.routing, ctx.layout, ctx.cfg);
    if (!ctx.w) return { dq, dk: dkUsed, dv };
    const { dk, dw } = await backend.kconvBackward(ctx.k, ctx.w, dkUsed, ctx.keyLayout);
    backend.dispose(dkUsed);
    return { dq, dk, dv, dKconvWeight: dw };
  } finally {
    backend.dispose(...owned);
  }
}
