/**
 * The golden-case parser (golden-format.md), free of Node APIs so the browser entry shares it:
 * `parseGoldenCase(json, name)` checks a parsed JSON object and fails with a message naming the case
 * and the field. `golden.ts` reads files and lists folders on top of it.
 */

export interface GoldenExpected {
  /** `[T, Hq, topk]`, ascending, -1 padded. */
  readonly routing?: Int32Array;
  /** Per row `[T·Hq]`: the margin, null when nothing was left out, undefined when unknown. */
  readonly margins?: readonly (number | null | undefined)[];
  readonly out?: Float64Array;
  readonly lse?: Float64Array;
  readonly dq?: Float64Array;
  readonly dk?: Float64Array;
  readonly dv?: Float64Array;
}

export interface GoldenCase {
  readonly name: string;
  readonly file: string;
  readonly note?: string;
  readonly seqlens: readonly number[];
  readonly cuSeqlens: Int32Array;
  readonly T: number;
  readonly Hq: number;
  readonly Hkv: number;
  readonly D: number;
  readonly blockSize: number;
  readonly topk: number;
  readonly causal: boolean;
  readonly scale: number;
  readonly q: Float64Array;
  readonly k: Float64Array;
  readonly v: Float64Array;
  readonly dout?: Float64Array;
  readonly expected: GoldenExpected;
}


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
} as const;

/** A malformed golden case: `golden case <file> is malformed: <reason>`, one line; `field` names the culprit when known. */
export class MalformedGoldenCaseError extends Error {
  override readonly name = 'MalformedGoldenCaseError';
  constructor(readonly file: string, readonly field: string | null, readonly reason: string) {
    super(`golden case ${file} is malformed: ${reason}`);
    this.stack = this.message; // reports print the stack: keep it to the explanation
  }
}
class Malformed extends Error {
  constructor(readonly field: string | null, message: string) {
    super(message.replace(/\s*\n\s*/g, ' '));
  }
}
/** Why `null` is refused where a number belongs (JSON has no −∞: only an empty row's lse may be written as null). */
const NULL_HINT = 'null is read as −Infinity only in expected.lse (an empty row); write non-finite values as NaN, Infinity, -Infinity (bare or quoted)';
function num(v: unknown, what: string, i?: number, nullIsMinusInf = false): number {
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
function numbers(v: unknown, what: string, n: number, why = '', nullIsMinusInf = false): Float64Array {
  if (!Array.isArray(v)) throw new Malformed(what, `${what} is ${v === undefined ? 'missing' : v === null ? 'null' : typeof v}, expected an array of ${n} numbers`);
  const flat = (v as unknown[]).flat(8);
  if (flat.length !== n) throw new Malformed(what, `${what} has ${flat.length} values, expected ${n}${why}`);
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) out[i] = num(flat[i], what, i, nullIsMinusInf);
  return out;
}
function int(v: unknown, what: string, min: number, max: number = GOLDEN_LIMITS.int32): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
    throw new Malformed(what.replace(/\[\d+\]/g, ''), `${what} = ${JSON.stringify(v)?.slice(0, 40)}, expected an integer in ${min}..${max}`);
  }
  return v;
}
/** JSON, also accepting the bare NaN / Infinity tokens Python's json module writes. */
export function parseGoldenJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch (e) {
    try {
      return JSON.parse(text.replace(/(?<=[[,:]\s*)(-?Infinity|NaN)(?=\s*[\],}])/g, '"$1"'));
    } catch {
      throw new Malformed(null, `not valid JSON: ${(e as Error).message}`);
    }
  }
}

/** The error a malformed case is reported with: `golden case <name> is malformed: <why>` (one line). */
export function malformedGoldenCase(name: string, e: unknown): MalformedGoldenCaseError {
  if (e instanceof MalformedGoldenCaseError) return e;
  const why = (e instanceof Error ? e.message : String(e)).replace(/\s*\n\s*/g, ' ');
  return new MalformedGoldenCaseError(name, e instanceof Malformed ? e.field : null, why);
}

/**
 * Parses one golden case from its JSON object; `name` stands in for the file in messages and in `file`.
 * A case without a `name` field is named `defaultName` (by default `name` less a trailing `.json`).
 */
