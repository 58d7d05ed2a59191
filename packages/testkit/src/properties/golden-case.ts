/**
 * The golden property over one parsed case (golden-format.md), free of Node APIs so the browser entry
 * shares it. In every declared dtype: routing by the tie-robust rule and the case's margins (the case's
 * routing is fed to attention on a near-tie), then out/lse/dq/dk/dv vs the case's values under the
 * tolerance policy, calibrated by our reference. `golden.ts` wraps it around files.
 */
import { type DType, type ProblemShape, type Routing, type ToleranceCheck, fromFloat, resolveConfig, sequences, toFloat64 } from '@moba/core';
import { type ReferencePair, attentionChecks, referencePair, runAttention, scoped, uploadProblem } from '../checks.js';
import { BlockScorer, routingErrors, scoreEps } from '../routing-checks.js';
import type { GoldenCase } from '../golden-parse.js';
import { type Problem, supportsHeadDim } from '../problem.js';
import { type Property, type PropertyContext, Skip } from '../types.js';

/** The case's inputs in `dtype`; `exact` when every value survived the rounding unchanged. */
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

/** Rows where the backend's routing differs from the file's and the margin does not excuse it. */
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
    if (margin === undefined) continue; // no margin recorded: the tie-robust rule alone decides
    if (margin === null) lines.push(`${where}: nothing was left out of that row, so it must match`);
    else if (margin === 0) lines.push(`${where}: exact tie, the higher block index must win (SPEC §3)`);
    else if (margin > noise) lines.push(`${where}: margin ${margin.toExponential(3)} is above the rounding noise ${noise.toExponential(3)}`);
  }
  return lines;
}

/**
 * The file's values as the reference, with the calibration moved onto them: `cal' = file + (cal − ref)`,
 * so the calibrated error stays our reference's own rounding error (never the file's disagreement).
 */
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

/** Runs one case in one dtype; returns failure lines (empty when it passes). */
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
      used = s.own(await b.routingFromIndices(exp.slice(), { T: gc.T, Hq: gc.Hq }, p.layout, p.cfg)); // near-tie: compare attention on the file's routing
      usedIdx = exp;
    }
    const e = gc.expected;
    const backward = gc.dout !== undefined && (e.dq !== undefined || e.dk !== undefined || e.dv !== undefined);
    const got = await runAttention(s, p, d, used, { backward });
    const rp = referencePair(p, usedIdx, { backward });
    // The file is the reference when the inputs are exact in this dtype; otherwise our f64 reference on the rounded inputs.
    const ref: ReferencePair = exact ? againstFile(rp, e) : rp;
    const checks: ToleranceCheck[] = attentionChecks(`${gc.name} ${dtype}${exact ? '' : ' (inputs rounded)'}`, p.shape, got, ref);
    lines.push(...checks.filter((c) => !c.ok).map((c) => c.message));
    return lines;
  });
}

/** Why a case cannot run on this backend (null when it can). */
function unsupported(ctx: PropertyContext, gc: GoldenCase): string | null {
  const caps = ctx.backend.caps;
  if (!supportsHeadDim(caps, gc.D)) return `head dim ${gc.D} not in caps`;
  if (!gc.causal && !caps.nonCausal) return 'non-causal, caps.nonCausal is false';
  if (gc.topk > caps.maxTopk) return `topk ${gc.topk} > caps.maxTopk ${caps.maxTopk}`;
  if (gc.blockSize > caps.maxBlockSize) return `blockSize ${gc.blockSize} > caps.maxBlockSize ${caps.maxBlockSize}`;
  return null;
}

/**
 * The golden property of one case, named `name`; `load` gives the parsed case when the property runs
 * (so a malformed case fails that property rather than the whole catalogue). Messages name `gc.file`.
 */
export function goldenCaseProperty(name: string, load: () => GoldenCase): Property {
  return {
    group: 'golden',
    name,
    async run(ctx) {
      const gc = load();
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
        throw new Error(`golden case ${gc.name} (${gc.file})\nconfig: ${cfg}\n  ${lines.join('\n  ')}`);
      }
    },
  };
}
