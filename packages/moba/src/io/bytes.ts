/**
 * What the tensor file parsers (npy.ts, safetensors.ts, raw.ts) share: a `ByteSource` (random-access
 * reads, so a parser reads a header without the whole file; a file source lives in index.ts, the only
 * module that touches node:fs), the result type, and the step that turns a little-endian data region into
 * the HostTensor layout of @moba/core (Float32Array for f32, raw bits in a Uint16Array for f16 / bf16).
 */
import { type DType, MobaError, type MobaErrorCode, type HostTensor } from '@moba/core';

/** Random-access bytes: a file (index.ts) or memory (`memorySource`). */
export interface ByteSource {
  /** Total size in bytes. */
  readonly size: number;
  /** Where errors say the bytes came from (the file's path, or `<memory>`). */
  readonly label: string;
  /** Copies `target.length` bytes starting at `offset` into `target`; throws when fewer exist. */
  readInto(offset: number, target: Uint8Array): void;
  /** The bytes `[offset, offset + length)` without a copy, where the source can (memory); undefined otherwise. */
  view?(offset: number, length: number): Uint8Array;
}

/** The dtypes a file may hold that the readers accept: f64 is converted to f32 (with a note). */
export type FileDType = DType | 'f64';

/** A tensor read from a file: a HostTensor plus where it came from. */
export interface TensorFile<D extends DType = DType> extends HostTensor<D> {
  readonly format: 'npy' | 'safetensors' | 'raw';
  /** The dtype stored in the file (`'f64'` when the data was converted to f32). */
  readonly fileDtype: FileDType;
  /** The tensor's name (safetensors). */
  readonly name?: string;
  /** safetensors `__metadata__` (string to string), when the file has one. */
  readonly metadata?: Readonly<Record<string, string>>;
  /** What the reader did that the caller may want to tell the user (an f64 → f32 conversion, trailing bytes). */
  readonly notes: readonly string[];
}

/** Who is reading what, for error messages: `param` ('q', 'k', 'v'), else the source's label. */
export interface ReadContext {
  readonly source: ByteSource;
  readonly param?: string;
}

/** A MobaError whose message starts with the parameter and the file (`k (keys.npy): …`). */
export function ioError(ctx: ReadContext, code: MobaErrorCode, message: string): MobaError {
  const who = ctx.param === undefined ? ctx.source.label : `${ctx.param} (${ctx.source.label})`;
  return new MobaError(code, `${who}: ${message}`, ctx.param ?? ctx.source.label);
}

/** Bytes in memory as a ByteSource; `view` hands out subarrays of `bytes` itself. */
export function memorySource(bytes: Uint8Array, label = '<memory>'): ByteSource {
  return {
    size: bytes.length,
    label,
    readInto(offset, target) {
      if (offset < 0 || offset + target.length > bytes.length) throw new RangeError(`read of ${target.length} bytes at ${offset} is past the end (${bytes.length})`);
      target.set(bytes.subarray(offset, offset + target.length));
    },
    view: (offset, length) => bytes.subarray(offset, offset + length),
  };
}

/** `length` bytes at `offset` in a fresh buffer (headers: small). Refuses a read past the end with E_RANGE. */
export function readBytes(ctx: ReadContext, offset: number, length: number, what: string): Uint8Array {
  if (offset + length > ctx.source.size) {
    throw ioError(ctx, 'E_RANGE', `file is truncated: ${what} needs bytes [${offset}, ${offset + length}) but the file has ${ctx.source.size} bytes`);
  }
  const out = new Uint8Array(length);
  ctx.source.readInto(offset, out);
  return out;
}

export const FILE_DTYPE_BYTES: Readonly<Record<FileDType, number>> = { f32: 4, f16: 2, bf16: 2, f64: 8 };

const LITTLE_ENDIAN_HOST = new Uint8Array(Uint16Array.of(1).buffer)[0] === 1;

