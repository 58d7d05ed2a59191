/**
 * The Backend contract (ARCHITECTURE.md "Public contract"). A backend owns device tensors and routings;
 * the core validates every call the same way for all of them through `checkProblem` / `checkRouting`.
 */
import {
  type CheckedShape, type Layout, type MobaConfig, type ProblemShape, type ResolvedConfig, type Sequences, type TensorLike,
  resolveConfig, sequences, validateQk, validateQkv,
} from './config.js';
import { type AttentionLayout, type QueryRows, isQKLayout, resolveLayout } from './layout.js';
import type { KVCache, KVCacheOptions } from './cache.js';
import type { DType } from './dtype.js';
import { MobaError, checkInt } from './errors.js';
import { type Plan, checkIndexLimits, plan } from './plan.js';
import { validateRoutingIndices } from './routing.js';
import type { HostTensor } from './tensor.js';

/** A tensor that lives on a backend (host memory, GPU buffer, …). Opaque beyond dtype and shape. */
export interface DeviceTensor<D extends DType = DType> extends TensorLike {
  readonly dtype: D;
  /** Name of the backend that owns it. */
  readonly backend: string;
}

/** A routing decision held by a backend, in whatever internal form it likes (SPEC §3). */
export interface Routing {
  readonly backend: string;
  readonly T: number;
  readonly Hq: number;
  readonly topk: number;
  readonly blockSize: number;
  readonly causal: boolean;
}

/** What a backend declares it supports; the testkit narrows its generators to these. */
export interface Capabilities {
  readonly dtypes: readonly DType[];
  /** Largest head dim D. */
  readonly maxHeadDim: number;
  /** When set, only these head dims are supported (else any D in [1, maxHeadDim]). */
  readonly headDims?: readonly number[];
  readonly maxTopk: number;
  readonly maxBlockSize: number;
  readonly nonCausal: boolean;
  readonly kconv: boolean;
  readonly maxKconvWidth: number;
  /**
   * Dtypes the kconv weight may have: `'k'` (default) it must equal `k.dtype`; `'any'` any of `dtypes`
   * (the weight is then decoded on its own and `dw` comes back in its dtype).
   */
  readonly kconvWeightDtype?: 'k' | 'any';
  /** Workspace bytes the backend can allocate for one call; larger plans fail with E_MEMORY. */
  readonly memoryBytes: number;
  /** Same inputs give bitwise-equal outputs. */
  readonly deterministic: boolean;
  /**
   * How far a non-finite input reaches (docs/api.md, "Non-finite values"). `'rows'` (the default): exactly the rows
   * the rule names. `'block'`: those rows, and possibly also the rows that meet a causally masked key of their own
   * selected block inside a dense tile (query row t, key p > t of t's block, as a zero-weight product): out and dq
   * of such a row from a non-finite k or v of such a key, dk and dv of such a key from a non-finite q or dOut of
   * such a row, as if the causal mask were absent for non-finite values only. Finite values are unaffected.
   */
  readonly nonFinite?: 'rows' | 'block';
  /**
   * Fewer queries than keys (SPEC §8): route/forward/backward accept a `{ cuSeqlensQ, cuSeqlensK }` layout with
   * `nq_i < nk_i`. Default false: such a layout is E_UNSUPPORTED (one whose query and key boundaries are equal is
   * self-attention and always accepted).
   */
  readonly qkLayout?: boolean;
  /** A paged KV cache (SPEC §9): `createCache` exists. Default false. */
  readonly kvCache?: boolean;
  /**
   * Largest topk of a cache `attend` (default `maxTopk`). An attend keeps no `[T, Hq, topk]` routing, so a backend
   * may allow topk up to every block of a long context: dense decode on the same cache.
   */
  readonly maxCacheTopk?: number;
  /**
   * A cache `attend` accepts any topk that covers every block of the attended sequences (dense decode on the same
   * cache), even above `maxCacheTopk` (default false). The shell clamps such a topk to the longest sequence's block
   * count, so the backend sees `plan.topk` = that count, and every row selects all its eligible blocks with a
   * finite score.
   */
  readonly cacheDense?: boolean;
}

export interface ForwardResult {
  /** `[T, Hq, D]`, input dtype. */
  readonly out: DeviceTensor;
  /** `[T, Hq]`, f32, natural log; -Infinity for rows with no keys. */
  readonly lse: DeviceTensor;
}

