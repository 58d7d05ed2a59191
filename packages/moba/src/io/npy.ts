/**
 * NumPy `.npy` reader (format versions 1.0, 2.0 and 3.0, as numpy's `numpy/lib/format.py` documents them):
 *
 *   bytes 0-5   magic `\x93NUMPY`
 *   bytes 6-7   major, minor version (1.0, 2.0 or 3.0)
 *   then        header length HLEN: u16 little-endian (v1) or u32 little-endian (v2, v3)
 *   then        HLEN bytes of header: a Python dict literal, ASCII (v1, v2) or UTF-8 (v3), e.g.
 *               `{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }`, padded with spaces and ended
 *               by '\n' so that the data starts at a multiple of 64 bytes (16 in files of older numpy)
 *   then        the data, C order unless fortran_order (row-major, as moba-ts wants it).
 *
 * Accepted: descr `<f4` (f32), `<f2` (f16), `<f8` (f64, converted to f32 with a note), with byte order `<`,
 * or `=` / `|` (taken as little-endian: this reader only runs on little-endian hosts). Refused: big-endian
 * `>` and other dtypes (E_DTYPE), fortran_order True where it changes the layout (E_SHAPE). Only the header
 * is read to parse it; the data is read once, straight into its typed array.
 */
import { FILE_DTYPE_BYTES, type FileDType, type ReadContext, type TensorFile, checkFileShape, ioError, readBytes, readData } from './bytes.js';

const MAGIC = [0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59]; // \x93NUMPY
/** Headers longer than this are refused as corrupt (numpy's own reader stops at 10 000 bytes by default). */
const MAX_HEADER = 1 << 24;

const DESCR: Readonly<Record<string, FileDType>> = { f4: 'f32', f2: 'f16', f8: 'f64' };

export interface NpyHeader {
  readonly version: `${number}.${number}`;
  readonly descr: string;
  readonly fileDtype: FileDType;
  readonly fortranOrder: boolean;
  readonly shape: number[];
  /** Byte offset of the data (magic + version + length field + header). */
  readonly dataOffset: number;
}

/** Reads and checks the header of the .npy file in `ctx.source` (only the header bytes are read). */
export function readNpyHeader(ctx: ReadContext): NpyHeader {
  const pre = readBytes(ctx, 0, Math.min(ctx.source.size, 12), 'the .npy preamble');
  if (pre.length < 10 || !MAGIC.every((b, i) => pre[i] === b)) {
    throw ioError(ctx, 'E_RANGE', `not a .npy file: it must start with the magic bytes \\x93NUMPY (found ${hex(pre.subarray(0, 6))})`);
  }
  const [major, minor] = [pre[6]!, pre[7]!];
  if (major < 1 || major > 3 || minor !== 0) throw ioError(ctx, 'E_UNSUPPORTED', `.npy format version ${major}.${minor} is not supported: must be 1.0, 2.0 or 3.0`);
  const dv = new DataView(pre.buffer, pre.byteOffset, pre.length);
  if (major > 1 && pre.length < 12) throw ioError(ctx, 'E_RANGE', `file is truncated: a version ${major}.0 .npy preamble needs 12 bytes`);
  const hlen = major === 1 ? dv.getUint16(8, true) : dv.getUint32(8, true);
  const start = major === 1 ? 10 : 12;
  if (hlen > MAX_HEADER) throw ioError(ctx, 'E_RANGE', `.npy header length ${hlen} is invalid: must be at most ${MAX_HEADER} bytes`);
  const raw = readBytes(ctx, start, hlen, 'the .npy header');
  const text = major === 3 ? new TextDecoder('utf-8', { fatal: true }).decode(raw) : String.fromCharCode(...raw);
  let dict: unknown;
  try {
    dict = parsePyLiteral(text);
  } catch (e) {
    throw ioError(ctx, 'E_RANGE', `.npy header is not a Python dict literal (${(e as Error).message}): ${JSON.stringify(text.trim())}`);
  }
  if (dict === null || typeof dict !== 'object' || Array.isArray(dict) || dict instanceof PyTuple) {
    throw ioError(ctx, 'E_RANGE', `.npy header must be a dict with 'descr', 'fortran_order' and 'shape': found ${JSON.stringify(text.trim())}`);
  }
  const d = dict as Record<string, unknown>;
  for (const key of ['descr', 'fortran_order', 'shape']) {
    if (!(key in d)) throw ioError(ctx, 'E_RANGE', `.npy header has no '${key}' key: found ${JSON.stringify(text.trim())}`);
  }
  const descr = d['descr'];
  if (typeof descr !== 'string') throw ioError(ctx, 'E_DTYPE', `.npy descr ${pyRepr(descr)} (a structured dtype) is not supported: must be '<f4', '<f2' or '<f8'`);
  const order = descr[0];
  const fileDtype = DESCR[descr.slice(1)];
  if (order === '>') throw ioError(ctx, 'E_DTYPE', `.npy descr '${descr}' is big-endian: must be little-endian '<f4', '<f2' or '<f8' (save with arr.astype('<f4'))`);
  if ((order !== '<' && order !== '=' && order !== '|') || fileDtype === undefined) {
    throw ioError(ctx, 'E_DTYPE', `.npy descr '${descr}' is not supported: must be '<f4' (float32), '<f2' (float16) or '<f8' (float64)`);
  }
  const fortranOrder = d['fortran_order'];
  if (typeof fortranOrder !== 'boolean') throw ioError(ctx, 'E_RANGE', `.npy fortran_order = ${pyRepr(fortranOrder)} is invalid: must be True or False`);
  const shapeT = d['shape'];
  if (!(shapeT instanceof PyTuple)) throw ioError(ctx, 'E_SHAPE', `.npy shape = ${pyRepr(shapeT)} is invalid: must be a tuple of integers`);
  const shape = checkFileShape(ctx, shapeT.items, '.npy shape');
  if (fortranOrder && shape.filter((s) => s > 1).length > 1) {
    throw ioError(ctx, 'E_SHAPE', `.npy fortran_order is True for shape (${shape.join(', ')}): must be C order (save np.ascontiguousarray(arr))`);
  }
  return { version: `${major}.0`, descr, fileDtype, fortranOrder, shape, dataOffset: start + hlen };
}

