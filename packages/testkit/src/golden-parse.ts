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


class Malformed extends Error {
  override readonly name = 'MalformedGoldenCase';
}

function num(v: unknown, what: string): number {
  if (typeof v === 'number') return v;
  if (v === null) return -Infinity; // JSON has no -Infinity: empty rows' lse may be written as null
  if (v === 'NaN') return NaN;
  if (v === 'Infinity') return Infinity;
  if (v === '-Infinity') return -Infinity;
  throw new Malformed(`${what} holds ${JSON.stringify(v)}, expected a number`);
}

function numbers(v: unknown, what: string, n: number): Float64Array {
  if (!Array.isArray(v)) throw new Malformed(`${what} is ${v === undefined ? 'missing' : typeof v}, expected an array of ${n} numbers`);
  const flat = (v as unknown[]).flat(8);
  if (flat.length !== n) throw new Malformed(`${what} has ${flat.length} values, expected ${n}`);
  return Float64Array.from(flat, (x, i) => num(x, `${what}[${i}]`));
}

function int(v: unknown, what: string, min: number): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min) throw new Malformed(`${what} = ${JSON.stringify(v)}, expected an integer >= ${min}`);
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
      throw new Malformed(`not valid JSON: ${(e as Error).message}`);
    }
  }
}

/** The error a malformed case is reported with: `golden case <name> is malformed: <why>`. */
export function malformedGoldenCase(name: string, e: unknown): Error {
  return new Error(`golden case ${name} is malformed: ${e instanceof Error ? e.message : String(e)}`);
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

function parseCase(j: unknown, file: string, defaultName: string): GoldenCase {
  if (j === null || typeof j !== 'object') throw new Malformed('the top level is not an object');
  const o = j as Record<string, unknown>;
  const c = o.config as Record<string, unknown> | undefined;
  if (!c || typeof c !== 'object') throw new Malformed('"config" is missing');
  let seqlens: number[];
  if (Array.isArray(c.seqlens)) seqlens = c.seqlens.map((x, i) => int(x, `config.seqlens[${i}]`, 0));
  else if (Array.isArray(c.cu_seqlens)) seqlens = c.cu_seqlens.slice(1).map((x, i) => int(x, `config.cu_seqlens[${i + 1}]`, 0) - (c.cu_seqlens as number[])[i]!);
  else throw new Malformed('config needs "seqlens" or "cu_seqlens"');
  if (seqlens.some((x) => x < 0)) throw new Malformed('config.cu_seqlens decreases');
  const T = seqlens.reduce((a, b) => a + b, 0);
  if (Array.isArray(c.cu_seqlens) && (c.cu_seqlens.length !== seqlens.length + 1 || c.cu_seqlens[c.cu_seqlens.length - 1] !== T)) {
    throw new Malformed(`config.cu_seqlens [${c.cu_seqlens.join(', ')}] disagrees with config.seqlens [${seqlens.join(', ')}]`);
  }
  if (c.total_tokens !== undefined && c.total_tokens !== T) throw new Malformed(`config.total_tokens = ${String(c.total_tokens)} but the sequences hold ${T}`);
  const Hq = int(c.heads_q, 'config.heads_q', 1);
  const Hkv = int(c.heads_kv ?? Hq, 'config.heads_kv', 1);
  if (Hq % Hkv !== 0) throw new Malformed(`config.heads_q = ${Hq} is not a multiple of heads_kv = ${Hkv}`);
  const D = int(c.head_dim, 'config.head_dim', 1);
  const blockSize = int(c.block_size, 'config.block_size', 1);
  const topk = int(c.topk, 'config.topk', 1);
  const causal = c.causal === undefined ? true : c.causal;
  if (typeof causal !== 'boolean') throw new Malformed(`config.causal = ${JSON.stringify(c.causal)}, expected true or false`);
  const scale = c.scale === undefined || c.scale === null ? 1 / Math.sqrt(D) : num(c.scale, 'config.scale');
  const inp = o.inputs as Record<string, unknown> | undefined;
  if (!inp || typeof inp !== 'object') throw new Malformed('"inputs" is missing');
  const ex = (o.expected ?? {}) as Record<string, unknown>;
  const cu = new Int32Array(seqlens.length + 1);
  seqlens.forEach((n, i) => (cu[i + 1] = cu[i]! + n));
  const opt = (key: string, n: number): Float64Array | undefined => (ex[key] === undefined ? undefined : numbers(ex[key], `expected.${key}`, n));
  const expected: GoldenExpected = {
    ...(ex.routing !== undefined ? { routing: parseRouting(ex.routing, T, Hq, topk) } : {}),
    ...(ex.routing_margin !== undefined ? { margins: parseMargins(ex.routing_margin, T, Hq) } : {}),
    ...optional('out', opt('out', T * Hq * D)),
    ...optional('lse', opt('lse', T * Hq)),
    ...optional('dq', opt('dq', T * Hq * D)),
    ...optional('dk', opt('dk', T * Hkv * D)),
    ...optional('dv', opt('dv', T * Hkv * D)),
  };
  return {
    name: typeof o.name === 'string' ? o.name : defaultName,
    file,
    ...(typeof o.note === 'string' ? { note: o.note } : {}),
    seqlens, cuSeqlens: cu, T, Hq, Hkv, D, blockSize, topk, causal, scale,
    q: numbers(inp.q, 'inputs.q', T * Hq * D),
    k: numbers(inp.k, 'inputs.k', T * Hkv * D),
    v: numbers(inp.v, 'inputs.v', T * Hkv * D),
    ...(inp.dout !== undefined ? { dout: numbers(inp.dout, 'inputs.dout', T * Hq * D) } : {}),
    expected,
  };
}

function optional<K extends string>(key: K, v: Float64Array | undefined): { [P in K]?: Float64Array } {
  return (v === undefined ? {} : { [key]: v }) as { [P in K]?: Float64Array };
}

function parseRouting(v: unknown, T: number, Hq: number, topk: number): Int32Array {
  if (!Array.isArray(v) || v.length !== T) throw new Malformed(`expected.routing must be [T = ${T}][heads_q = ${Hq}] lists of blocks`);
  const out = new Int32Array(T * Hq * topk).fill(-1);
  v.forEach((row: unknown, t) => {
    if (!Array.isArray(row) || row.length !== Hq) throw new Malformed(`expected.routing[${t}] must hold ${Hq} lists`);
    row.forEach((sel: unknown, h) => {
      if (!Array.isArray(sel) || sel.length > topk) throw new Malformed(`expected.routing[${t}][${h}] must be a list of at most topk = ${topk} blocks`);
      sel.forEach((j, i) => (out[(t * Hq + h) * topk + i] = int(j, `expected.routing[${t}][${h}][${i}]`, 0)));
    });
  });
  return out;
}

function parseMargins(v: unknown, T: number, Hq: number): (number | null)[] {
  if (!Array.isArray(v) || v.length !== T) throw new Malformed(`expected.routing_margin must be [T = ${T}][heads_q = ${Hq}]`);
  return (v as unknown[]).flatMap((row, t) => {
    if (!Array.isArray(row) || row.length !== Hq) throw new Malformed(`expected.routing_margin[${t}] must hold ${Hq} values`);
    return row.map((m, h) => (m === null ? null : num(m, `expected.routing_margin[${t}][${h}]`)));
  });
}
