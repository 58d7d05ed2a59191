/**
 * Problems with fewer queries than keys (SPEC §8) for qk.test.ts, built on a whole self-attention problem: the
 * query rows are the last nq_i key rows of each sequence (bottom-right aligned), so the QK call's row t is row
 * pos[t] of the full call. The full problem's dOut is zero outside the query rows, so its dk and dv are those
 * of the QK call, and the CPU backend's full self-attention call gives a second result to compare with.
 */
import {
  type DType, type HostTensor, type MobaConfig, type ProblemShape, type QKLayout, type ResolvedConfig, type Sequences,
  Rng, fromFloat, hostTensor, queryRows, resolveConfig, sequences, toFloat64,
} from '@moba/core';
import { cuSeqlensOf } from '@moba/testkit';

export interface QKCase {
  readonly label: string;
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

/** The QK problem and its full self-attention counterpart (host tensors and f64 copies). */
export interface QKProblem {
  readonly c: QKCase;
  readonly layout: QKLayout;
  readonly full: { cuSeqlens: Int32Array };
  readonly cfg: MobaConfig;
  readonly rcfg: ResolvedConfig;
  /** Tq query rows, Tk key rows. */
  readonly shape: ProblemShape & { Tk: number };
  readonly fullShape: ProblemShape;
  readonly seqs: Sequences;
  /** For each query row its key row. */
  readonly pos: Int32Array;
  readonly q: HostTensor; readonly k: HostTensor; readonly v: HostTensor; readonly dOut: HostTensor;
  readonly qFull: HostTensor; readonly dOutFull: HostTensor;
  readonly q64: Float64Array; readonly k64: Float64Array; readonly v64: Float64Array; readonly dOut64: Float64Array;
  readonly qFull64: Float64Array;
}

function randomTensor(rng: Rng, dtype: DType, shape: readonly number[]): HostTensor {
  return fromFloat(rng.normals(shape.reduce((a, b) => a * b, 1)), dtype, shape);
}

/** Rows `rows` of a [T, H, D] tensor (raw values, any dtype). */
function pickRows(t: HostTensor, rows: Int32Array, width: number): HostTensor {
  const src = t.data as Float32Array | Uint16Array;
  const dst = new (src.constructor as { new (n: number): Float32Array | Uint16Array })(rows.length * width);
  rows.forEach((p, i) => dst.set(src.subarray(p * width, (p + 1) * width), i * width));
  return hostTensor(t.dtype, [rows.length, t.shape[1]!, t.shape[2]!], dst);
}

/** A [T, H, D] tensor that is `t` at rows `rows` and zero elsewhere. */
function scatterRows(t: HostTensor, rows: Int32Array, T: number, width: number): HostTensor {
  const src = t.data as Float32Array | Uint16Array;
  const dst = new (src.constructor as { new (n: number): Float32Array | Uint16Array })(T * width);
  rows.forEach((p, i) => dst.set(src.subarray(i * width, (i + 1) * width), p * width));
  return hostTensor(t.dtype, [T, t.shape[1]!, t.shape[2]!], dst);
}

export function makeQKProblem(c: QKCase): QKProblem {
  const rng = new Rng(c.seed);
  const Tk = c.nk.reduce((a, b) => a + b, 0);
  const Tq = c.nq.reduce((a, b) => a + b, 0);
  const layout = { cuSeqlensQ: cuSeqlensOf(c.nq), cuSeqlensK: cuSeqlensOf(c.nk) };
  const full = { cuSeqlens: cuSeqlensOf(c.nk) };
  const { pos } = queryRows(layout);
  const qFull = randomTensor(rng, c.dtype, [Tk, c.Hq, c.D]);
  const k = randomTensor(rng, c.dtype, [Tk, c.Hkv, c.D]);
  const v = randomTensor(rng, c.dtype, [Tk, c.Hkv, c.D]);
  const dOut = randomTensor(rng, c.dtype, [Tq, c.Hq, c.D]);
  const q = pickRows(qFull, pos, c.Hq * c.D);
  const dOutFull = scatterRows(dOut, pos, Tk, c.Hq * c.D);
  const cfg: MobaConfig = { blockSize: c.blockSize, topk: c.topk, causal: c.causal };
  return {
    c, layout, full, cfg, rcfg: resolveConfig(cfg, c.D),
    shape: { T: Tq, Tk, Hq: c.Hq, Hkv: c.Hkv, D: c.D, dtype: c.dtype },
    fullShape: { T: Tk, Hq: c.Hq, Hkv: c.Hkv, D: c.D, dtype: c.dtype },
    seqs: sequences(full, c.blockSize), pos,
    q, k, v, dOut, qFull, dOutFull,
    q64: toFloat64(q), k64: toFloat64(k), v64: toFloat64(v), dOut64: toFloat64(dOut), qFull64: toFloat64(qFull),
  };
}

/** Rows `pos` of a flat [T, width] array. */
export function rowsOf(a: Float64Array, pos: Int32Array, width: number): Float64Array {
  const out = new Float64Array(pos.length * width);
  pos.forEach((p, i) => out.set(a.subarray(p * width, (p + 1) * width), i * width));
  return out;
}

/** Full-problem indices [Tk, Hq, topk]: `base` with rows pos[t] replaced by row t of `qk` [Tq, Hq, topk]. */
export function embedRows(base: Int32Array, qk: Int32Array, pos: Int32Array, width: number): Int32Array {
  const out = Int32Array.from(base);
  pos.forEach((p, t) => out.set(qk.subarray(t * width, (t + 1) * width), p * width));
  return out;
}

/** A random case: several sequences, nq_i in {0, 1, a few, nk_i} (at least one query row in all). */
export function randomCase(rng: Rng, i: number, dtypes: readonly DType[]): QKCase {
  const blockSize = [1, 4, 16, 32, 64][rng.int(0, 4)]!;
  const nSeq = rng.int(1, 4);
  const nk = Array.from({ length: nSeq }, () => rng.int(1, Math.min(400, 12 * blockSize + 20)));
  const nq = nk.map((n): number => {
    const kind = rng.int(0, 3);
    return kind === 0 ? 0 : kind === 1 ? 1 : kind === 2 ? Math.min(n, rng.int(2, 9)) : n;
  });
  if (!nq.some((n) => n > 0)) nq[0] = 1;
  const Hkv = rng.int(1, 2);
  const group = [1, 2, 4][rng.int(0, 2)]!; // MHA, GQA, and MQA when Hkv = 1
  return {
    label: `case ${i}`, nk, nq, Hkv, Hq: Hkv * group, D: [8, 16, 40, 64][rng.int(0, 3)]!, dtype: dtypes[i % dtypes.length]!,
    blockSize, topk: rng.int(1, 6), causal: rng.next() < 0.7, seed: 1000 + i,
  };
}
