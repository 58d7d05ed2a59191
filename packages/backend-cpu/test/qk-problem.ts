/**
 * Problems with fewer queries than keys (SPEC §8) for the CPU tests: random key sequences, per sequence a query
 * count in {0, 1, a few, nk}, and inputs drawn for the whole key sequence (`qFull`, `dOutFull` `[Tk, Hq, D]`) so
 * that the query rows (`q`, `dOut` `[Tq, Hq, D]`, the last nq positions of each sequence) can be compared with the
 * same rows of the full self-attention call. The f64 arrays hold the dtype-rounded values.
 */
import {
  type DType, type HostTensor, type MobaConfig, type ProblemShape, type QKLayout, type ResolvedConfig, type Sequences,
  type ToleranceCheck, Rng, checkTolerance, fromFloat, queryRows, resolveConfig, roundTo, sequences, toFloat64,
} from '@moba/core';
import { referenceBackward, referenceForward } from '@moba/core/reference';
import { randomQkRouting as testkitRandomQkRouting } from '@moba/testkit';

export interface QkSpec {
  readonly nk: readonly number[];
  readonly nq: readonly number[];
  readonly Hq: number;
  readonly Hkv: number;
  readonly D: number;
  readonly dtype: DType;
  readonly blockSize: number;
  readonly topk: number;
  readonly causal: boolean;
  readonly seed: number;
}

export interface QkProblem {
  readonly spec: QkSpec;
  readonly layout: QKLayout;
  /** The key layout alone: the full self-attention problem on the same keys. */
  readonly full: { cuSeqlens: Int32Array };
  /** `T` = query rows, `Tk` = key rows. */
  readonly shape: ProblemShape & { Tk: number };
  readonly fullShape: ProblemShape;
  readonly cfg: MobaConfig;
  readonly rcfg: ResolvedConfig;
  readonly seqs: Sequences;
  /** Global key position of each query row. */
  readonly pos: Int32Array;
  readonly q: HostTensor; readonly k: HostTensor; readonly v: HostTensor; readonly dOut: HostTensor;
  readonly qFull: HostTensor; readonly dOutFull: HostTensor;
  readonly q64: Float64Array; readonly k64: Float64Array; readonly v64: Float64Array; readonly dOut64: Float64Array;
  readonly qFull64: Float64Array;
}

const cumsum = (xs: readonly number[]): Int32Array => {
  const cu = new Int32Array(xs.length + 1);
  xs.forEach((n, i) => (cu[i + 1] = cu[i]! + n));
  return cu;
};

/** One line naming the spec (failure messages). */
export function describeQk(s: QkSpec): string {
  return `nk=[${s.nk.join(',')}] nq=[${s.nq.join(',')}] Hq=${s.Hq} Hkv=${s.Hkv} D=${s.D} ${s.dtype} B=${s.blockSize} topk=${s.topk} causal=${s.causal} seed=${s.seed}`;
}

/** A random spec: 1–4 sequences (some empty), blocks of 1..64, topk 1..8, MHA/GQA/MQA, every dtype, causal or not. */
export function randomQkSpec(rng: Rng, opts: { dtype?: DType; causal?: boolean; maxLen?: number } = {}): QkSpec {
  const blockSize = [1, 2, 3, 5, 8, 16, 31, 64][rng.int(0, 7)]!;
  const batch = rng.int(1, 4);
  const nk = Array.from({ length: batch }, () => (rng.next() < 0.1 ? rng.int(0, 2) : rng.int(1, opts.maxLen ?? 140)));
  if (!nk.some((n) => n > 0)) nk[0] = rng.int(1, 20);
  const nq = nk.map((n) => {
    const r = rng.next();
    return r < 0.15 ? 0 : r < 0.45 ? Math.min(1, n) : r < 0.75 ? rng.int(0, Math.min(n, 9)) : r < 0.85 ? rng.int(0, n) : n;
  });
  if (!nq.some((n) => n > 0)) nq[nk.findIndex((n) => n > 0)] = 1; // q needs a row (Tq ≥ 1)
  const Hkv = rng.int(1, 2);
  const group = [1, 2, 3][rng.int(0, 2)]!;
  return {
    nk, nq, Hkv, Hq: rng.next() < 0.2 ? 4 : Hkv * group, // Hq = 4 with Hkv = 1 is MQA
    D: [1, 4, 7, 16, 33][rng.int(0, 4)]!, dtype: opts.dtype ?? (['f32', 'f16', 'bf16'] as const)[rng.int(0, 2)]!,
    blockSize, topk: rng.int(1, 8), causal: opts.causal ?? rng.next() < 0.7, seed: rng.int(1, 1e9),
  };
}

function draw(rng: Rng, dtype: DType, shape: number[]): { t: HostTensor; f64: Float64Array } {
  const t = fromFloat(rng.normals(shape.reduce((a, b) => a * b, 1)), dtype, shape);
  return { t, f64: toFloat64(t) };
}

/** Rows `rows` of a `[*, w]` array. */
export function gatherRows(x: ArrayLike<number>, rows: ArrayLike<number>, w: number): Float64Array {
  const out = new Float64Array(rows.length * w);
  for (let i = 0; i < rows.length; i++) for (let c = 0; c < w; c++) out[i * w + c] = x[rows[i]! * w + c]!;
  return out;
}

