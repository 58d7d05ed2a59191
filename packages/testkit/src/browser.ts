/**
 * @moba/testkit/browser: the conformance suite for pages and web workers (no Node APIs, no environment
 * variables). `runConformance(backend, { cases })` runs the same property catalogue as the Node entry;
 * golden cases are passed in as parsed JSON objects (golden-format.md) instead of being read from a folder.
 *
 * The Node entry cannot be reused as is: `run.ts` reads `process.env`, and its catalogue pulls in `golden.ts`
 * (node:fs, node:path, node:url). The golden parser and the golden property below mirror `golden.ts` and
 * `properties/golden.ts` over a parsed case; keep them in step until those move into a shared pure module.
 */
import { type DType, type ProblemShape, type Routing, type ToleranceCheck, fromFloat, resolveConfig, sequences, toFloat64 } from '@moba/core';
import type { Backend } from '@moba/core';
import { type ReferencePair, BlockScorer, attentionChecks, referencePair, routingErrors, runAttention, scoreEps, scoped, uploadProblem } from './checks.js';
import type { GoldenCase, GoldenExpected } from './golden.js';
import { type Problem, supportsHeadDim } from './problem.js';
import { backwardProperties } from './properties/backward.js';
import { determinismProperties } from './properties/determinism.js';
import { forwardProperties } from './properties/forward.js';
import { hostileProperties } from './properties/hostile.js';
import { kconvProperties } from './properties/kconv.js';
import { mobaProperties } from './properties/moba.js';
import { oracleProperties } from './properties/oracles.js';
import { routingProperties } from './properties/routing.js';
import { validationProperties } from './properties/validation.js';
import { type ConformanceOptions, type Property, type PropertyContext, type PropertyResult, type Report, Skip } from './types.js';

export { type ConformanceOptions, type Property, type PropertyContext, type PropertyResult, type Report, Skip } from './types.js';
export type { GoldenCase, GoldenExpected } from './golden.js';

/** The same defaults as the Node entry (`run.ts`), so a seed printed there replays here. */
export const DEFAULT_SEED = 20_260_101;
export const DEFAULT_NUM_RUNS = 12;

/** A golden case as parsed JSON (the object `JSON.parse` gives for a golden-format.md file), with a name for reports. */
export interface GoldenSource {
  readonly name: string;
  readonly json: unknown;
}

/** Options of the browser `runConformance`: the Node options minus files and environment, plus parsed golden cases. */
export interface BrowserConformanceOptions extends Omit<ConformanceOptions, 'casesDir'> {
  /** Golden cases, parsed: run after the catalogue (or alone with `goldenOnly`). */
  cases?: readonly GoldenSource[];
}

/** Every property except the golden cases (the Node entry's `coreProperties`). */
export const coreProperties: readonly Property[] = [
  ...routingProperties,
  ...forwardProperties,
  ...backwardProperties,
  ...oracleProperties,
  ...kconvProperties,
  ...mobaProperties,
  ...hostileProperties,
  ...determinismProperties,
  ...validationProperties,
];

/** Runs one property; a thrown `Skip` is a skip, anything else a failure (as the Node entry's `runProperty`). */
export async function runProperty(p: Property, ctx: PropertyContext): Promise<PropertyResult> {
  const t0 = performance.now();
  const base = { name: p.name, group: p.group };
  try {
    await p.run(ctx);
    return { ...base, ok: true, ms: Math.round(performance.now() - t0) };
  } catch (e) {
    const ms = Math.round(performance.now() - t0);
    if (e instanceof Skip) return { ...base, ok: true, skipped: true, message: e.message, ms };
    const msg = e instanceof Error ? e.message : String(e);
    const replay = `replay: MOBA_SEED=${ctx.seed} MOBA_ONLY="${p.group}: ${p.name.slice(0, 40)}"${ctx.path ? ` MOBA_PATH=${ctx.path}` : ''}`;
    return { ...base, ok: false, message: `${msg}\n(seed ${ctx.seed}; ${replay})`, ms };
  }
}

function capsNotCovered(backend: Backend): string[] {
  const caps = backend.caps;
  const out: string[] = [];
  for (const d of ['f32', 'f16', 'bf16'] as const) if (!caps.dtypes.includes(d)) out.push(`dtype ${d} (not in caps)`);
  if (caps.headDims) out.push(`head dims other than ${caps.headDims.join(', ')} (not in caps)`);
  if (!caps.nonCausal) out.push('non-causal routing (caps.nonCausal is false)');
  if (!caps.kconv) out.push('kconv (not in caps)');
  if (!caps.deterministic) out.push('determinism (caps.deterministic is false)');
  return out;
}

/**
 * Runs the conformance suite on `backend` in a browser and returns a Report. Never throws for a failing
 * property; the backend is not destroyed (pass `opts.factory` to cover "use after destroy").
 */
