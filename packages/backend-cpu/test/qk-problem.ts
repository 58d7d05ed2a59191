/**
 * Problems with fewer queries than keys (SPEC §8) for the CPU tests: the testkit's `QkFullProblem` (inputs drawn
 * for the whole key sequence, so the query rows can be compared with the same rows of the full self-attention
 * call) on random specs with some empty sequences and per sequence a query count in {0, 1, a few, nk}; and the
 * reference pair and tolerance checks of the QK outputs.
 */
import { type DType, type ToleranceCheck, Rng, checkTolerance, roundTo } from '@moba/core';
import { referenceBackward, referenceForward } from '@moba/core/reference';
import type { QkProblem, QkSpec } from '@moba/testkit';

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
    seqlens: nk, seqlensQ: nq, Hkv, Hq: rng.next() < 0.2 ? 4 : Hkv * group, // Hq = 4 with Hkv = 1 is MQA
    D: [1, 4, 7, 16, 33][rng.int(0, 4)]!, dtype: opts.dtype ?? (['f32', 'f16', 'bf16'] as const)[rng.int(0, 2)]!,
    blockSize, topk: rng.int(1, 8), causal: opts.causal ?? rng.next() < 0.7, seed: rng.int(1, 1e9),
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
