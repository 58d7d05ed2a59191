/**
 * Reference backward (SPEC §5), float64: dense attention's gradient restricted to the selected pairs,
 * recomputing P from lse. Under GQA the kv head's dk/dv sum over its query heads.
 */
import type { ProblemShape, ResolvedConfig } from '../config.js';
import { type Round, keysOf } from './forward.js';
import { type ReferenceLayout, queryMap } from './qk.js';

export interface ReferenceBackward {
  readonly dq: Float64Array;
  readonly dk: Float64Array;
  readonly dv: Float64Array;
}

export function referenceBackward(
  q: Float64Array, k: Float64Array, v: Float64Array, out: Float64Array, lse: Float64Array, dOut: Float64Array,
  indices: Int32Array, shape: ProblemShape, layout: ReferenceLayout, cfg: ResolvedConfig, round: Round = (x) => x,
  /** Use only these query rows (dq of the others stays 0, dk/dv get only their contributions). */
  rows?: readonly number[],
): ReferenceBackward {
  const m = queryMap(layout, cfg.blockSize); // dq `[Tq, Hq, D]`; dk, dv `[Tk, Hkv, D]` (SPEC §8)
  const { Hq, Hkv, D } = shape;
  const dq = new Float64Array(m.Tq * Hq * D);
  const dk = new Float64Array(m.Tk * Hkv * D);
  const dv = new Float64Array(m.Tk * Hkv * D);
  const group = Hq / Hkv;
  const dot = (a: Float64Array, ia: number, b: Float64Array, ib: number): number => {
    let s = 0;
    for (let d = 0; d < D; d++) s = round(s + round(a[ia + d]! * b[ib + d]!));
    return s;
  };
  for (const t of rows ?? Array.from({ length: m.Tq }, (_, i) => i)) {
    const s = m.seqOfQ[t]!;
    for (let h = 0; h < Hq; h++) {
      const row = t * Hq + h;
      const kvh = Math.floor(h / group);
      const keys = keysOf(indices, s, Hq, cfg, m.pos[t]!, h, t);
      if (keys.length === 0) continue;
      const delta = dot(dOut, row * D, out, row * D); // Δ = rowsum(dO ⊙ O)
      for (const p of keys) {
        const kp = (p * Hkv + kvh) * D;
        const sc = round(cfg.scale * dot(q, row * D, k, kp));
        const pr = Number.isFinite(sc) ? round(Math.exp(round(sc - lse[row]!))) : NaN; // a non-finite score poisons P
        const dp = dot(dOut, row * D, v, kp);
        const ds = round(pr * round(dp - delta));
        for (let d = 0; d < D; d++) {
          dv[kp + d] = round(dv[kp + d]! + round(pr * dOut[row * D + d]!));
          dq[row * D + d] = round(dq[row * D + d]! + round(cfg.scale * round(ds * k[kp + d]!)));
          dk[kp + d] = round(dk[kp + d]! + round(cfg.scale * round(ds * q[row * D + d]!)));
        }
      }
    }
  }
  return { dq, dk, dv };
}
