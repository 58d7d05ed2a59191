/**
 * scijs `ndarray` interop without a hard dependency: `fromNdarray` reads any strided ndarray-like view
 * into a contiguous HostTensor; `toNdarray` wraps a tensor's data with the caller's `ndarray` factory.
 */
import type { DType } from './dtype.js';
import { MobaError } from './errors.js';
import { type HostTensor, hostTensor, numel } from './tensor.js';

/** The structural part of a scijs ndarray that we read. */
export interface NdarrayLike {
  readonly data: ArrayLike<number>;
  readonly shape: readonly number[];
  readonly stride: readonly number[];
  readonly offset: number;
}

/**
 * Copies a (possibly strided, transposed or sliced) ndarray into a row-major HostTensor.
 * Float data becomes f32; a Uint16Array is taken as raw f16/bf16 bits and needs `dtype`.
 */
export function fromNdarray(a: NdarrayLike, dtype?: DType): HostTensor {
  const bits = a.data instanceof Uint16Array;
  const dt: DType = dtype ?? 'f32';
  if (bits ? dt === 'f32' : dt !== 'f32') {
    throw new MobaError('E_DTYPE', `fromNdarray: ${bits ? 'Uint16Array data holds f16/bf16 bits: pass dtype f16 or bf16' : `float data converts to f32 only, not ${dt}`}`, 'dtype');
  }
  const shape = [...a.shape];
  const out = hostTensor(dt, shape);
  const n = numel(shape);
  const idx = new Array<number>(shape.length).fill(0);
  for (let i = 0; i < n; i++) {
    let src = a.offset;
    for (let d = 0; d < shape.length; d++) src += idx[d]! * a.stride[d]!;
    out.data[i] = a.data[src]!;
    for (let d = shape.length - 1; d >= 0; d--) {
      if (++idx[d]! < shape[d]!) break;
      idx[d] = 0;
    }
  }
  return out;
}

/** Wraps a tensor's data (no copy) with scijs `ndarray` (pass its default export). */
export function toNdarray<R>(t: HostTensor, ndarray: (data: Float32Array | Uint16Array, shape: number[]) => R): R {
  return ndarray(t.data, [...t.shape]);
}