export async function runConformance(backend: Backend, opts: BrowserConformanceOptions = {}): Promise<Report> {
  const t0 = performance.now();
  const seed = opts.seed ?? DEFAULT_SEED;
  const notCovered = new Set<string>(capsNotCovered(backend));
  const ctx: PropertyContext = {
    backend, seed, path: opts.path, numRuns: Math.max(1, opts.numRuns ?? DEFAULT_NUM_RUNS), factory: opts.factory,
    notCovered: (what) => notCovered.add(what),
  };
  const golden = (opts.cases ?? []).map((c) => goldenCaseProperty(c));
  const all = opts.goldenOnly ? golden : [...coreProperties, ...golden];
  const only = opts.only?.filter((s) => s.length > 0) ?? [];
  const selected = only.length === 0 ? all : all.filter((p) => only.some((s) => `${p.group}: ${p.name}`.includes(s)));
  const results: PropertyResult[] = [];
  for (const p of selected) {
    const r = await runProperty(p, ctx);
    results.push(r);
    opts.onResult?.(r);
  }
  const skipped = results.filter((r) => r.skipped).length;
  const failed = results.filter((r) => !r.ok).length;
  return {
    backend: backend.name, seed, passed: results.length - failed - skipped, failed, skipped, results,
    notCovered: [...notCovered], durationMs: Math.round(performance.now() - t0),
  };
}

/** The summary line every entry point ends with: `N passed, M failed` (`, K skipped` when K > 0). */
export function summaryLine(r: Pick<Report, 'passed' | 'failed' | 'skipped'>): string {
  return `${r.passed} passed, ${r.failed} failed${r.skipped > 0 ? `, ${r.skipped} skipped` : ''}`;
}

// ---- golden cases from parsed JSON (mirrors golden.ts) ----

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

/** Parses one golden case from its JSON object; `name` stands in for the file name in messages. */
export function parseGoldenCase(json: unknown, name: string): GoldenCase {
  try {
    return parseCase(json, name);
  } catch (e) {
    throw new Error(`golden case ${name} is malformed: ${e instanceof Error ? e.message : String(e)}`);
  }
}

