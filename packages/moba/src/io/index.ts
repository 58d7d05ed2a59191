/**
 * Tensor files for `moba analyze`: `readTensor({ path, … })` reads one tensor from a `.npy`, `.safetensors`
 * or raw file into the HostTensor layout of @moba/core; `parseTensor(bytes, …)` does the same for bytes in
 * memory (no node:fs, so it also works in a browser). The parsers are small and documented (npy.ts,
 * safetensors.ts, raw.ts); no npm dependency. A file is read header first, then its data once, straight into
 * the result's typed array, in chunks of at most 1 GiB: multi-GB files are fine. node:fs is looked up when
 * `readTensor` runs (`process.getBuiltinModule`), not imported, so browser bundles of moba-ts stay free of it.
 */
import type * as NodeFs from 'node:fs';
import { type DType, MobaError, checkKeys } from '@moba/core';
import { type ByteSource, type ReadContext, type TensorFile, ioError, memorySource } from './bytes.js';
import { readNpy } from './npy.js';
import { readRaw } from './raw.js';
import { readSafetensors } from './safetensors.js';

export type { ByteSource, FileDType, TensorFile } from './bytes.js';
export { memorySource } from './bytes.js';

export type TensorFileFormat = 'npy' | 'safetensors' | 'raw';
export const TENSOR_FILE_FORMATS: readonly TensorFileFormat[] = ['npy', 'safetensors', 'raw'];

/** Which tensor to read, and how. */
export interface TensorFileSpec {
  /** The file. */
  readonly path: string;
  /** The format; by the extension when absent: `.npy`, `.safetensors`, `.raw` / `.bin` (raw). */
  readonly format?: TensorFileFormat;
  /** safetensors: the tensor's name (may be left out when the file holds one tensor). */
  readonly name?: string;
  /** raw: the stored dtype (default f32). npy / safetensors: when given, the file's dtype must be this one. */
  readonly dtype?: DType;
  /** raw: the shape (required). npy / safetensors: when given, the file's shape must be this one. */
  readonly shape?: readonly number[];
  /** The parameter the tensor is for (`'q'`, `'k'`, `'v'`), named in errors; the path when absent. */
  readonly param?: string;
}

const SPEC_KEYS = ['path', 'format', 'name', 'dtype', 'shape', 'param'];
const EXTENSIONS: Readonly<Record<string, TensorFileFormat>> = { '.npy': 'npy', '.safetensors': 'safetensors', '.raw': 'raw', '.bin': 'raw' };
/** Largest single read (Node refuses reads of 2 GiB or more). */
const READ_CHUNK = 1 << 30;

/** The format `spec` names, else the one its path's extension implies (E_RANGE when neither says). */
export function tensorFileFormat(spec: Pick<TensorFileSpec, 'path' | 'format' | 'param'>): TensorFileFormat {
  const who = spec.param ?? spec.path;
  if (spec.format !== undefined) {
    if (!TENSOR_FILE_FORMATS.includes(spec.format)) {
      throw new MobaError('E_RANGE', `${who}: format = ${String(spec.format)} is invalid: must be one of ${TENSOR_FILE_FORMATS.join(', ')}`, who);
    }
    return spec.format;
  }
  const m = /\.[A-Za-z0-9]+$/.exec(spec.path);
  const f = m === null ? undefined : EXTENSIONS[m[0].toLowerCase()];
  if (f === undefined) {
    throw new MobaError('E_RANGE', `${who}: cannot tell the format of '${spec.path}' from its extension: must end in ${Object.keys(EXTENSIONS).join(', ')}, or give the format (${TENSOR_FILE_FORMATS.join(', ')})`, who);
  }
  return f;
}

/** Reads the tensor `spec` describes from its file (synchronously: a header read, then one read of the data). */
export function readTensor(spec: TensorFileSpec): TensorFile {
  checkSpec(spec);
  const format = tensorFileFormat(spec);
  const fs = nodeFs();
  let fd: number;
  try {
    fd = fs.openSync(spec.path, 'r');
  } catch (e) {
    const who = spec.param ?? spec.path;
    throw new MobaError('E_RANGE', `${who}: cannot open '${spec.path}': ${(e as Error).message}`, who);
  }
  try {
    return readFrom(fileSource(fs, fd, spec.path), spec, format);
  } finally {
    fs.closeSync(fd);
  }
}

/** Reads the tensor `spec` describes from `bytes` (the file's contents; `spec.path` names it in errors). */
export function parseTensor(bytes: Uint8Array, spec: TensorFileSpec): TensorFile {
  checkSpec(spec);
  return readFrom(memorySource(bytes, spec.path), spec, tensorFileFormat(spec));
}

function checkSpec(spec: TensorFileSpec): void {
  checkKeys(spec, SPEC_KEYS, 'tensor file option');
  if (typeof spec.path !== 'string' || spec.path === '') throw new MobaError('E_RANGE', `path = ${String(spec.path)} is invalid: must be a file path`, spec.param ?? 'path');
}

function readFrom(source: ByteSource, spec: TensorFileSpec, format: TensorFileFormat): TensorFile {
  const ctx: ReadContext = { source, ...(spec.param === undefined ? {} : { param: spec.param }) };
  if (spec.name !== undefined && format !== 'safetensors') throw ioError(ctx, 'E_RANGE', `name = '${spec.name}' is only for safetensors files: this one is ${format}`);
  if (format === 'raw') return readRaw(ctx, spec.dtype ?? 'f32', spec.shape);
  const t = format === 'npy' ? readNpy(ctx) : readSafetensors(ctx, spec.name);
  if (spec.dtype !== undefined && spec.dtype !== t.dtype) {
    throw ioError(ctx, 'E_DTYPE', `the file holds ${t.fileDtype}${t.fileDtype === t.dtype ? '' : ` (read as ${t.dtype})`}, not dtype = ${spec.dtype}: leave dtype out or give ${t.dtype}`);
  }
  if (spec.shape !== undefined && (spec.shape.length !== t.shape.length || spec.shape.some((s, i) => s !== t.shape[i]))) {
    throw ioError(ctx, 'E_SHAPE', `the file holds shape [${t.shape.join(', ')}], not shape = [${spec.shape.join(', ')}]`);
  }
  return t;
}

/** Node's fs module; E_UNSUPPORTED where the runtime has none (a browser: read the bytes and call parseTensor). */
function nodeFs(): typeof NodeFs {
  const proc = (globalThis as { process?: { getBuiltinModule?: (id: string) => unknown } }).process;
  const fs = proc?.getBuiltinModule?.('fs') as typeof NodeFs | undefined;
  if (fs === undefined) throw new MobaError('E_UNSUPPORTED', 'readTensor reads files through Node (process.getBuiltinModule, Node >= 20.16): elsewhere pass the file\'s bytes to parseTensor', 'path');
  return fs;
}

/** An open file as a ByteSource; reads go straight into the caller's buffer (at most 1 GiB per read). */
function fileSource(fs: typeof NodeFs, fd: number, path: string): ByteSource {
  const size = fs.fstatSync(fd).size;
  return {
    size,
    label: path,
    readInto(offset, target) {
      let done = 0;
      while (done < target.length) {
        const n = fs.readSync(fd, target, done, Math.min(READ_CHUNK, target.length - done), offset + done);
        if (n === 0) throw new MobaError('E_RANGE', `${path}: file ended at byte ${offset + done} while ${target.length - done} more bytes were expected (was it changed while being read?)`, path);
        done += n;
      }
    },
  };
}
