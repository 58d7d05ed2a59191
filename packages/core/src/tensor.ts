/**
 * Host tensors: a dtype, a row-major shape and a typed array. f32 data is a Float32Array; f16 and
 * bf16 data are raw bits in a Uint16Array (`HostTensor<'f32'>` holds a Float32Array, `HostTensor<'f16'>` a
 * Uint16Array; `HostTensor` alone either). A runtime's Float16Array is accepted for f16 as its bits.
 */
import { type DType, bf16ToF32, f16ToF32, f32ToBf16, f32ToF16 } from './dtype.js';
import { MobaError, shapeStr } from './errors.js';

/**
 * The data array of a tensor of dtype `D`: a Float32Array for f32, raw bits in a Uint16Array for f16 and
 * bf16, either for a dtype not known statically.
 */
export type HostData<D extends DType = DType> = [D] extends ['f32'] ? Float32Array : [D] extends ['f16' | 'bf16'] ? Uint16Array : Float32Array | Uint16Array;

/** A runtime's `Float16Array` (ES2025; Node 20 has none), as far as moba-ts needs it: a view of binary16 values. */
export interface Float16ArrayLike extends ArrayBufferView {
  readonly length: number;
  readonly [Symbol.toStringTag]: 'Float16Array';
}

/** What `hostTensor` takes as data for dtype `D`: `HostData<D>`, or for f16 also a Float16Array (viewed as its bits). */
export type HostInput<D extends DType = DType> = HostData<D> | ('f16' extends D ? Float16ArrayLike : never);

export interface HostTensor<D extends DType = DType> {
  readonly dtype: D;
  readonly shape: readonly number[];
  readonly data: HostData<D>;
}

export function numel(shape: readonly number[]): number {
  let n = 1;
  for (const s of shape) n *= s;
  return n;
}

/** The runtime's Float16Array constructor, looked up when called; undefined where there is none (Node 20). */
export function float16ArrayCtor(): (abstract new (...args: never[]) => Float16ArrayLike) | undefined {
  const c = (globalThis as { Float16Array?: unknown }).Float16Array;
  return typeof c === 'function' ? (c as abstract new (...args: never[]) => Float16ArrayLike) : undefined;
}

/** Whether `x` is a Float16Array of this runtime (always false where the runtime has none). */
export function isFloat16Array(x: unknown): x is Float16ArrayLike {
  const C = float16ArrayCtor();
  return C !== undefined && x instanceof C;
}

/** The bits of a Float16Array as a Uint16Array over the same memory (binary16 is what both hold); other arrays as they are. */
function bitsOf<T>(data: T | Float16ArrayLike): T | Uint16Array {
  return isFloat16Array(data) ? new Uint16Array(data.buffer, data.byteOffset, data.length) : data;
}

/**
 * Builds a HostTensor, checking that the array kind and length fit the dtype and shape; zero-filled without
 * `data`, else over `data` itself (not a copy). For f16, a Float16Array (where the runtime has one) is taken
 * as its bits: the tensor's data is a Uint16Array view of the same memory. The result's type follows `dtype`
 * (`hostTensor('f32', …)` is a `HostTensor<'f32'>`); an array of the wrong kind for it is E_DTYPE.
 */
export function hostTensor<D extends DType>(dtype: D, shape: readonly number[], data?: HostInput): HostTensor<D> {
  for (const s of shape) {
    if (!Number.isInteger(s) || s < 0) throw new MobaError('E_SHAPE', `shape ${shapeStr(shape)} is invalid: dimensions must be integers >= 0`, 'shape');
  }
  const n = numel(shape);
  const raw = data === undefined ? (dtype === 'f32' ? new Float32Array(n) : new Uint16Array(n)) : dtype === 'f16' ? bitsOf(data) : data;
  const t = { dtype, shape: [...shape], data: raw } as unknown as HostTensor<D>;
  checkTensor('tensor', t);
  return t;
}

/**
 * `t` checked as a HostTensor named `param`; a Float16Array of f16 data is given as a Uint16Array view of its
 * bits (a new tensor object), everything else as it is.
 */
export function asHostTensor<D extends DType>(param: string, t: HostTensor<D> | { readonly dtype: D; readonly shape: readonly number[]; readonly data: HostInput<D> }): HostTensor<D> {
  const h = t !== null && typeof t === 'object' && t.dtype === 'f16' && isFloat16Array(t.data) ? { dtype: t.dtype, shape: t.shape, data: bitsOf(t.data) } : t;
  checkTensor(param, h as HostTensor);
  return h as HostTensor<D>;
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
    const f16 = t.dtype === 'f16' && float16ArrayCtor() !== undefined ? ' (or a Float16Array, given to hostTensor())' : '';
    const want = wantF32 ? 'a Float32Array' : `a Uint16Array of raw ${t.dtype} bits${f16}`;
    const got = ArrayBuffer.isView(t.data) ? (t.data as object).constructor.name : String(t.data);
    throw new MobaError('E_DTYPE', `${param}.data is ${got}: must be ${want} for dtype ${t.dtype}`, `${param}.data`);
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

/** Encodes numbers (f64 or f32) into a tensor of `dtype`, each rounded once to nearest, ties to even. */
export function fromFloat<D extends DType>(values: ArrayLike<number>, dtype: D, shape: readonly number[]): HostTensor<D> {
  if (dtype === 'f32') return hostTensor(dtype, shape, Float32Array.from(values));
  const enc = dtype === 'f16' ? f32ToF16 : f32ToBf16;
  const out = new Uint16Array(values.length);
  for (let i = 0; i < values.length; i++) out[i] = enc(values[i]!);
  return hostTensor(dtype, shape, out);
}

/** Converts a tensor to another dtype (decoded exactly, then rounded once). */
export function castTensor<D extends DType>(t: HostTensor, dtype: D): HostTensor<D> {
  return t.dtype === dtype ? (t as HostTensor<D>) : fromFloat(toFloat32(t), dtype, t.shape);
}

/**
 * Packs a fixed-length batch `[B, N, H, D]` into the varlen form `[B·N, H, D]` and returns the
 * matching `cuSeqlens = [0, N, 2N, …]` (SPEC §1). The data is shared, not copied.
 */
export function fromBatched<D extends DType>(t: HostTensor<D>): { tensor: HostTensor<D>; cuSeqlens: Int32Array } {
  if (t.shape.length !== 4) throw new MobaError('E_SHAPE', `batched tensor must be [B, N, H, D], got ${shapeStr(t.shape)}`, 'shape');
  const [b, n, h, d] = t.shape as [number, number, number, number];
  return { tensor: { dtype: t.dtype, shape: [b * n, h, d], data: t.data }, cuSeqlens: uniformSeqlens(b, n) };
}

/** `cuSeqlens` for `batch` sequences of `n` tokens each. */
export function uniformSeqlens(batch: number, n: number): Int32Array {
  return Int32Array.from({ length: batch + 1 }, (_, i) => i * n);
}
