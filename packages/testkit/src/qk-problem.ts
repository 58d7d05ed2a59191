/**
 * Problems with fewer queries than keys (SPEC §8): a `QkSpec` is a `ProblemSpec` (whose `seqlens` are the KEY
 * counts) plus the query count of each sequence, bottom-right aligned. `makeQkProblem` expands it into
 * `q, dOut [Tq, Hq, D]`, `k, v [Tk, Hkv, D]` and the `{ cuSeqlensQ, cuSeqlensK }` layout.
 */
import fc from 'fast-check';
import {
  type Capabilities, type HostTensor, type Layout, type MobaConfig, type ProblemShape, type QKLayout, type QueryRows,
  type Sequences, Rng, fromFloat, queryRows, resolveConfig, sequences,
} from '@moba/core';
import type { AttentionProblem } from './checks.js';
import { type ProblemSpec, type SpecLimits, cuSeqlensOf, describeSpec, randomTensor, specArb } from './problem.js';

export interface QkSpec extends ProblemSpec {
  /** Queries of each sequence, each in `0..seqlens[i]` (the last ones: bottom-right aligned). */
  readonly seqlensQ: readonly number[];
}

export interface QkProblem extends AttentionProblem {
  readonly spec: QkSpec;
  readonly shape: ProblemShape & { readonly Tk: number };
  readonly layout: QKLayout;
  /** The key layout (`cuSeqlensK`) and its sequences and blocks. */
  readonly keys: Layout;
  readonly seqs: Sequences;
  /** Sequence and global key position of every query row. */
  readonly queries: QueryRows;
}

export function describeQkSpec(s: QkSpec): string {
  return `${describeSpec(s)} seqlensQ=[${s.seqlensQ.join(',')}]`;
}

/**
 * Query counts for key counts `nk`: per sequence 0, 1, a few (2..4) or all of them, at least one query in all
 * (a sequence with no key is never drawn: the generators give every sequence >= 1 token).
 */
export function seqlensQArb(nk: readonly number[]): fc.Arbitrary<number[]> {
  const one = (n: number): fc.Arbitrary<number> =>
    fc.oneof(fc.constant(0), fc.constant(Math.min(1, n)), fc.integer({ min: Math.min(2, n), max: Math.min(4, n) }), fc.constant(n));
  return (fc.tuple(...nk.map(one)) as fc.Arbitrary<number[]>).map((drawn): number[] => {
    const nq: number[] = [...drawn];
    if (!nq.some((x) => x > 0)) nq[nq.length - 1] = Math.min(1, nk[nk.length - 1]!); // Tq >= 1
    return nq;
  });
}

/** The general generator (specArb, narrowed by caps) with query counts drawn per sequence. */
export function qkSpecArb(caps: Capabilities, lim: SpecLimits = {}): fc.Arbitrary<QkSpec> {
  return specArb(caps, { minTokens: 1, ...lim }).chain((s) => seqlensQArb(s.seqlens).map((seqlensQ) => ({ ...s, seqlensQ })));
}

/** Expands a spec into inputs (values rounded to the dtype). */
export function makeQkProblem(spec: QkSpec): QkProblem {
  const { Hq, Hkv, D, dtype } = spec;
  const Tk = spec.seqlens.reduce((a, b) => a + b, 0);
  const Tq = spec.seqlensQ.reduce((a, b) => a + b, 0);
  const rng = new Rng(spec.seed);
  const q = randomTensor(rng, dtype, [Tq, Hq, D]);
  const k = randomTensor(rng, dtype, [Tk, Hkv, D]);
  const v = randomTensor(rng, dtype, [Tk, Hkv, D]);
  const dOut = randomTensor(rng, dtype, [Tq, Hq, D]);
  const layout: QKLayout = { cuSeqlensQ: cuSeqlensOf(spec.seqlensQ), cuSeqlensK: cuSeqlensOf(spec.seqlens) };
  const keyLayout = { cuSeqlens: layout.cuSeqlensK };
  const cfg: MobaConfig = { blockSize: spec.blockSize, topk: spec.topk, causal: spec.causal, ...(spec.scale !== undefined ? { scale: spec.scale } : {}) };
  return {
    spec, layout, cfg, keys: keyLayout,
    shape: { T: Tq, Tk, Hq, Hkv, D, dtype },
    rcfg: resolveConfig(cfg, D),
    seqs: sequences(keyLayout, spec.blockSize),
    queries: queryRows(layout),
    q: q.t, k: k.t, v: v.t, dOut: dOut.t,
    q64: q.f64, k64: k.f64, v64: v.f64, dOut64: dOut.f64,
  };
}

/**
 * A QK problem together with the self-attention problem on the same keys (layout `keys`, shape `fullShape`):
 * q is drawn for every key row (`qFull [Tk, Hq, D]`) and the QK call's query row t is its row `queries.pos[t]`;
 * `dOutFull` is `dOut` at those rows and zero elsewhere, so the full call's dk and dv are the QK call's and its
 * out, lse and dq at rows `queries.pos` are the QK call's (compare with `rowsAt`). The same spec with
 * `seqlensQ = seqlens` draws the same qFull, k and v.
 */