export interface BackwardResult {
  readonly dq: DeviceTensor;
  readonly dk: DeviceTensor;
  readonly dv: DeviceTensor;
}

/**
 * A backend's memory, in bytes (`memoryStats()`). Where a backend cannot see a figure it reads 0; after
 * `destroy()` every field is 0.
 */
export interface MemoryStats {
  /** Bytes of the tensors and routings this backend handed out and the caller has not disposed (nor let be collected). */
  readonly liveBytes: number;
  /** Tensors among them. */
  readonly liveTensors: number;
  /** Routings among them. */
  readonly liveRoutings: number;
  /**
   * Bytes the backend holds besides them, for itself: workspace kept between calls, binding placeholders, the
   * temporaries of a call in flight (0 on host backends, whose temporaries are garbage-collected).
   */
  readonly scratchBytes: number;
  /** Bytes of freed buffers kept for reuse by later allocations (not in use; 0 where there is no pool). */
  readonly pooledBytes: number;
  /**
   * Most bytes in use at once (held by the caller plus scratch, the pool excluded) since the backend was created
   * or `resetPeakMemory()`; never less than `liveBytes + scratchBytes`. GPU backends count every allocation;
   * host backends bound each call from above: the bytes in use when it started plus all it allocated.
   */
  readonly peakBytes: number;
}

export interface Backend {
  readonly name: string;
  readonly caps: Capabilities;
  upload<D extends DType>(t: HostTensor<D>): Promise<DeviceTensor<D>>;
  /** The tensor's values; `HostTensor<'f32'>` holds a `Float32Array`, f16/bf16 a `Uint16Array` (or `Float16Array`). */
  download<D extends DType>(t: DeviceTensor<D>): Promise<HostTensor<D>>;
  /**
   * SPEC §3: returns the routing chosen by the backend's own router. The layout is one `cuSeqlens` or, where
   * `caps.qkLayout`, `{ cuSeqlensQ, cuSeqlensK }` (SPEC §8; routing rows are query rows).
   */
  route(q: DeviceTensor, k: DeviceTensor, layout: AttentionLayout, cfg: MobaConfig): Promise<Routing>;
  /** Accepts any valid routing `[T, Hq, topk]` (T query rows; ascending rows, -1 padded, sequence-local blocks). */
  routingFromIndices(indices: Int32Array, shape: { T: number; Hq: number }, layout: AttentionLayout, cfg: MobaConfig): Promise<Routing>;
  /** The routing as `[T, Hq, topk]` indices. */
  routingIndices(r: Routing): Promise<Int32Array>;
  /** SPEC §4 (§8 with a QKLayout): out `[Tq, Hq, D]`, lse `[Tq, Hq]`. */
  forward(q: DeviceTensor, k: DeviceTensor, v: DeviceTensor, r: Routing, layout: AttentionLayout, cfg: MobaConfig): Promise<ForwardResult>;
  /** SPEC §5, recomputing P from `lse`; with a QKLayout dq `[Tq, Hq, D]`, dk and dv `[Tk, Hkv, D]`. */
  backward(
    q: DeviceTensor, k: DeviceTensor, v: DeviceTensor, out: DeviceTensor, lse: DeviceTensor, dOut: DeviceTensor,
    r: Routing, layout: AttentionLayout, cfg: MobaConfig,
  ): Promise<BackwardResult>;
  /** SPEC §6: `k' = k + SiLU(causal depthwise conv(k))`, weight `[Hkv·D, W]`. */
  kconv(k: DeviceTensor, w: DeviceTensor, layout: Layout): Promise<DeviceTensor>;
  kconvBackward(k: DeviceTensor, w: DeviceTensor, dkOut: DeviceTensor, layout: Layout): Promise<{ dk: DeviceTensor; dw: DeviceTensor }>;
  /**
   * Resolves once every piece of work this backend has queued so far has finished on the device (a no-op
   * where ops complete before they return). Timings wait for it.
   */
  sync(): Promise<void>;
  /** Frees tensors and routings now (idempotent). */
  dispose(...items: (DeviceTensor | Routing)[]): void;
  /** Frees everything the backend holds; the backend is unusable afterwards. */
  destroy(): Promise<void>;
  /** The backend's memory now (MemoryStats); all zeros after `destroy()` (never throws). */
  memoryStats(): MemoryStats;
  /** Starts a new peak: `peakBytes` becomes the bytes in use now (a no-op after `destroy()`). */
  resetPeakMemory(): void;
  /** A paged KV cache (SPEC §9) on this backend; present where `caps.kvCache`. */
  createCache?(opts: KVCacheOptions): Promise<KVCache>;
}

