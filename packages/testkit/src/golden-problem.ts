/**
 * A golden case as a problem in one dtype (golden-format.md), free of Node APIs: its inputs rounded to the dtype
 * (with the query rows of `seqlens_q` on top of the key layout, SPEC §8, and the kconv weight), the reference
 * chain of the case (kconv, then attention on the convolved keys, dk through the kconv backward) with its
 * calibration, and the file's values put in place of the reference with the calibration moved onto them.
 */
import {
  type AttentionLayout, type DType, type HostTensor, type Layout, type ProblemShape, type QueryRows, type ResolvedConfig, type Sequences,
  fromFloat, queryRows, resolveConfig, sequences, toFloat64,
} from '@moba/core';
import { referenceKconv, referenceKconvBackward } from '@moba/core/reference';
import { type AttentionProblem, type ReferencePair, referencePair, roundAll } from './checks.js';
import type { GoldenCase } from './golden-parse.js';
import { BlockScorer, scoreEps } from './routing-checks.js';

/** A case's problem in one dtype: `shape.T` query rows, `shape.Tk` key rows, `layout` a QKLayout for seqlens_q cases. */
export interface GoldenProblem extends AttentionProblem {
  readonly shape: ProblemShape & { readonly Tk: number };
  readonly rcfg: ResolvedConfig;
  /** The key layout and its sequences and blocks. */
  readonly keys: Layout;
  readonly seqs: Sequences;
  readonly queries: QueryRows;
  /** kconv weight `[Hkv·D, W]` in the dtype (kconv cases). */
  readonly w?: HostTensor;
  readonly w64?: Float64Array;
}

/** The case's inputs in `dtype`; `exact` when every value survived the rounding unchanged. */
export function goldenProblem(gc: GoldenCase, dtype: DType): { p: GoldenProblem; exact: boolean } {
  const { T, Tq, Hq, Hkv, D } = gc;
  const qs = [Tq, Hq, D];
  const ks = [T, Hkv, D];
  const q = fromFloat(gc.q, dtype, qs);
  const k = fromFloat(gc.k, dtype, ks);
  const v = fromFloat(gc.v, dtype, ks);
  const dOut = fromFloat(gc.dout ?? new Float64Array(Tq * Hq * D), dtype, qs);
  const keys: Layout = { cuSeqlens: gc.cuSeqlens };
  const layout: AttentionLayout = gc.requires.includes('seqlens_q') ? { cuSeqlensQ: gc.cuSeqlensQ, cuSeqlensK: gc.cuSeqlens } : keys;
  const cfg = { blockSize: gc.blockSize, topk: gc.topk, causal: gc.causal, scale: gc.scale };
  const w = gc.kconvWeight ? fromFloat(gc.kconvWeight, dtype, [Hkv * D, gc.kconvWidth]) : undefined;
  const p: GoldenProblem = {
    shape: { T: Tq, Tk: T, Hq, Hkv, D, dtype }, layout, keys, cfg, rcfg: resolveConfig(cfg, D), seqs: sequences(keys, gc.blockSize), queries: queryRows(layout),
    q, k, v, dOut, q64: toFloat64(q), k64: toFloat64(k), v64: toFloat64(v), dOut64: toFloat64(dOut),
    ...(w ? { w, w64: toFloat64(w) } : {}),
  };
  const same = (a: Float64Array, b: Float64Array): boolean => a.every((x, i) => x === b[i] || (Number.isNaN(x) && Number.isNaN(b[i]!)));
  const exact = same(gc.q, p.q64) && same(gc.k, p.k64) && same(gc.v, p.v64) && (!gc.dout || same(gc.dout, p.dOut64)) && (!gc.kconvWeight || same(gc.kconvWeight, p.w64!));
  return { p, exact };
}

/** The reference chain of a case under `indices`, with its calibration; `kconv` holds k' and dw when the case has a kconv. */
export interface GoldenReference extends ReferencePair {
  readonly kconv?: { readonly ref: { kConv: Float64Array; dw: Float64Array }; readonly cal: { kConv: Float64Array; dw: Float64Array } };
}

/**
 * The reference of `p` under `indices`: without kconv `referencePair`; with it k' = kconv(k) (the calibration
 * rounds k' to the dtype, as a backend stores it), attention on k', and dk, dw through the kconv backward.
 */