export interface QkFullProblem extends QkProblem {
  readonly fullShape: ProblemShape;
  readonly qFull: HostTensor;
  readonly dOutFull: HostTensor;
  readonly qFull64: Float64Array;
  readonly dOutFull64: Float64Array;
}

/** Expands a spec into a `QkFullProblem` (values rounded to the dtype). */
export function makeQkFullProblem(spec: QkSpec): QkFullProblem {
  const { Hq, Hkv, D, dtype } = spec;
  const Tk = spec.seqlens.reduce((a, b) => a + b, 0);
  const rng = new Rng(spec.seed);
  const qFull = randomTensor(rng, dtype, [Tk, Hq, D]);
  const k = randomTensor(rng, dtype, [Tk, Hkv, D]);
  const v = randomTensor(rng, dtype, [Tk, Hkv, D]);
  const layout: QKLayout = { cuSeqlensQ: cuSeqlensOf(spec.seqlensQ), cuSeqlensK: cuSeqlensOf(spec.seqlens) };
  const queries = queryRows(layout);
  const Tq = queries.pos.length;
  const dOut = randomTensor(rng, dtype, [Tq, Hq, D]);
  const q64 = rowsAt(qFull.f64, queries.pos, Hq * D);
  const dOutFull64 = embedRows(new Float64Array(Tk * Hq * D), dOut.f64, queries.pos, Hq * D);
  const keys = { cuSeqlens: layout.cuSeqlensK };
  const cfg: MobaConfig = { blockSize: spec.blockSize, topk: spec.topk, causal: spec.causal, ...(spec.scale !== undefined ? { scale: spec.scale } : {}) };
  return {
    spec, layout, cfg, keys, queries,
    shape: { T: Tq, Tk, Hq, Hkv, D, dtype }, fullShape: { T: Tk, Hq, Hkv, D, dtype },
    rcfg: resolveConfig(cfg, D), seqs: sequences(keys, spec.blockSize),
    q: fromFloat(q64, dtype, [Tq, Hq, D]), k: k.t, v: v.t, dOut: dOut.t, qFull: qFull.t, dOutFull: fromFloat(dOutFull64, dtype, [Tk, Hq, D]),
    q64, k64: k.f64, v64: v.f64, dOut64: dOut.f64, qFull64: qFull.f64, dOutFull64,
  };
}

/** Rows `rows` of a flat `[*, width]` array (e.g. a full call's outputs or indices at the query rows' key positions). */
export function rowsAt<A extends Float64Array | Int32Array>(a: A, rows: ArrayLike<number>, width: number): A {
  const out = new (a.constructor as new (n: number) => A)(rows.length * width);
  for (let i = 0; i < rows.length; i++) out.set(a.subarray(rows[i]! * width, (rows[i]! + 1) * width), i * width);
  return out;
}

/** A copy of `base` (`[*, width]`) with its rows `rows[i]` replaced by row i of `x` (the inverse of `rowsAt`). */
export function embedRows<A extends Float64Array | Int32Array>(base: A, x: A, rows: ArrayLike<number>, width: number): A {
  const out = base.slice() as A;
  for (let i = 0; i < rows.length; i++) out.set(x.subarray(i * width, (i + 1) * width), rows[i]! * width);
  return out;
}

/**
 * A random valid routing `[Tq, Hq, topk]` for `p`: per query row a random subset of the blocks its key position
 * may use (causal: 0..cb, the own block usually included; non-causal: any block), ascending, -1 padded, a few
 * rows short of topk and occasionally empty.
 */
export function randomQkRouting(p: Pick<QkProblem, 'shape' | 'rcfg' | 'seqs' | 'queries'>, rng: Rng): Int32Array {
  const { T, Hq } = p.shape;
  const K = p.rcfg.topk;
  const B = p.rcfg.blockSize;
  const out = new Int32Array(T * Hq * K).fill(-1);
  for (let t = 0; t < T; t++) {
    const s = p.seqs.seqs[p.queries.seqOf[t]!]!;
    const cb = Math.floor((p.queries.pos[t]! - s.start) / B);
    const allowed = p.rcfg.causal ? cb + 1 : s.nBlocks;
    for (let h = 0; h < Hq; h++) {
      const pool = Array.from({ length: allowed }, (_, j) => j);
      const chosen: number[] = [];
      const r = rng.next();
      let want = r < 0.04 ? 0 : r < 0.2 ? rng.int(1, Math.min(K, allowed)) : Math.min(K, allowed);
      if (p.rcfg.causal && want > 0 && rng.next() < 0.9) {
        chosen.push(cb);
        pool.pop();
        want--;
      }
      while (want-- > 0 && pool.length > 0) chosen.push(pool.splice(rng.int(0, pool.length - 1), 1)[0]!);
      chosen.sort((a, b) => a - b).forEach((j, i) => (out[(t * Hq + h) * K + i] = j));
    }
  }
  return out;
}
