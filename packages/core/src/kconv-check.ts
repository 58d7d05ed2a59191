/** Validation of the kconv ops (SPEC §6, §7). */
import { type Capabilities, checkCaps } from './backend.js';
import { type Layout, type TensorLike, expectShape, validateKconvWeight, validateLayout } from './config.js';
import type { DType } from './dtype.js';
import { MobaError } from './errors.js';

/** A checked kconv call: `k [T, Hkv, D]`, weight `[C = Hkv·D, W]` and their dtypes. */
export interface CheckedKconv {
  readonly T: number;
  readonly Hkv: number;
  readonly D: number;
  readonly C: number;
  readonly W: number;
  readonly dtype: DType;
  readonly wDtype: DType;
}

/**
 * The checks of a kconv call (SPEC §6, §7): `k [T, Hkv, D]` within caps, the layout, the weight's shape and
 * width, and its dtype by `caps.kconvWeightDtype`; with `dkOut`, its shape and dtype too.
 */
export function checkKconv(caps: Capabilities, k: TensorLike, w: TensorLike, layout: Layout, dkOut?: TensorLike): CheckedKconv {
  if (!caps.kconv) throw new MobaError('E_UNSUPPORTED', 'kconv is not supported by this backend (caps.kconv is false)', 'kconv');
  if (!k || !Array.isArray(k.shape) || k.shape.length !== 3 || k.shape.some((s) => !Number.isInteger(s) || s < 1)) {
    throw new MobaError('E_SHAPE', `k.shape = [${k?.shape?.join(', ')}] is invalid: must be [T, Hkv, D] with every dimension >= 1`, 'k.shape');
  }
  const [T, Hkv, D] = k.shape as [number, number, number];
  checkCaps(caps, { T, Tk: T, Hq: Hkv, Hkv, D, dtype: k.dtype });
  validateLayout(layout, T);
  const W = validateKconvWeight(w, Hkv, D, caps.maxKconvWidth);
  if ((caps.kconvWeightDtype ?? 'k') === 'k') {
    if (w.dtype !== k.dtype) throw new MobaError('E_DTYPE', `kconvWeight.dtype = ${String(w.dtype)} is invalid: must equal k.dtype = ${k.dtype}`, 'kconvWeight.dtype');
  } else if (!caps.dtypes.includes(w.dtype)) {
    throw new MobaError('E_DTYPE', `kconvWeight.dtype = ${String(w.dtype)} is invalid: must be one of ${caps.dtypes.join(', ')}`, 'kconvWeight.dtype');
  }
  if (dkOut !== undefined) expectShape('dkOut', dkOut, k.shape, k.dtype);
  return { T, Hkv, D, C: Hkv * D, W, dtype: k.dtype, wDtype: w.dtype };
}

