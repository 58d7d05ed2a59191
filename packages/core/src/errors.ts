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

/**
 * Throws `E_RANGE` unless `obj` is an object whose own keys are all in `allowed` and whose values are not
 * `null` (except for the keys in `nullable`, where null means something). An unknown key is named with the
 * nearest allowed one (`unknown config key 'casual' (did you mean 'causal'?)`). `what` names one key in
 * messages (`'config key'`, `'CPU backend option'`); `undefined` values are left to the caller's defaults.
 */
export function checkKeys(obj: unknown, allowed: readonly string[], what: string, nullable: readonly string[] = []): void {
  if (obj === null || typeof obj !== 'object' || Array.isArray(obj)) {
    const got = obj === null ? 'null' : Array.isArray(obj) ? 'an array' : typeof obj;
    throw new MobaError('E_RANGE', `expected an object of ${what}s, got ${got}`, what);
  }
  for (const key of Object.keys(obj)) {
    if (!allowed.includes(key)) {
      const near = nearestKey(key, allowed);
      const hint = near === undefined ? '' : ` (did you mean '${near}'?)`;
      throw new MobaError('E_RANGE', `unknown ${what} '${key}'${hint}: allowed are ${allowed.join(', ')}`, key);
    }
    if ((obj as Record<string, unknown>)[key] === null && !nullable.includes(key)) {
      throw new MobaError('E_RANGE', `${key} = null is invalid: leave ${key} out (or undefined) for its default`, key);
    }
  }
}

/** The allowed key nearest to `key` (edit distance, case-insensitive, transpositions count 1), if any is near. */
export function nearestKey(key: string, allowed: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestD = Math.max(1, Math.floor(key.length / 3)) + 1;
  for (const a of allowed) {
    const d = editDistance(key.toLowerCase(), a.toLowerCase());
    if (d < bestD) {
      best = a;
      bestD = d;
    }
  }
  return best;
}

/** Optimal-string-alignment distance: insertions, deletions, substitutions and adjacent transpositions. */
export function editDistance(a: string, b: string): number {
  const rows: number[][] = [];
  for (let i = 0; i <= a.length; i++) {
    const row = [i];
    for (let j = 1; j <= b.length; j++) {
      if (i === 0) { row.push(j); continue; }
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let d = Math.min(rows[i - 1]![j]! + 1, row[j - 1]! + 1, rows[i - 1]![j - 1]! + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) d = Math.min(d, rows[i - 2]![j - 2]! + 1);
      row.push(d);
    }
    rows.push(row);
  }
  return rows[a.length]![b.length]!;
}
