/**
 * The tolerance policy (ARCHITECTURE.md, after FlashAttention/FlashMoBA): a backend's result is
 * compared with the float64 reference on the same (dtype-rounded) inputs; the bound is a multiple of
 * the error of the same reference run with the backend's precision (the calibration), 2× for forward
 * outputs and 3× for gradients, plus a small absolute floor relative to the values' magnitude.
 */
import { type DType, dtypeEps } from './dtype.js';

export const TOLERANCE = { forwardRatio: 2, backwardRatio: 3, f32Floor: 1e-5 } as const;

export interface ErrorStats {
  /** Max |actual − expected| (Infinity where one is NaN/Inf and the other is not). */
  readonly maxAbs: number;
  /** sqrt(Σ err²) / sqrt(Σ expected²). */
  readonly relRms: number;
  /** Flat index of the worst element (-1 if none). */
  readonly worst: number;
  readonly expected: number;
  readonly actual: number;
  /** Max |expected|, the magnitude the floor is relative to. */
  readonly refMax: number;
}

/** Element-wise error stats; equal infinities (e.g. lse = -Infinity of empty rows) count as exact. */
export function errorStats(actual: ArrayLike<number>, expected: ArrayLike<number>): ErrorStats {
  let maxAbs = 0;
  let worst = -1;
  let se = 0;
  let sr = 0;
  let refMax = 0;
  for (let i = 0; i < expected.length; i++) {
    const a = actual[i]!;
    const e = expected[i]!;
    let err: number;
    if (a === e || (Number.isNaN(a) && Number.isNaN(e))) err = 0;
    else if (!Number.isFinite(a) || !Number.isFinite(e)) err = Infinity;
    else err = Math.abs(a - e);
    if (Number.isFinite(e)) {
      refMax = Math.max(refMax, Math.abs(e));
      sr += e * e;
    }
    if (Number.isFinite(err)) se += err * err;
    if (worst < 0 || err > maxAbs) {
      worst = i;
      maxAbs = err;
    }
  }
  return {
    maxAbs,
    relRms: sr > 0 ? Math.sqrt(se / sr) : Math.sqrt(se),
    worst,
    expected: worst >= 0 ? expected[worst]! : NaN,
    actual: worst >= 0 ? actual[worst]! : NaN,
    refMax,
  };
}

export interface ToleranceCheck {
  readonly name: string;
  readonly ok: boolean;
  readonly stats: ErrorStats;
  /** Max error of the calibration run. */
  readonly calibrated: number;
  readonly bound: number;
  /** CTS-style one-line explanation. */
  readonly message: string;
}

/** Absolute floor for values of magnitude `refMax` stored in `dtype`. */
export function absFloor(dtype: DType, refMax: number): number {
  return Math.max(TOLERANCE.f32Floor, dtypeEps(dtype) / 4) * Math.max(1, refMax);
}

/**
 * Checks `actual` against the f64 `reference`, with the bound calibrated by `calibrated` (the same
 * reference computed in the backend's precision). `shape` names the worst index in messages.
 */
export function checkTolerance(
  name: string, actual: ArrayLike<number>, reference: ArrayLike<number>, calibrated: ArrayLike<number>,
  opts: { kind: 'forward' | 'backward'; dtype: DType; shape?: readonly number[] },
): ToleranceCheck {
  const stats = errorStats(actual, reference);
  const cal = errorStats(calibrated, reference).maxAbs;
  const ratio = opts.kind === 'forward' ? TOLERANCE.forwardRatio : TOLERANCE.backwardRatio;
  const bound = ratio * (Number.isFinite(cal) ? cal : 0) + absFloor(opts.dtype, stats.refMax);
  const ok = stats.maxAbs <= bound;
  const where = stats.worst >= 0 ? (opts.shape ? `[${unravel(stats.worst, opts.shape).join(', ')}]` : `#${stats.worst}`) : '-';
  const message =
    `${name}: max abs error ${stats.maxAbs.toExponential(3)} at ${where} (got ${stats.actual}, expected ${stats.expected}), ` +
    `rel RMS ${stats.relRms.toExponential(3)}; ${ok ? 'within' : 'NOT within'} ${bound.toExponential(3)} ` +
    `(= ${ratio} × calibrated ${cal.toExponential(3)} + floor)`;
  return { name, ok, stats, calibrated: cal, bound, message };
}

/** Flat index → multi-index for a row-major shape. */
export function unravel(i: number, shape: readonly number[]): number[] {
  const idx = new Array<number>(shape.length);
  for (let d = shape.length - 1; d >= 0; d--) {
    idx[d] = i % shape[d]!;
    i = Math.floor(i / shape[d]!);
  }
  return idx;
}
