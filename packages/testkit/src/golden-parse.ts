/**
 * The golden-case parser (golden-format.md), free of Node APIs so the browser entry shares it:
 * `parseGoldenCase(json, name)` checks a parsed JSON object and fails with a message naming the case
 * and the field. `golden.ts` reads files and lists folders on top of it. The extensions (requires, seqlens_q,
 * kconv) are read by golden-ext-parse.ts.
 */
import { type GoldenKconv, type GoldenQueries, type GoldenRequirement, parseCausal, parseKconv, parseQueries, parseRequires } from './golden-ext-parse.js';
import { GOLDEN_LIMITS, Malformed, MalformedGoldenCaseError, UnsupportedGoldenCaseError, int, num, numbers } from './golden-fields.js';

export { GOLDEN_LIMITS, MalformedGoldenCaseError, UnsupportedGoldenCaseError } from './golden-fields.js';
export { GOLDEN_REQUIREMENTS, type GoldenRequirement } from './golden-ext-parse.js';

export interface GoldenExpected {
  /** `[Tq, Hq, topk]`, ascending, -1 padded. */
  readonly routing?: Int32Array;
  /** Per query row `[Tq·Hq]`: the margin, null when nothing was left out, undefined when unknown. */
  readonly margins?: readonly (number | null | undefined)[];
  readonly out?: Float64Array;
  readonly lse?: Float64Array;
  readonly dq?: Float64Array;
  /** With respect to the raw `k` (through the kconv when the case has one). */
  readonly dk?: Float64Array;
  readonly dv?: Float64Array;
  /** kconv cases: the convolved keys `[Tk, Hkv, D]`. */
  readonly kConv?: Float64Array;
  /** kconv cases: the weight's gradient `[Hkv·D, W]`. */
  readonly dkconvWeight?: Float64Array;
}

/**
 * One case. `seqlens`, `cuSeqlens`, `T` describe the keys (`k`, `v`, `dk`, `dv`); `seqlensQ`, `cuSeqlensQ`, `Tq`
 * the query rows (`q`, `dout`, `out`, `lse`, `dq`, routing), equal to the keys' unless `requires` has seqlens_q.
 */
export interface GoldenCase extends GoldenQueries {
  readonly name: string;
  readonly file: string;
  readonly note?: string;
  /** The extensions the case needs (golden-format.md "Extensions"). */
  readonly requires: readonly GoldenRequirement[];
  readonly seqlens: readonly number[];
  readonly cuSeqlens: Int32Array;
  /** Key rows. */
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
  /** kconv width W (0: no kconv). */
  readonly kconvWidth: number;
  readonly kconvWeight?: Float64Array;
  readonly expected: GoldenExpected;
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

/**
 * The error a malformed case is reported with: `golden case <name> is malformed: <why>` (one line). A case that
 * needs an unknown extension keeps its UnsupportedGoldenCaseError (a skip, not a failure).
 */
export function malformedGoldenCase(name: string, e: unknown): MalformedGoldenCaseError | UnsupportedGoldenCaseError {
  if (e instanceof MalformedGoldenCaseError || e instanceof UnsupportedGoldenCaseError) return e;
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
  const requires = parseRequires(o.requires, file);
  const c = o.config as Record<string, unknown> | undefined;
  if (!c || typeof c !== 'object') throw new Malformed('config', '"config" is missing');
  const { seqlens, from } = parseSeqlens(c);
  const T = seqlens.reduce((a, b) => a + b, 0);
  const qs = parseQueries(c, seqlens, requires);
  const { Tq } = qs;
  const qFrom = requires.includes('seqlens_q') ? 'Tq' : 'T';
  const L = GOLDEN_LIMITS;
  const Hq = int(c.heads_q, 'config.heads_q', 1, L.heads);
  const Hkv = int(c.heads_kv ?? Hq, 'config.heads_kv', 1, L.heads);
  if (Hq % Hkv !== 0) throw new Malformed('config.heads_q', `config.heads_q = ${Hq} is not a multiple of heads_kv = ${Hkv}`);
  const D = int(c.head_dim, 'config.head_dim', 1, L.headDim);
  const blockSize = int(c.block_size, 'config.block_size', 1);
  const topk = int(c.topk, 'config.topk', 1, L.topk);
  const causal = parseCausal(c, requires);
  const scale = c.scale === undefined || c.scale === null ? 1 / Math.sqrt(D) : num(c.scale, 'config.scale');
  const inp = o.inputs as Record<string, unknown> | undefined;
  if (!inp || typeof inp !== 'object') throw new Malformed('inputs', '"inputs" is missing');
  const kSize = ` = T (${T}, ${from}) × heads_kv (${Hkv}) × head_dim (${D})`;
  const qSize = qFrom === 'T' ? ` = T (${T}, ${from}) × heads_q (${Hq}) × head_dim (${D})` : ` = Tq (${Tq}, config.seqlens_q) × heads_q (${Hq}) × head_dim (${D})`;
  const q = numbers(inp.q, 'inputs.q', Tq * Hq * D, qSize);
  const k = numbers(inp.k, 'inputs.k', T * Hkv * D, kSize);
  const v = numbers(inp.v, 'inputs.v', T * Hkv * D, kSize);
  const dout = inp.dout !== undefined ? numbers(inp.dout, 'inputs.dout', Tq * Hq * D, qSize) : undefined;
  // Tq·heads_q is vouched for by inputs.q now: bound the routing the reader (and a backend) will build
  if (Tq * Hq * topk > L.routingSlots) {
    throw new Malformed('config.topk', `config.topk = ${topk}: ${qFrom}·heads_q·topk = ${Tq}·${Hq}·${topk} routing slots exceed the limit ${L.routingSlots}`);
  }
  const ex = (o.expected ?? {}) as Record<string, unknown>;
  const kc: GoldenKconv = parseKconv(c, inp, ex, requires, { Tk: T, Hkv, D });
  const cu = new Int32Array(seqlens.length + 1);
  seqlens.forEach((n, i) => (cu[i + 1] = cu[i]! + n));
  const opt = (key: string, n: number, lse = false): Float64Array | undefined => (ex[key] === undefined ? undefined : numbers(ex[key], `expected.${key}`, n, '', lse));
  const expected: GoldenExpected = {
    ...optional('out', opt('out', Tq * Hq * D)),
    ...optional('lse', opt('lse', Tq * Hq, true)),
    ...optional('dq', opt('dq', Tq * Hq * D)),
    ...optional('dk', opt('dk', T * Hkv * D)),
    ...optional('dv', opt('dv', T * Hkv * D)),
    ...optional('kConv', kc.kConv),
    ...optional('dkconvWeight', kc.dkconvWeight),
    ...(ex.routing_margin !== undefined ? { margins: parseMargins(ex.routing_margin, Tq, Hq) } : {}),
    ...(ex.routing !== undefined ? { routing: parseRouting(ex.routing, Tq, Hq, topk) } : {}),
  };
  return {
    name: typeof o.name === 'string' ? o.name : defaultName,
    file,
    ...(typeof o.note === 'string' ? { note: o.note } : {}),
    requires, seqlens, cuSeqlens: cu, T, ...qs, Hq, Hkv, D, blockSize, topk, causal, scale, q, k, v,
    ...(dout !== undefined ? { dout } : {}),
    kconvWidth: kc.kconvWidth,
    ...(kc.kconvWeight !== undefined ? { kconvWeight: kc.kconvWeight } : {}),
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
