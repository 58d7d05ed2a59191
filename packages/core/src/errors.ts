/**
 * The one error type of moba-ts. Every validation failure, unsupported request, out-of-memory plan
 * and device fault is a `MobaError` with a stable `code`; the message names the parameter, the value
 * that was given and what is allowed.
 */
export type MobaErrorCode = 'E_SHAPE' | 'E_RANGE' | 'E_DTYPE' | 'E_UNSUPPORTED' | 'E_MEMORY' | 'E_DEVICE';

export class MobaError extends Error {
  override readonly name = 'MobaError';
  constructor(
    readonly code: MobaErrorCode,
    message: string,
    /** The parameter at fault (`'topk'`, `'q.shape'`, …), when there is one. */
    readonly param?: string,
  ) {
    super(`[${code}] ${message}`);
  }
}

/** Throws `E_RANGE` unless `value` is an integer in `[min, max]`. */
export function checkInt(param: string, value: unknown, min: number, max = Number.MAX_SAFE_INTEGER): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    const range = max === Number.MAX_SAFE_INTEGER ? `an integer >= ${min}` : `an integer in [${min}, ${max}]`;
    throw new MobaError('E_RANGE', `${param} = ${String(value)} is invalid: must be ${range}`, param);
  }
  return value;
}

export function shapeStr(shape: readonly number[]): string {
  return `[${shape.join(', ')}]`;
}