/** The tensor in the .npy file of `ctx.source`. */
export function readNpy(ctx: ReadContext): TensorFile {
  const h = readNpyHeader(ctx);
  const n = h.shape.reduce((a, b) => a * b, 1);
  const t = readData(ctx, h.dataOffset, n, h.fileDtype, h.shape);
  const extra = ctx.source.size - h.dataOffset - n * FILE_DTYPE_BYTES[h.fileDtype];
  if (extra > 0) t.notes.push(`${extra} bytes after the data were ignored`);
  return { ...t, format: 'npy', fileDtype: h.fileDtype, notes: t.notes };
}

function hex(b: Uint8Array): string {
  return [...b].map((x) => `\\x${x.toString(16).padStart(2, '0')}`).join('');
}

/** A Python tuple (kept apart from lists: the shape must be a tuple). */
export class PyTuple {
  constructor(readonly items: unknown[]) {}
}

function pyRepr(v: unknown): string {
  if (v instanceof PyTuple) return `(${v.items.map(pyRepr).join(', ')}${v.items.length === 1 ? ',' : ''})`;
  if (typeof v === 'boolean') return v ? 'True' : 'False';
  if (typeof v === 'string') return `'${v}'`;
  if (Array.isArray(v)) return `[${v.map(pyRepr).join(', ')}]`;
  return v === null ? 'None' : typeof v === 'object' ? JSON.stringify(v) : String(v);
}

/**
 * Parses the Python literals a .npy header holds: dicts, tuples, lists, strings ('…' or "…", with
 * backslash escapes), integers (Python 2 `3L` too), True / False / None. Throws an Error saying where it failed.
 */
export function parsePyLiteral(text: string): unknown {
  let i = 0;
  const ws = (): void => {
    while (i < text.length && ' \t\n\r'.includes(text[i]!)) i++;
  };
  const fail = (what: string): never => {
    throw new Error(`${what} at character ${i}`);
  };
  const seq = (close: string, item: () => void): void => {
    for (;;) {
      ws();
      if (text[i] === close) { i++; return; }
      item();
      ws();
      if (text[i] === ',') { i++; continue; }
      if (text[i] === close) { i++; return; }
      fail(`expected ',' or '${close}'`);
    }
  };
  const value = (): unknown => {
    ws();
    const c = text[i];
    if (c === '{') {
      i++;
      const out: Record<string, unknown> = {};
      seq('}', () => {
        const k = value();
        if (typeof k !== 'string') fail('dict keys must be strings');
        ws();
        if (text[i] !== ':') fail("expected ':'");
        i++;
        out[k as string] = value();
      });
      return out;
    }
    if (c === '(' || c === '[') {
      i++;
      const items: unknown[] = [];
      seq(c === '(' ? ')' : ']', () => items.push(value()));
      return c === '(' ? new PyTuple(items) : items;
    }
    if (c === "'" || c === '"') {
      i++;
      let s = '';
      while (i < text.length && text[i] !== c) {
        if (text[i] === '\\') i++;
        s += text[i++] ?? '';
      }
      if (text[i] !== c) fail('unterminated string');
      i++;
      return s;
    }
    const m = /^(-?\d+)L?|^(True|False|None)\b/.exec(text.slice(i));
    if (m === null) return fail('unexpected input');
    i += m[0].length;
    if (m[2] !== undefined) return m[2] === 'None' ? null : m[2] === 'True';
    return Number(m[1]);
  };
  const v = value();
  ws();
  if (i !== text.length) fail('unexpected input after the literal');
  return v;
}