export function goldenReference(gc: GoldenCase, p: GoldenProblem, indices: Int32Array, backward: boolean): GoldenReference {
  if (!p.w64) return referencePair(p, indices, { backward });
  const C = gc.Hkv * gc.D;
  const W = gc.kconvWidth;
  const dt = p.shape.dtype;
  const kRef = referenceKconv(p.k64, p.w64, C, W, p.keys);
  const kCal = roundAll(dt, referenceKconv(p.k64, p.w64, C, W, p.keys, Math.fround));
  const rp = referencePair(p, indices, { keys: kRef, calKeys: kCal, backward });
  if (!backward) return { ...rp, kconv: { ref: { kConv: kRef, dw: new Float64Array(0) }, cal: { kConv: kCal, dw: new Float64Array(0) } } };
  const rb = referenceKconvBackward(p.k64, p.w64, rp.ref.dk, C, W, p.keys);
  const cb = referenceKconvBackward(p.k64, p.w64, rp.cal.dk, C, W, p.keys, Math.fround);
  return {
    ref: { ...rp.ref, dk: rb.dk },
    cal: { ...rp.cal, dk: roundAll(dt, cb.dk) },
    kconv: { ref: { kConv: kRef, dw: rb.dw }, cal: { kConv: kCal, dw: roundAll(dt, cb.dw) } },
  };
}

/** `file` in place of `ref`, the calibration moved onto it: `cal' = file + (cal − ref)` (our own rounding error, never the file's disagreement). */
function moved(file: Float64Array | undefined, ref: Float64Array, cal: Float64Array): [Float64Array, Float64Array] {
  if (!file || ref.length === 0) return [ref, cal];
  return [file, file.map((x, i) => (cal[i] === ref[i] ? x : x + (cal[i]! - ref[i]!)))];
}

/** The file's values as the reference (every expected field the case holds). */
export function againstFile(rp: GoldenReference, e: GoldenCase['expected']): GoldenReference {
  const pick = (key: 'out' | 'lse' | 'dq' | 'dk' | 'dv'): [Float64Array, Float64Array] => moved(e[key], rp.ref[key], rp.cal[key]);
  const [out, cOut] = pick('out');
  const [lse, cLse] = pick('lse');
  const [dq, cDq] = pick('dq');
  const [dk, cDk] = pick('dk');
  const [dv, cDv] = pick('dv');
  const ref = { out, lse, dq, dk, dv };
  const cal = { out: cOut, lse: cLse, dq: cDq, dk: cDk, dv: cDv };
  if (!rp.kconv) return { ref, cal };
  const [kConv, cK] = moved(e.kConv, rp.kconv.ref.kConv, rp.kconv.cal.kConv);
  const [dw, cDw] = moved(e.dkconvWeight, rp.kconv.ref.dw, rp.kconv.cal.dw);
  return { ref, cal, kconv: { ref: { kConv, dw }, cal: { kConv: cK, dw: cDw } } };
}

/**
 * Rows where the backend's routing differs from the file's and the margin does not excuse it. `keys` are the keys
 * routed on; with a kconv they are the backend's k' stored in the dtype, and `exactKeys` (the f64 k') then widens
 * the noise by how far that rounding moved the row's scores.
 */
export function routingVsExpected(gc: GoldenCase, p: GoldenProblem, keys: Float64Array, got: Int32Array, exactKeys?: Float64Array): string[] {
  const exp = gc.expected.routing;
  if (!exp) return [];
  const K = gc.topk;
  const scorer = new BlockScorer(p.q64, keys, p.shape, p.seqs, p.keys, gc.blockSize);
  const exact = exactKeys ? new BlockScorer(p.q64, exactKeys, p.shape, p.seqs, p.keys, gc.blockSize) : undefined;
  const lines: string[] = [];
  for (let row = 0; row < gc.Tq * gc.Hq && lines.length < 5; row++) {
    const a = got.subarray(row * K, (row + 1) * K);
    const e = exp.subarray(row * K, (row + 1) * K);
    if (a.every((x, i) => x === e[i])) continue;
    const t = Math.floor(row / gc.Hq);
    const h = row % gc.Hq;
    const margin = gc.expected.margins?.[row];
    const sr = scorer.row(t, h, p.queries.pos[t]!);
    const moved = exact ? exact.row(t, h, p.queries.pos[t]!).scores.reduce((m, x, j) => Math.max(m, Math.abs(x - sr.scores[j]!)), 0) : 0;
    const noise = 2 * (scoreEps(gc.D, gc.blockSize, Math.max(...sr.mags)) + moved);
    const where = `routing row (t=${t}, h=${h}) = [${Array.from(a).join(', ')}], file has [${Array.from(e).join(', ')}]`;
    if (margin === undefined) continue; // no margin recorded: the tie-robust rule alone decides
    if (margin === null) lines.push(`${where}: nothing was left out of that row, so it must match`);
    else if (margin === 0) lines.push(`${where}: exact tie, the higher block index must win (SPEC §3)`);
    else if (margin > noise) lines.push(`${where}: margin ${margin.toExponential(3)} is above the rounding noise ${noise.toExponential(3)}`);
  }
  return lines;
}