export interface CheckedProblem {
  readonly shape: CheckedShape;
  readonly cfg: ResolvedConfig;
  /** The key sequences and blocks (of `keys`). */
  readonly seqs: Sequences;
  /** The key layout (`cuSeqlensK`, or the one `cuSeqlens`). */
  readonly keys: Layout;
  /** The query rows: sequence and key position of each (identity for self-attention). */
  readonly queries: QueryRows;
  /** `plan()` of the problem, computed once by the check. */
  readonly plan: Plan;
}

/** A checked `routingFromIndices` call: the routing's sizes, its config (scale unused) and sequences. */
export interface CheckedRoutingCall {
  /** Query rows. */
  readonly T: number;
  readonly Hq: number;
  readonly cfg: ResolvedConfig;
  readonly seqs: Sequences;
  readonly keys: Layout;
  readonly queries: QueryRows;
}

/**
 * The common validation of SPEC §7 for route/forward/backward: shapes, dtypes, layout, config, the
 * backend's declared caps, the int32 routing limits (`checkIndexLimits`) and the workspace against
 * `caps.memoryBytes` (both E_MEMORY, before any allocation).
 */
export function checkProblem(caps: Capabilities, q: TensorLike, k: TensorLike, v: TensorLike | null, layout: AttentionLayout, cfg: MobaConfig): CheckedProblem {
  const qk = isQKLayout(layout);
  const shape = v === null ? validateQk(q, k, qk) : validateQkv(q, k, v, qk);
  checkCaps(caps, shape);
  const { keys, queries } = checkAttentionLayout(caps, layout, shape.T, shape.Tk);
  const rc = resolveConfig(cfg, shape.D, caps);
  if (!rc.causal && !caps.nonCausal) throw new MobaError('E_UNSUPPORTED', 'causal = false is not supported by this backend (caps.nonCausal is false)', 'causal');
  const seqs = sequences(keys, rc.blockSize);
  checkIndexLimits({ T: shape.T, Hq: shape.Hq, topk: rc.topk, totalBlocks: seqs.totalBlocks });
  const p = plan(shape, layout, rc);
  const need = p.workspaceBytes;
  if (need > caps.memoryBytes) {
    throw new MobaError('E_MEMORY', `workspace of ${fmtBytes(need)} exceeds this backend's memory limit of ${fmtBytes(caps.memoryBytes)} (T = ${shape.T}, Hq = ${shape.Hq}, D = ${shape.D}, topk = ${rc.topk})`, 'workspace');
  }
  return { shape, cfg: rc, seqs, keys, queries, plan: p };
}

/**
 * A layout checked against `Tq` query and `Tk` key rows: E_UNSUPPORTED for fewer queries than keys unless
 * `caps.qkLayout` (SPEC §8).
 */
export function checkAttentionLayout(caps: Capabilities, layout: AttentionLayout, Tq: number, Tk: number): { keys: Layout; queries: QueryRows } {
  const r = resolveLayout(layout, Tq, Tk);
  if (!r.queries.selfAttention && !caps.qkLayout) {
    throw new MobaError('E_UNSUPPORTED', 'fewer queries than keys (cuSeqlensQ differs from cuSeqlensK) is not supported by this backend (caps.qkLayout is false)', 'cuSeqlensQ');
  }
  return r;
}

/** The checks of a `routingFromIndices` call (SPEC §3, §7): sizes, layout, config against caps, every index. */
export function checkRoutingCall(caps: Capabilities, indices: Int32Array, shape: { T: number; Hq: number }, layout: AttentionLayout, cfg: MobaConfig): CheckedRoutingCall {
  if (!shape || typeof shape !== 'object') throw new MobaError('E_SHAPE', 'shape must be { T, Hq }', 'shape');
  const T = checkInt('T', shape.T, 1);
  const Hq = checkInt('Hq', shape.Hq, 1);
  const Tk = isQKLayout(layout) && layout.cuSeqlensK instanceof Int32Array ? layout.cuSeqlensK[layout.cuSeqlensK.length - 1] ?? 0 : T;
  const { keys, queries } = checkAttentionLayout(caps, layout, T, Tk);
  const rc = resolveConfig(cfg, 1, caps); // the scale is not used by a routing
  if (!rc.causal && !caps.nonCausal) throw new MobaError('E_UNSUPPORTED', 'causal = false is not supported by this backend (caps.nonCausal is false)', 'causal');
  const seqs = sequences(keys, rc.blockSize);
  checkIndexLimits({ T, Hq, topk: rc.topk, totalBlocks: seqs.totalBlocks }); // before the indices' length is read
  validateRoutingIndices(indices, T, Hq, seqs, rc, queries);
  return { T, Hq, cfg: rc, seqs, keys, queries };
}