export function parseGoldenCase(json: unknown, name: string, defaultName: string = name.replace(/\.json$/, '')): GoldenCase {
  try {
    return parseCase(json, name, defaultName);
  } catch (e) {
    throw malformedGoldenCase(name, e);
  }
}

/** The sequence lengths of `config` (from `seqlens`, else `cu_seqlens`) and which field they came from. */
function parseSeqlens(c: Record<string, unknown>): { seqlens: number[]; from: string } {
  const I = GOLDEN_LIMITS.int32;
  let seqlens: number[];
  let from = 'config.seqlens';
  if (Array.isArray(c.seqlens)) {
    seqlens = c.seqlens.map((x, i) => int(x, `config.seqlens[${i}]`, 0));
  } else if (Array.isArray(c.cu_seqlens)) {
    from = 'config.cu_seqlens';
    const cu = c.cu_seqlens.map((x, i) => int(x, `config.cu_seqlens[${i}]`, 0));
    if (cu[0] !== 0) throw new Malformed(from, `config.cu_seqlens[0] = ${cu[0]}, expected 0`);
    seqlens = cu.slice(1).map((x, i) => x - cu[i]!);
    if (seqlens.some((x) => x < 0)) throw new Malformed(from, 'config.cu_seqlens decreases');
  } else {
    throw new Malformed('config.seqlens', 'config needs "seqlens" or "cu_seqlens"');
  }
  if (seqlens.length === 0) throw new Malformed(from, `${from} holds no sequence`);
  const T = seqlens.reduce((a, b) => a + b, 0);
  if (T < 1 || T > I) throw new Malformed(from, `${from} sum to T = ${T}, expected 1..${I}`);
  if (Array.isArray(c.cu_seqlens) && (c.cu_seqlens.length !== seqlens.length + 1 || c.cu_seqlens[c.cu_seqlens.length - 1] !== T)) {
    throw new Malformed('config.cu_seqlens', `config.cu_seqlens [${c.cu_seqlens.slice(0, 8).join(', ')}${c.cu_seqlens.length > 8 ? ', …' : ''}] disagrees with config.seqlens [${seqlens.slice(0, 8).join(', ')}${seqlens.length > 8 ? ', …' : ''}]`);
  }
  if (c.total_tokens !== undefined && c.total_tokens !== T) throw new Malformed('config.total_tokens', `config.total_tokens = ${JSON.stringify(c.total_tokens)?.slice(0, 40)} but the sequences hold ${T}`);
  return { seqlens, from };
}

/**
 * Every size of the header is checked (integer, range) and then against the lengths of the arrays the file
 * holds, before anything is allocated from it: inputs first, then the expected values and the routing.
 */
