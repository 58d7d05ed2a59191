/**
 * Host tensors: a dtype, a row-major shape and a typed array. f32 data is a Float32Array; f16 and
 * bf16 data are raw bits in a Uint16Array.
 */
import { type DType, bf16ToF32, f16ToF32, f32ToBf16, f32ToF16 } from './dtype.js';
import { MobaError, shapeStr } from './errors.js';

export interface HostTensor {
  readonly dtype: DType;
  readonly shape: readonly number[];
  readonly data: Float32Array | Uint16Array;
}

export function numel(shape: readonly number[]): number {
  let n = 1;
  for (const s of shape) n *= s;
  return n;
}

/** Builds a HostTensor, checking that the array kind and length fit the dtype and shape. */
export function hostTensor(dtype: DType, shape: readonly number[], data?: Float32Array | Uint16Array): HostTensor {
  for (const s of shape) {
    if (!Number.isInteger(s) || s < 0) throw new MobaError('E_SHAPE', `shape ${shapeStr(shape)} is invalid: dimensions must be integers >= 0`, 'shape');
  }
  const n = numel(shape);
  const d = data ?? (dtype === 'f32' ? new Float32Array(n) : new Uint16Array(n));
  checkTensor('tensor', { dtype, shape, data: d });
  return { dtype, shape: [...shape], data: d };
}

/** Throws unless `t` is a well-formed HostTensor (array kind matches dtype, length matches shape). */
export function checkTensor(param: string, t: HostTensor): void {
  if (t === null || typeof t !== 'object' || !Array.isArray(t.shape)) {
    throw new MobaError('E_SHAPE', `${param} must be a tensor { dtype, shape, data }`, param);
  }
  if (t.dtype !== 'f32' && t.dtype !== 'f16' && t.dtype !== 'bf16') {
    throw new MobaError('E_DTYPE', `${param}.dtype = ${String(t.dtype)} is invalid: must be one of f32, f16, bf16`, `${param}.dtype`);
  }
  const wantF32 = t.dtype === 'f32';
  if (wantF32 ? !(t.data instanceof Float32Array) : !(t.data instanceof Uint16Array)) {
    throw new MobaError('E_DTYPE', `${param}.data must be a ${wantF32 ? 'Float32Array' : 'Uint16Array'} for dtype ${t.dtype}`, `${param}.data`);
  }
  if (t.data.length !== numel(t.shape)) {
    throw new MobaError('E_SHAPE', `${param}.data has ${t.data.length} elements but shape ${shapeStr(t.shape)} needs ${numel(t.shape)}`, `${param}.shape`);
  }
}

/** Decodes any tensor to f32 (a copy for f16/bf16; `data` itself for f32 unless `copy`). */
export function toFloat32(t: HostTensor, copy = false): Float32Array {
  if (t.dtype === 'f32') return copy ? (t.data as Float32Array).slice() : (t.data as Float32Array);
  const src = t.data as Uint16Array;
  const out = new Float32Array(src.length);
  const dec = t.dtype === 'f16' ? f16ToF32 : bf16ToF32;
  for (let i = 0; i < src.length; i++) out[i] = dec(src[i]!);
  return out;
}

/** Decodes any tensor to f64. */
export function toFloat64(t: HostTensor): Float64Array {
  return Float64Array.from(toFloat32(t));
}

/** Encodes f32/f64 values into a tensor of `dtype` (round to nearest even). */
export function fromFloat(values: ArrayLike<number>, dtype: DType, shape: readonly number[]): HostTensor {
  if (dtype === 'f32') return hostTensor('f32', shape, Float32Array.from(values));
  const enc = dtype === 'f16' ? f32ToF16 : f32ToBf16;
  const out = new Uint16Array(values.length);
  for (let i = 0; i < values.length; i++) out[i] = enc(values[i]!);
  return hostTensor(dtype, shape, out);
}

/** Converts a tensor to another dtype (through f32). */
export function castTensor(t: HostTensor, dtype: DType): HostTensor {
  return t.dtype === dtype ? t : fromFloat(toFloat32(t), dtype, t.shape);
}

/**
 * Packs a fixed-length batch `[B, N, H, D]` into the varlen form `[B·N, H, D]` and returns the
 * matching `cuSeqlens = [0, N, 2N, …]` (SPEC §1). The data is shared, not copied.
 */
export function fromBatched(t: HostTensor): { tensor: HostTensor; cuSeqlens: Int32Array } {
  if (t.shape.length !== 4) throw new MobaError('E_SHAPE', `batched tensor must be [B, N, H, D], got ${shapeStr(t.shape)}`, 'shape');
  const [b, n, h, d] = t.shape as [number, number, number, number];
  return { tensor: { dtype: t.dtype, shape: [b * n, h, d], data: t.data }, cuSeqlens: uniformSeqlens(b, n) };
}

/** `cuSeqlens` for `batch` sequences of `n` tokens each. */
export function uniformSeqlens(batch: number, n: number): Int32Array {
  return Int32Array.from({ length: batch + 1 }, (_, i) => i * n);
}