/** E_MEMORY unless `need` workspace bytes fit `caps.memoryBytes`. */
export function checkWorkspace(caps: Capabilities, what: string, need: number): void {
  if (need > caps.memoryBytes) throw new MobaError('E_MEMORY', `${what} workspace of ${fmtBytes(need)} exceeds this backend's memory limit of ${fmtBytes(caps.memoryBytes)}`, 'workspace');
}

/** Checks a problem's dtype and head dim against declared caps. */
export function checkCaps(caps: Capabilities, shape: ProblemShape): void {
  if (!caps.dtypes.includes(shape.dtype)) {
    throw new MobaError('E_UNSUPPORTED', `dtype ${shape.dtype} is not supported by this backend: allowed ${caps.dtypes.join(', ')}`, 'dtype');
  }
  if (caps.headDims ? !caps.headDims.includes(shape.D) : shape.D > caps.maxHeadDim) {
    const allowed = caps.headDims ? caps.headDims.join(', ') : `1..${caps.maxHeadDim}`;
    throw new MobaError('E_UNSUPPORTED', `head dim D = ${shape.D} is not supported by this backend: allowed ${allowed}`, 'D');
  }
}

/** Checks that a routing fits the problem it is used with. */
export function checkRouting(r: Routing, backend: string, shape: ProblemShape, cfg: ResolvedConfig): void {
  if (!r || r.backend !== backend) throw new MobaError('E_UNSUPPORTED', `routing belongs to backend ${r?.backend ?? String(r)}, not ${backend}`, 'routing');
  if (r.T !== shape.T || r.Hq !== shape.Hq) throw new MobaError('E_SHAPE', `routing is for [T, Hq] = [${r.T}, ${r.Hq}] but q is [${shape.T}, ${shape.Hq}]`, 'routing');
  if (r.topk !== cfg.topk || r.blockSize !== cfg.blockSize || r.causal !== cfg.causal) {
    throw new MobaError('E_RANGE', `routing was made with topk ${r.topk}, blockSize ${r.blockSize}, causal ${r.causal}; config has ${cfg.topk}, ${cfg.blockSize}, ${cfg.causal}`, 'routing');
  }
}

/** Checks the tensors of a backward call against the problem. */
export function checkBackwardTensors(shape: ProblemShape, out: TensorLike, lse: TensorLike, dOut: TensorLike): void {
  const qShape = [shape.T, shape.Hq, shape.D];
  expectTensor('out', out, qShape, shape.dtype);
  expectTensor('dOut', dOut, qShape, shape.dtype);
  expectTensor('lse', lse, [shape.T, shape.Hq], 'f32');
}

function expectTensor(param: string, t: TensorLike, want: number[], dtype: DType): void {
  if (!t || !Array.isArray(t.shape) || t.shape.length !== want.length || t.shape.some((s, i) => s !== want[i])) {
    throw new MobaError('E_SHAPE', `${param}.shape = [${t?.shape?.join(', ')}] is invalid: must be [${want.join(', ')}]`, `${param}.shape`);
  }
  if (t.dtype !== dtype) throw new MobaError('E_DTYPE', `${param}.dtype = ${t.dtype} is invalid: must be ${dtype}`, `${param}.dtype`);
}

/** Integer check re-exported for backends' own options. */
export { checkInt };

export function fmtBytes(n: number): string {
  if (n >= 2 ** 30) return `${(n / 2 ** 30).toFixed(2)} GiB`;
  if (n >= 2 ** 20) return `${(n / 2 ** 20).toFixed(1)} MiB`;
  if (n >= 2 ** 10) return `${(n / 2 ** 10).toFixed(1)} KiB`;
  return `${n} B`;
}