function parseCase(j: unknown, file: string, defaultName: string): GoldenCase {
  if (j === null || typeof j !== 'object' || Array.isArray(j)) throw new Malformed(null, 'the top level is not an object');
  const o = j as Record<string, unknown>;
  const c = o.config as Record<string, unknown> | undefined;
  if (!c || typeof c !== 'object') throw new Malformed('config', '"config" is missing');
  const { seqlens, from } = parseSeqlens(c);
  const T = seqlens.reduce((a, b) => a + b, 0);
  const L = GOLDEN_LIMITS;
  const Hq = int(c.heads_q, 'config.heads_q', 1, L.heads);
  const Hkv = int(c.heads_kv ?? Hq, 'config.heads_kv', 1, L.heads);
  if (Hq % Hkv !== 0) throw new Malformed('config.heads_q', `config.heads_q = ${Hq} is not a multiple of heads_kv = ${Hkv}`);
  const D = int(c.head_dim, 'config.head_dim', 1, L.headDim);
  const blockSize = int(c.block_size, 'config.block_size', 1);
  const topk = int(c.topk, 'config.topk', 1, L.topk);
  const causal = c.causal === undefined ? true : c.causal;
  if (typeof causal !== 'boolean') throw new Malformed('config.causal', `config.causal = ${JSON.stringify(c.causal)?.slice(0, 40)}, expected true or false`);
  const scale = c.scale === undefined || c.scale === null ? 1 / Math.sqrt(D) : num(c.scale, 'config.scale');
  const inp = o.inputs as Record<string, unknown> | undefined;
  if (!inp || typeof inp !== 'object') throw new Malformed('inputs', '"inputs" is missing');
  const size = (h: number, hName: string): string => ` = T (${T}, ${from}) × ${hName} (${h}) × head_dim (${D})`;
  const q = numbers(inp.q, 'inputs.q', T * Hq * D, size(Hq, 'heads_q'));
  const k = numbers(inp.k, 'inputs.k', T * Hkv * D, size(Hkv, 'heads_kv'));
  const v = numbers(inp.v, 'inputs.v', T * Hkv * D, size(Hkv, 'heads_kv'));
  const dout = inp.dout !== undefined ? numbers(inp.dout, 'inputs.dout', T * Hq * D, size(Hq, 'heads_q')) : undefined;
  // T·heads_q is vouched for by inputs.q now: bound the routing the reader (and a backend) will build
  if (T * Hq * topk > L.routingSlots) {
    throw new Malformed('config.topk', `config.topk = ${topk}: T·heads_q·topk = ${T}·${Hq}·${topk} routing slots exceed the limit ${L.routingSlots}`);
  }
  const ex = (o.expected ?? {}) as Record<string, unknown>;
  const cu = new Int32Array(seqlens.length + 1);
  seqlens.forEach((n, i) => (cu[i + 1] = cu[i]! + n));
  const opt = (key: string, n: number, lse = false): Float64Array | undefined => (ex[key] === undefined ? undefined : numbers(ex[key], `expected.${key}`, n, '', lse));
  const expected: GoldenExpected = {
    ...optional('out', opt('out', T * Hq * D)),
    ...optional('lse', opt('lse', T * Hq, true)),
    ...optional('dq', opt('dq', T * Hq * D)),
    ...optional('dk', opt('dk', T * Hkv * D)),
    ...optional('dv', opt('dv', T * Hkv * D)),
    ...(ex.routing_margin !== undefined ? { margins: parseMargins(ex.routing_margin, T, Hq) } : {}),
    ...(ex.routing !== undefined ? { routing: parseRouting(ex.routing, T, Hq, topk) } : {}),
  };
  return {
    name: typeof o.name === 'string' ? o.name : defaultName,
    file,
    ...(typeof o.note === 'string' ? { note: o.note } : {}),
    seqlens, cuSeqlens: cu, T, Hq, Hkv, D, blockSize, topk, causal, scale, q, k, v,
    ...(dout !== undefined ? { dout } : {}),
    expected,
  };
}
function optional<K extends string>(key: K, v: Float64Array | undefined): { [P in K]?: Float64Array } {
  return (v === undefined ? {} : { [key]: v }) as { [P in K]?: Float64Array };
}
/** `[T][heads_q]` lists of at most topk blocks (shape checked before the `[T, heads_q, topk]` array is made). */
function parseRouting(v: unknown, T: number, Hq: number, topk: number): Int32Array {
  const what = 'expected.routing';
  if (!Array.isArray(v) || v.length !== T) throw new Malformed(what, `expected.routing must be [T = ${T}][heads_q = ${Hq}] lists of blocks`);
  v.forEach((row: unknown, t) => {
    if (!Array.isArray(row) || row.length !== Hq) throw new Malformed(what, `expected.routing[${t}] must hold ${Hq} lists`);
    row.forEach((sel: unknown, h) => {
      if (!Array.isArray(sel) || sel.length > topk) throw new Malformed(what, `expected.routing[${t}][${h}] must be a list of at most topk = ${topk} blocks`);
    });
  });
  const out = new Int32Array(T * Hq * topk).fill(-1);
  (v as unknown[][][]).forEach((row, t) => row.forEach((sel, h) => sel.forEach((j, i) => (out[(t * Hq + h) * topk + i] = int(j, `expected.routing[${t}][${h}][${i}]`, 0)))));
  return out;
}
function parseMargins(v: unknown, T: number, Hq: number): (number | null)[] {
  const what = 'expected.routing_margin';
  if (!Array.isArray(v) || v.length !== T) throw new Malformed(what, `expected.routing_margin must be [T = ${T}][heads_q = ${Hq}]`);
  return (v as unknown[]).flatMap((row, t) => {
    if (!Array.isArray(row) || row.length !== Hq) throw new Malformed(what, `expected.routing_margin[${t}] must hold ${Hq} values`);
    return row.map((m, h) => (m === null ? null : num(m, `expected.routing_margin[${t}][${h}]`)));
  });
}
