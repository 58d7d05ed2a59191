/**
 * Raw tensor files: nothing but the values, little-endian, row-major, with the dtype and shape given by the
 * caller. The file must hold exactly numel × dtype size bytes (anything else is E_SHAPE naming both sizes,
 * and what shape the size would fit when it is a whole number of elements).
 */
import type { DType } from '@moba/core';
import { FILE_DTYPE_BYTES, type ReadContext, type TensorFile, checkFileShape, ioError, readData } from './bytes.js';

const RAW_DTYPES: readonly DType[] = ['f32', 'f16', 'bf16'];

export function readRaw(ctx: ReadContext, dtype: unknown, shape: unknown): TensorFile {
  if (!RAW_DTYPES.includes(dtype as DType)) {
    throw ioError(ctx, 'E_DTYPE', `raw dtype = ${String(dtype)} is invalid: must be one of ${RAW_DTYPES.join(', ')}`);
  }
  const dt = dtype as DType;
  if (shape === undefined) throw ioError(ctx, 'E_SHAPE', 'a raw file needs a shape (e.g. [tokens, heads, headDim])');
  const s = checkFileShape(ctx, shape, 'raw shape');
  const n = s.reduce((a, b) => a * b, 1);
  const size = FILE_DTYPE_BYTES[dt];
  if (ctx.source.size !== n * size) {
    const whole = ctx.source.size % size === 0 ? ` (it holds ${ctx.source.size / size} ${dt} values)` : ` (not a whole number of ${dt} values)`;
    throw ioError(ctx, 'E_SHAPE', `raw file has ${ctx.source.size} bytes${whole}, but shape [${s.join(', ')}] of ${dt} needs exactly ${n * size}`);
  }
  return { ...readData(ctx, 0, n, dt, s), format: 'raw', fileDtype: dt };
}