/** Bytes per f64 chunk converted at a time (the f64 data is never held whole next to its f32 copy). */
const F64_CHUNK = 1 << 23;

/**
 * The tensor of `n` elements of `fileDtype` stored little-endian at `[offset, offset + n × size)`: a view of
 * the source's memory when it has one at an aligned offset, else the data read once into a fresh, aligned
 * buffer. f64 is read in chunks and rounded to f32 (to nearest, ties to even), with a note.
 */
export function readData(ctx: ReadContext, offset: number, n: number, fileDtype: FileDType, shape: readonly number[]): { dtype: DType; shape: number[]; data: Float32Array | Uint16Array; notes: string[] } {
  if (!LITTLE_ENDIAN_HOST) throw ioError(ctx, 'E_UNSUPPORTED', 'the tensor readers need a little-endian host');
  const size = FILE_DTYPE_BYTES[fileDtype];
  const bytes = n * size;
  if (offset + bytes > ctx.source.size) {
    throw ioError(ctx, 'E_SHAPE', `file is truncated: shape [${shape.join(', ')}] of ${fileDtype} needs ${bytes} data bytes at offset ${offset}, but only ${Math.max(0, ctx.source.size - offset)} are there`);
  }
  if (fileDtype === 'f64') return { dtype: 'f32', shape: [...shape], data: readF64AsF32(ctx, offset, n), notes: [`converted from f64 to f32 (${n} values, rounded to nearest)`] };
  const dtype: DType = fileDtype;
  const Ctor = dtype === 'f32' ? Float32Array : Uint16Array;
  const view = ctx.source.view?.(offset, bytes);
  let data: Float32Array | Uint16Array;
  if (view !== undefined && view.byteOffset % size === 0) {
    data = new Ctor(view.buffer as ArrayBuffer, view.byteOffset, n);
  } else if (view !== undefined) {
    data = new Ctor(view.slice().buffer, 0, n);
  } else {
    const buf = allocate(ctx, bytes);
    ctx.source.readInto(offset, new Uint8Array(buf));
    data = new Ctor(buf, 0, n);
  }
  return { dtype, shape: [...shape], data, notes: [] };
}

/** A buffer of `bytes`; E_MEMORY (naming the size) where the runtime cannot allocate it. */
function allocate(ctx: ReadContext, bytes: number): ArrayBuffer {
  try {
    return new ArrayBuffer(bytes);
  } catch (e) {
    throw ioError(ctx, 'E_MEMORY', `cannot allocate ${bytes} bytes for the tensor's data (${(e as Error).message})`);
  }
}

function readF64AsF32(ctx: ReadContext, offset: number, n: number): Float32Array {
  const out = new Float32Array(allocate(ctx, n * 4));
  const scratch = new Float64Array(Math.min(n, F64_CHUNK / 8));
  const scratchBytes = new Uint8Array(scratch.buffer);
  for (let i = 0; i < n; i += scratch.length) {
    const m = Math.min(scratch.length, n - i);
    ctx.source.readInto(offset + i * 8, scratchBytes.subarray(0, m * 8));
    out.set(m === scratch.length ? scratch : scratch.subarray(0, m), i);
  }
  return out;
}

/** Throws E_RANGE unless `shape` is an array of integers >= 0 whose product is a safe integer. */
export function checkFileShape(ctx: ReadContext, shape: unknown, where: string): number[] {
  if (!Array.isArray(shape) || !shape.every((s) => typeof s === 'number' && Number.isSafeInteger(s) && s >= 0)) {
    throw ioError(ctx, 'E_SHAPE', `${where} = ${JSON.stringify(shape)} is invalid: must be a list of integers >= 0`);
  }
  let n = 1;
  for (const s of shape as number[]) n *= s;
  if (!Number.isSafeInteger(n)) throw ioError(ctx, 'E_SHAPE', `${where} = [${(shape as number[]).join(', ')}] has more than 2^53 elements`);
  return shape as number[];
}
