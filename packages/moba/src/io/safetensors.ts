/**
 * safetensors reader (the format of huggingface/safetensors):
 *
 *   bytes 0-7   N, the header size: u64 little-endian
 *   bytes 8…    N bytes of UTF-8 JSON (may be padded with trailing spaces):
 *               { "<name>": { "dtype": "F32" | "F16" | "BF16" | "F64" | …, "shape": [d0, d1, …],
 *                             "data_offsets": [begin, end] }, …, "__metadata__"?: { "<key>": "<string>" } }
 *   then        the byte buffer; a tensor's bytes are [8 + N + begin, 8 + N + end), little-endian, row-major.
 *
 * Checked: N fits the file, every tensor's offsets lie inside the buffer with begin <= end, and the chosen
 * tensor's byte count is numel × dtype size. Only the 8 + N header bytes are read to parse it.
 */
import { FILE_DTYPE_BYTES, type FileDType, type ReadContext, type TensorFile, checkFileShape, ioError, readBytes, readData } from './bytes.js';

/** Headers larger than this are refused as corrupt (the reference implementation stops at 100 MB too). */
const MAX_HEADER = 100_000_000;
const DTYPES: Readonly<Record<string, FileDType>> = { F32: 'f32', F16: 'f16', BF16: 'bf16', F64: 'f64' };

export interface SafetensorsEntry {
  readonly dtype: string;
  readonly shape: number[];
  readonly dataOffsets: readonly [number, number];
}

export interface SafetensorsHeader {
  readonly tensors: ReadonlyMap<string, SafetensorsEntry>;
  readonly metadata?: Readonly<Record<string, string>>;
  /** Byte offset of the buffer (8 + N). */
  readonly dataOffset: number;
}

/** Reads and checks the header of the safetensors file in `ctx.source` (only 8 + N bytes are read). */
export function readSafetensorsHeader(ctx: ReadContext): SafetensorsHeader {
  const pre = readBytes(ctx, 0, 8, 'the safetensors header size (8 bytes)');
  const big = new DataView(pre.buffer).getBigUint64(0, true);
  if (big > BigInt(Math.min(MAX_HEADER, ctx.source.size - 8))) {
    throw ioError(ctx, 'E_RANGE', `safetensors header size ${big} is invalid: must be at most ${Math.min(MAX_HEADER, ctx.source.size - 8)} (the file has ${ctx.source.size} bytes)`);
  }
  const n = Number(big);
  const text = new TextDecoder('utf-8').decode(readBytes(ctx, 8, n, 'the safetensors header'));
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw ioError(ctx, 'E_RANGE', `safetensors header is not valid JSON (${(e as Error).message})`);
  }
  if (json === null || typeof json !== 'object' || Array.isArray(json)) throw ioError(ctx, 'E_RANGE', 'safetensors header must be a JSON object of tensors');
  const bufLen = ctx.source.size - 8 - n;
  const tensors = new Map<string, SafetensorsEntry>();
  let metadata: Record<string, string> | undefined;
  for (const [name, e] of Object.entries(json as Record<string, unknown>)) {
    if (name === '__metadata__') {
      if (e === null || typeof e !== 'object' || Array.isArray(e) || !Object.values(e).every((v) => typeof v === 'string')) {
        throw ioError(ctx, 'E_RANGE', 'safetensors __metadata__ must be an object of string values');
      }
      metadata = e as Record<string, string>;
      continue;
    }
    const entry = (e ?? {}) as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
    if (typeof entry.dtype !== 'string') throw ioError(ctx, 'E_RANGE', `safetensors tensor '${name}' has no dtype string`);
    const shape = checkFileShape(ctx, entry.shape, `safetensors tensor '${name}' shape`);
    const off = entry.data_offsets;
    if (!Array.isArray(off) || off.length !== 2 || !off.every((x) => Number.isSafeInteger(x) && x >= 0) || off[0] > off[1] || off[1] > bufLen) {
      throw ioError(ctx, 'E_RANGE', `safetensors tensor '${name}' data_offsets = ${JSON.stringify(off)} is invalid: must be [begin, end] with 0 <= begin <= end <= ${bufLen} (the buffer's size)`);
    }
    tensors.set(name, { dtype: entry.dtype, shape, dataOffsets: [off[0] as number, off[1] as number] });
  }
  return { tensors, ...(metadata === undefined ? {} : { metadata }), dataOffset: 8 + n };
}

/**
 * The tensor `name` of the safetensors file in `ctx.source`; without a name, the file's only tensor. An
 * unknown or missing name is E_RANGE listing the names present.
 */
export function readSafetensors(ctx: ReadContext, name?: string): TensorFile {
  const h = readSafetensorsHeader(ctx);
  const names = [...h.tensors.keys()];
  const list = names.length === 0 ? 'it holds no tensors' : `it holds ${names.map((x) => `'${x}'`).join(', ')}`;
  if (name === undefined && names.length !== 1) throw ioError(ctx, 'E_RANGE', `a tensor name is needed to pick one tensor of the file: ${list}`);
  const key = name ?? names[0]!;
  const e = h.tensors.get(key);
  if (e === undefined) throw ioError(ctx, 'E_RANGE', `tensor '${key}' is not in the file: ${list}`);
  const fileDtype = DTYPES[e.dtype];
  if (fileDtype === undefined) throw ioError(ctx, 'E_DTYPE', `tensor '${key}' has dtype ${e.dtype}: must be F32, F16, BF16 or F64 (F64 is converted to f32)`);
  const n = e.shape.reduce((a, b) => a * b, 1);
  const [begin, end] = e.dataOffsets;
  if (end - begin !== n * FILE_DTYPE_BYTES[fileDtype]) {
    throw ioError(ctx, 'E_SHAPE', `tensor '${key}' has ${end - begin} data bytes but shape [${e.shape.join(', ')}] of ${e.dtype} needs ${n * FILE_DTYPE_BYTES[fileDtype]}`);
  }
  const t = readData(ctx, h.dataOffset + begin, n, fileDtype, e.shape);
  return { ...t, format: 'safetensors', fileDtype, name: key, ...(h.metadata === undefined ? {} : { metadata: h.metadata }) };
}
