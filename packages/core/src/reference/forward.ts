/**
 * Reference attention over a routing (SPEC §4), float64: for each (token, query head) one softmax over
 * the union of its selected blocks' keys (own block causally masked). Optional `round` applies a
 * lower precision to every intermediate: that run calibrates the tolerance policy (compare.ts).
 */
import type { ProblemShape, ResolvedConfig } from '../config.js';
import { type ReferenceLayout, queryMap } from './qk.js';

export type Round = (x: number) => number;
const exact: Round = (x) => x;

/** Key rows attended by query row `t` under `indices` (ascending). */
export function attendedKeys(indices: Int32Array, shape: ProblemShape, layout: ReferenceLayout, cfg: ResolvedConfig, t: number, h: number): number[] {
  const m = queryMap(layout, cfg.blockSize);
  return keysOf(indices, m.seqOfQ[t]!, shape.Hq, cfg, m.pos[t]!, h, t);
}

/** Keys of the query at global key position `t` whose indices are row `qRow` (SPEC §8; `t` itself by default). */
export function keysOf(indices: Int32Array, s: { start: number; len: number }, Hq: number, cfg: ResolvedConfig, t: number, h: number, qRow = t): number[] {
  const keys: number[] = [];
  const B = cfg.blockSize;
  const cb = Math.floor((t - s.start) / B);
  for (let i = 0; i < cfg.topk; i++) {
    const j = indices[(qRow * Hq + h) * cfg.topk + i]!;
    if (j < 0) continue;
    const p0 = s.start + j * B;
    const p1 = Math.min(p0 + B, s.start + s.len);
    for (let p = p0; p < p1 && !(cfg.causal && j === cb && p > t); p++) keys.push(p);
  }
  return keys;
}

export interface ReferenceForward {
  /** `[Tq, Hq, D]` (Tq = T for one `cuSeqlens`). */
  readonly out: Float64Array;
  /** `[Tq, Hq]`, natural log, -Infinity for empty rows. */
  readonly lse: Float64Array;
}

export function referenceForward(
  q: Float64Array, k: Float64Array, v: Float64Array, indices: Int32Array,
  shape: ProblemShape, layout: ReferenceLayout, cfg: ResolvedConfig, round: Round = exact,
  /** Compute only these query rows (others stay 0); all rows by default. */
  rows?: readonly number[],
): ReferenceForward {
  const { Hq, Hkv, D } = shape;
  const qm = queryMap(layout, cfg.blockSize); // q rows → key positions (SPEC §8); T = Tq = Tk for one cuSeqlens
  const out = new Float64Array(qm.Tq * Hq * D);
  const lse = new Float64Array(qm.Tq * Hq);
  const group = Hq / Hkv;
  for (const t of rows ?? Array.from({ length: qm.Tq }, (_, i) => i)) {
    const s = qm.seqOfQ[t]!;
    for (let h = 0; h < Hq; h++) {
      const kvh = Math.floor(h / group);
      const keys = keysOf(indices, s, Hq, cfg, qm.pos[t]!, h, t);
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
