/**
 * The field readers of the golden-case parser (golden-parse.ts, golden-ext-parse.ts): numbers, integers and
 * flat arrays checked against the length the header implies before anything is allocated, and the error types.
 */

/**
 * Limits of a case's header sizes, checked before anything is allocated: far above any real case (a JSON file
 * holding that much would be gigabytes), low enough that a lying header cannot make the reader allocate much.
 * Sizes are also checked against the arrays the file actually holds (`T·heads_q·head_dim` values in `inputs.q`).
 */
export const GOLDEN_LIMITS = {
  /** heads_q, heads_kv */
  heads: 1 << 16,
  headDim: 1 << 16,
  topk: 1 << 16,
  /** each sequence, T, block_size and every routing index: Int32 */
  int32: 2 ** 31 - 1,
  /** T·heads_q·topk, the routing `[T, heads_q, topk]` the reader builds */
  routingSlots: 1 << 26,
  /** config.kconv_width */
  kconvWidth: 1 << 10,
} as const;

/** A malformed golden case: `golden case <file> is malformed: <reason>`, one line; `field` names the culprit when known. */
export class MalformedGoldenCaseError extends Error {
  override readonly name = 'MalformedGoldenCaseError';
  constructor(readonly file: string, readonly field: string | null, readonly reason: string) {
    super(`golden case ${file} is malformed: ${reason}`);
    this.stack = this.message; // reports print the stack: keep it to the explanation
  }
}
/**
 * A case that needs an extension this reader does not know (`requires`, golden-format.md "Extensions"): it must be
 * skipped visibly, never run without the extension. `requires` lists the unknown entries.
 */
export class UnsupportedGoldenCaseError extends Error {
  override readonly name = 'UnsupportedGoldenCaseError';
  constructor(readonly file: string, readonly requires: readonly string[]) {
    super(`golden case ${file} requires ${requires.map((r) => JSON.stringify(r)).join(', ')}, which this reader does not support (it knows noncausal, kconv, seqlens_q)`);
    this.stack = this.message;
  }
}
export class Malformed extends Error {
  constructor(readonly field: string | null, message: string) {
    super(message.replace(/\s*\n\s*/g, ' '));
  }
}
/** Why `null` is refused where a number belongs (JSON has no −∞: only an empty row's lse may be written as null). */
const NULL_HINT = 'null is read as −Infinity only in expected.lse (an empty row); write non-finite values as NaN, Infinity, -Infinity (bare or quoted)';
export function num(v: unknown, what: string, i?: number, nullIsMinusInf = false): number {
  if (typeof v === 'number') return v;
  if (v === 'NaN') return NaN;
  if (v === 'Infinity') return Infinity;
  if (v === '-Infinity') return -Infinity;
  if (v === null && nullIsMinusInf) return -Infinity;
  const at = i === undefined ? what : `${what}[${i}]`;
  if (v === null) throw new Malformed(what, `${at} is null; ${NULL_HINT}`);
  throw new Malformed(what, `${at} holds ${JSON.stringify(v)?.slice(0, 40)}, expected a number`);
}
/** The flat values of array field `what`, of which there must be `n` (`why` says where `n` comes from). */
export function numbers(v: unknown, what: string, n: number, why = '', nullIsMinusInf = false): Float64Array {
  if (!Array.isArray(v)) throw new Malformed(what, `${what} is ${v === undefined ? 'missing' : v === null ? 'null' : typeof v}, expected an array of ${n} numbers`);
  const flat = (v as unknown[]).flat(8);
  if (flat.length !== n) throw new Malformed(what, `${what} has ${flat.length} values, expected ${n}${why}`);
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) out[i] = num(flat[i], what, i, nullIsMinusInf);
  return out;
}
export function int(v: unknown, what: string, min: number, max: number = GOLDEN_LIMITS.int32): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
    throw new Malformed(what.replace(/\[\d+\]/g, ''), `${what} = ${JSON.stringify(v)?.slice(0, 40)}, expected an integer in ${min}..${max}`);
  }
  return v;
}