function parseCase(j: unknown, file: string): GoldenCase {
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
    name: typeof o.name === 'string' ? o.name : file.replace(/\.json$/, ''),
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

// ---- the golden property over a parsed case (mirrors properties/golden.ts) ----

function problemOf(gc: GoldenCase, dtype: DType): { p: Problem; exact: boolean } {
  const { T, Hq, Hkv, D } = gc;
  const shape: ProblemShape = { T, Hq, Hkv, D, dtype };
  const qs = [T, Hq, D];
  const ks = [T, Hkv, D];
  const q = fromFloat(gc.q, dtype, qs);
  const k = fromFloat(gc.k, dtype, ks);
  const v = fromFloat(gc.v, dtype, ks);
  const dOut = fromFloat(gc.dout ?? new Float64Array(T * Hq * D), dtype, qs);
  const layout = { cuSeqlens: gc.cuSeqlens };
  const cfg = { blockSize: gc.blockSize, topk: gc.topk, causal: gc.causal, scale: gc.scale };
  const p: Problem = {
    spec: { seqlens: gc.seqlens, Hq, Hkv, D, dtype, blockSize: gc.blockSize, topk: gc.topk, causal: gc.causal, seed: 0, scale: gc.scale },
    shape, layout, cfg, rcfg: resolveConfig(cfg, D), seqs: sequences(layout, gc.blockSize),
    q, k, v, dOut, q64: toFloat64(q), k64: toFloat64(k), v64: toFloat64(v), dOut64: toFloat64(dOut),
  };
  const same = (a: Float64Array, b: Float64Array): boolean => a.every((x, i) => x === b[i] || (Number.isNaN(x) && Number.isNaN(b[i]!)));
  return { p, exact: same(gc.q, p.q64) && same(gc.k, p.k64) && same(gc.v, p.v64) && (!gc.dout || same(gc.dout, p.dOut64)) };
}

function routingVsExpected(gc: GoldenCase, p: Problem, got: Int32Array): string[] {
  const exp = gc.expected.routing;
  if (!exp) return [];
  const K = gc.topk;
  const scorer = new BlockScorer(p.q64, p.k64, p.shape, p.seqs, p.layout, gc.blockSize);
  const lines: string[] = [];
  for (let row = 0; row < gc.T * gc.Hq && lines.length < 5; row++) {
    const a = got.subarray(row * K, (row + 1) * K);
    const e = exp.subarray(row * K, (row + 1) * K);
    if (a.every((x, i) => x === e[i])) continue;
    const t = Math.floor(row / gc.Hq);
    const h = row % gc.Hq;
    const margin = gc.expected.margins?.[row];
    const noise = 2 * scoreEps(gc.D, gc.blockSize, Math.max(...scorer.row(t, h).mags));
    const where = `routing row (t=${t}, h=${h}) = [${Array.from(a).join(', ')}], file has [${Array.from(e).join(', ')}]`;
    if (margin === undefined) continue;
    if (margin === null) lines.push(`${where}: nothing was left out of that row, so it must match`);
    else if (margin === 0) lines.push(`${where}: exact tie, the higher block index must win (SPEC §3)`);
    else if (margin > noise) lines.push(`${where}: margin ${margin.toExponential(3)} is above the rounding noise ${noise.toExponential(3)}`);
  }
  return lines;
}

function againstFile(rp: ReferencePair, e: GoldenCase['expected']): ReferencePair {
  const pick = (key: 'out' | 'lse' | 'dq' | 'dk' | 'dv'): [Float64Array, Float64Array] => {
    const file = e[key];
    if (!file) return [rp.ref[key], rp.cal[key]];
    const r = rp.ref[key];
    const c = rp.cal[key];
    return [file, file.map((x, i) => (c[i] === r[i] ? x : x + (c[i]! - r[i]!)))];
  };
  const [out, cOut] = pick('out');
  const [lse, cLse] = pick('lse');
  const [dq, cDq] = pick('dq');
  const [dk, cDk] = pick('dk');
  const [dv, cDv] = pick('dv');
  return { ref: { out, lse, dq, dk, dv }, cal: { out: cOut, lse: cLse, dq: cDq, dk: cDk, dv: cDv } };
}

async function runCase(ctx: PropertyContext, gc: GoldenCase, dtype: DType): Promise<string[]> {
  const b = ctx.backend;
  const { p, exact } = problemOf(gc, dtype);
  return scoped(b, async (s) => {
    const d = await uploadProblem(s, p);
    const own = s.own(await b.route(d.q, d.k, p.layout, p.cfg));
    const idx = await b.routingIndices(own);
    const lines = [...routingErrors(idx, p.q64, p.k64, p.shape, p.seqs, p.layout, p.rcfg), ...routingVsExpected(gc, p, idx)];
    const exp = gc.expected.routing;
    let used: Routing = own;
    let usedIdx = idx;
    if (exp && idx.some((x, i) => x !== exp[i])) {
      used = s.own(await b.routingFromIndices(exp.slice(), { T: gc.T, Hq: gc.Hq }, p.layout, p.cfg));
      usedIdx = exp;
    }
    const e = gc.expected;
    const backward = gc.dout !== undefined && (e.dq !== undefined || e.dk !== undefined || e.dv !== undefined);
    const got = await runAttention(s, p, d, used, { backward });
    const rp = referencePair(p, usedIdx, { backward });
    const ref: ReferencePair = exact ? againstFile(rp, e) : rp;
    const checks: ToleranceCheck[] = attentionChecks(`${gc.name} ${dtype}${exact ? '' : ' (inputs rounded)'}`, p.shape, got, ref);
    lines.push(...checks.filter((c) => !c.ok).map((c) => c.message));
    return lines;
  });
}

function unsupported(ctx: PropertyContext, gc: GoldenCase): string | null {
  const caps = ctx.backend.caps;
  if (!supportsHeadDim(caps, gc.D)) return `head dim ${gc.D} not in caps`;
  if (!gc.causal && !caps.nonCausal) return 'non-causal, caps.nonCausal is false';
  if (gc.topk > caps.maxTopk) return `topk ${gc.topk} > caps.maxTopk ${caps.maxTopk}`;
  if (gc.blockSize > caps.maxBlockSize) return `blockSize ${gc.blockSize} > caps.maxBlockSize ${caps.maxBlockSize}`;
  return null;
}

/** The golden property of one parsed case, named like the Node entry's (the file name). */
export function goldenCaseProperty(src: GoldenSource): Property {
  return {
    group: 'golden',
    name: src.name,
    async run(ctx) {
      const gc = parseGoldenCase(src.json, src.name);
      const why = unsupported(ctx, gc);
      if (why !== null) {
        ctx.notCovered(`golden ${gc.name} (${why})`);
        throw new Skip(why);
      }
      const lines: string[] = [];
      for (const dtype of ctx.backend.caps.dtypes) {
        for (const l of await runCase(ctx, gc, dtype)) lines.push(`${dtype}: ${l}`);
      }
      if (lines.length > 0) {
        const cfg = `T=${gc.T} seqlens=[${gc.seqlens.join(',')}] Hq=${gc.Hq} Hkv=${gc.Hkv} D=${gc.D} blockSize=${gc.blockSize} topk=${gc.topk} causal=${gc.causal}`;
        throw new Error(`golden case ${gc.name} (${src.name})\nconfig: ${cfg}\n  ${lines.join('\n  ')}`);
      }
    },
  };
}
