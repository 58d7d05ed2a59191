/**
 * Reference attention over a routing (SPEC §4), float64: for each (token, query head) one softmax over
 * the union of its selected blocks' keys (own block causally masked). Optional `round` applies a
 * lower precision to every intermediate: that run calibrates the tolerance policy (compare.ts).
 */
import type { Layout, ProblemShape, ResolvedConfig } from '../config.js';
import { sequences } from '../config.js';

export type Round = (x: number) => number;
const exact: Round = (x) => x;

/** Key rows attended by query `t` under `indices` (ascending). */
export function attendedKeys(indices: Int32Array, shape: ProblemShape, layout: Layout, cfg: ResolvedConfig, t: number, h: number): number[] {
  const seqs = sequences(layout, cfg.blockSize);
  return keysOf(indices, seqs.seqs[seqs.seqOf[t]!]!, shape.Hq, cfg, t, h);
}

export function keysOf(indices: Int32Array, s: { start: number; len: number }, Hq: number, cfg: ResolvedConfig, t: number, h: number): number[] {
  const keys: number[] = [];
  const B = cfg.blockSize;
  const cb = Math.floor((t - s.start) / B);
  for (let i = 0; i < cfg.topk; i++) {
    const j = indices[(t * Hq + h) * cfg.topk + i]!;
    if (j < 0) continue;
    const p0 = s.start + j * B;
    const p1 = Math.min(p0 + B, s.start + s.len);
    for (let p = p0; p < p1 && !(cfg.causal && j === cb && p > t); p++) keys.push(p);
  }
  return keys;
}

export interface ReferenceForward {
  /** `[T, Hq, D]`. */
  readonly out: Float64Array;
  /** `[T, Hq]`, natural log, -Infinity for empty rows. */
  readonly lse: Float64Array;
}

export function referenceForward(
  q: Float64Array, k: Float64Array, v: Float64Array, indices: Int32Array,
  shape: ProblemShape, layout: Layout, cfg: ResolvedConfig, round: Round = exact,
  /** Compute only these query rows (others stay 0); all rows by default. */
  rows?: readonly number[],
): ReferenceForward {
  const { T, Hq, Hkv, D } = shape;
  const seqs = sequences(layout, cfg.blockSize);
  const out = new Float64Array(T * Hq * D);
  const lse = new Float64Array(T * Hq);
  const group = Hq / Hkv;
  for (const t of rows ?? Array.from({ length: T }, (_, i) => i)) {
    const s = seqs.seqs[seqs.seqOf[t]!]!;
    for (let h = 0; h < Hq; h++) {
      const kvh = Math.floor(h / group);
      const keys = keysOf(indices, s, Hq, cfg, t, h);
      const row = t * Hq + h;
      if (keys.length === 0) { lse[row] = -Infinity; continue; } // empty row: out = 0
      // -- scores --
      const sc = keys.map((p) => {
        let dot = 0;
        for (let d = 0; d < D; d++) dot = round(dot + round(q[row * D + d]! * k[(p * Hkv + kvh) * D + d]!));
        return round(dot * cfg.scale);
      });
      // a non-finite score (q or a key non-finite; f32 inputs cannot overflow f64) poisons the row (docs/api.md)
      if (sc.some((x) => !Number.isFinite(x))) {
        out.fill(NaN, row * D, row * D + D);
        lse[row] = NaN;
        continue;
      }
      // -- softmax --
      const m = sc.reduce((a, b) => Math.max(a, b), -Infinity);
      let l = 0;
      const pr = sc.map((x) => round(Math.exp(round(x - m))));
      for (const x of pr) l = round(l + x);
      // -- P V --
      for (let d = 0; d < D; d++) {
        let acc = 0;
        for (let i = 0; i < keys.length; i++) acc = round(acc + round(pr[i]! * v[(keys[i]! * Hkv + kvh) * D + d]!));
        out[row * D + d] = round(acc / l);
      }
      lse[row] = round(m + Math.log(l));
    }
  }
  return { out, lse };
}