export function makeQkProblem(spec: QkSpec): QkProblem {
  const { Hq, Hkv, D, dtype } = spec;
  const cuK = cumsum(spec.nk);
  const layout: QKLayout = { cuSeqlensQ: cumsum(spec.nq), cuSeqlensK: cuK };
  const Tk = cuK[cuK.length - 1]!;
  const pos = queryRows(layout).pos;
  const Tq = pos.length;
  const rng = new Rng(spec.seed);
  const qFull = draw(rng, dtype, [Tk, Hq, D]);
  const k = draw(rng, dtype, [Tk, Hkv, D]);
  const v = draw(rng, dtype, [Tk, Hkv, D]);
  const dOutFull = draw(rng, dtype, [Tk, Hq, D]);
  const q64 = gatherRows(qFull.f64, pos, Hq * D);
  const dOut64 = gatherRows(dOutFull.f64, pos, Hq * D);
  const cfg = { blockSize: spec.blockSize, topk: spec.topk, causal: spec.causal };
  return {
    spec, layout, full: { cuSeqlens: cuK },
    shape: { T: Tq, Tk, Hq, Hkv, D, dtype }, fullShape: { T: Tk, Hq, Hkv, D, dtype },
    cfg, rcfg: resolveConfig(cfg, D), seqs: sequences({ cuSeqlens: cuK }, spec.blockSize), pos,
    q: fromFloat(q64, dtype, [Tq, Hq, D]), k: k.t, v: v.t, dOut: fromFloat(dOut64, dtype, [Tq, Hq, D]),
    qFull: qFull.t, dOutFull: dOutFull.t,
    q64, k64: k.f64, v64: v.f64, dOut64, qFull64: qFull.f64,
  };
}

export interface Grads { out: Float64Array; lse: Float64Array; dq: Float64Array; dk: Float64Array; dv: Float64Array }

const roundAll = (dtype: DType, a: Float64Array): Float64Array => (dtype === 'f32' ? a.map(Math.fround) : a.map((x) => roundTo(dtype, x)));

/** What the reference needs of a problem. */
export type QkInputs = Pick<QkProblem, 'shape' | 'layout' | 'rcfg' | 'q64' | 'k64' | 'v64' | 'dOut64'>;

/** The f64 reference and its f32 calibration run under `indices` with the QK layout (the tolerance policy). */
export function qkReference(p: QkInputs, indices: Int32Array): { ref: Grads; cal: Grads } {
  const { shape, layout, rcfg } = p;
  const f = referenceForward(p.q64, p.k64, p.v64, indices, shape, layout, rcfg);
  const cf = referenceForward(p.q64, p.k64, p.v64, indices, shape, layout, rcfg, Math.fround);
  const calOut = roundAll(shape.dtype, cf.out);
  const calLse = cf.lse.map(Math.fround);
  const b = referenceBackward(p.q64, p.k64, p.v64, f.out, f.lse, p.dOut64, indices, shape, layout, rcfg);
  const cb = referenceBackward(p.q64, p.k64, p.v64, calOut, calLse, p.dOut64, indices, shape, layout, rcfg, Math.fround);
  const dt = shape.dtype;
  return {
    ref: { out: f.out, lse: f.lse, dq: b.dq, dk: b.dk, dv: b.dv },
    cal: { out: calOut, lse: calLse, dq: roundAll(dt, cb.dq), dk: roundAll(dt, cb.dk), dv: roundAll(dt, cb.dv) },
  };
}

/** Tolerance checks of every output against the reference pair. */
export function gradChecks(label: string, p: Pick<QkProblem, 'shape'>, got: Grads, rp: { ref: Grads; cal: Grads }): ToleranceCheck[] {
  const { T, Tk, Hq, Hkv, D, dtype } = p.shape;
  const fw = { kind: 'forward', dtype } as const;
  const bw = { kind: 'backward', dtype } as const;
  return [
    checkTolerance(`${label} out`, got.out, rp.ref.out, rp.cal.out, { ...fw, shape: [T, Hq, D] }),
    checkTolerance(`${label} lse`, got.lse, rp.ref.lse, rp.cal.lse, { ...fw, dtype: 'f32', shape: [T, Hq] }),
    checkTolerance(`${label} dq`, got.dq, rp.ref.dq, rp.cal.dq, { ...bw, shape: [T, Hq, D] }),
    checkTolerance(`${label} dk`, got.dk, rp.ref.dk, rp.cal.dk, { ...bw, shape: [Tk, Hkv, D] }),
    checkTolerance(`${label} dv`, got.dv, rp.ref.dv, rp.cal.dv, { ...bw, shape: [Tk, Hkv, D] }),
  ];
}

/** A random valid routing `[Tq, Hq, topk]` for the QK layout (own block mostly kept when causal; some rows empty). */
/** A random valid routing at each row's key position: the testkit's generator on this problem's query map. */
export function randomQkRouting(p: QkProblem, rng: Rng): Int32Array {
  return testkitRandomQkRouting({ shape: p.shape, rcfg: p.rcfg, seqs: p.seqs, queries: queryRows(p.layout) }, rng);
}
