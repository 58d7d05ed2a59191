/**
 * The golden property over one parsed case (golden-format.md), free of Node APIs so the browser entry
 * shares it. In every declared dtype: with kconv, k' = kconv(k) vs the file's k_conv; routing by the tie-robust
 * rule and the case's margins (the case's routing is fed to attention on a near-tie), then out/lse/dq/dk/dv (dk
 * through the kconv backward, and dw) vs the case's values under the tolerance policy, calibrated by our
 * reference. A seqlens_q case (SPEC §8) runs through the QK layout and, where the backend has one, through the
 * KV cache (golden-cache.ts). A case whose extensions the backend's caps lack is skipped naming the cap; one that
 * needs an extension this reader does not know is skipped naming it. `golden.ts` wraps it around files.
 */
import { type DType, type DeviceTensor, type Routing, type ToleranceCheck, checkTolerance } from '@moba/core';
import { type AttentionResult, type Scope, attentionChecks, scoped, uploadProblem } from '../checks.js';
import { referenceKconv } from '@moba/core/reference';
import { routingErrors } from '../routing-checks.js';
import { type GoldenCase, UnsupportedGoldenCaseError } from '../golden-parse.js';
import { type GoldenProblem, type GoldenReference, againstFile, goldenProblem, goldenReference, routingVsExpected } from '../golden-problem.js';
import { supportsHeadDim } from '../problem.js';
import { type Property, type PropertyContext, Skip } from '../types.js';
import { cacheCase } from './golden-cache.js';

/** Forward and backward on the backend; with kconv, dk goes back through kconvBackward and dw comes with it. */
async function attention(s: Scope, p: GoldenProblem, d: { q: DeviceTensor; k: DeviceTensor; kUsed: DeviceTensor; v: DeviceTensor; dOut: DeviceTensor; w?: DeviceTensor }, r: Routing, backward: boolean): Promise<AttentionResult & { dw?: Float64Array }> {
  const b = s.backend;
  const { out, lse } = await b.forward(d.q, d.kUsed, d.v, r, p.layout, p.cfg);
  s.own(out);
  s.own(lse);
  const res = { out: await s.f64(out), lse: await s.f64(lse) };
  if (!backward) return res;
  const g = await b.backward(d.q, d.kUsed, d.v, out, lse, d.dOut, r, p.layout, p.cfg);
  for (const t of [g.dq, g.dk, g.dv]) s.own(t);
  if (!d.w) return { ...res, dq: await s.f64(g.dq), dk: await s.f64(g.dk), dv: await s.f64(g.dv) };
  const kb = await b.kconvBackward(d.k, d.w, g.dk, p.keys);
  s.own(kb.dk);
  s.own(kb.dw);
  return { ...res, dq: await s.f64(g.dq), dk: await s.f64(kb.dk), dv: await s.f64(g.dv), dw: await s.f64(kb.dw) };
}

/** Runs one case in one dtype; returns failure lines (empty when it passes). */
async function runCase(ctx: PropertyContext, gc: GoldenCase, dtype: DType): Promise<string[]> {
  const b = ctx.backend;
  const { p, exact } = goldenProblem(gc, dtype);
  const label = `${gc.name} ${dtype}${exact ? '' : ' (inputs rounded)'}`;
  const { Tk, Hkv, D } = p.shape;
  return scoped(b, async (s) => {
    const d = await uploadProblem(s, p);
    const w = p.w ? await s.up(p.w) : undefined;
    const kUsed = w ? s.own(await b.kconv(d.k, w, p.keys)) : d.k;
    const k64 = w ? await s.f64(kUsed) : p.k64;
    const kExact = p.w64 ? referenceKconv(p.k64, p.w64, Hkv * D, gc.kconvWidth, p.keys) : undefined;
    const own = s.own(await b.route(d.q, kUsed, p.layout, p.cfg));
    const idx = await b.routingIndices(own);
    const lines = [...routingErrors(idx, p.q64, k64, p.shape, p.seqs, p.keys, p.rcfg, { pos: p.queries.pos }), ...routingVsExpected(gc, p, k64, idx, kExact)];
    const exp = gc.expected.routing;
    let used: Routing = own;
    let usedIdx = idx;
    if (exp && idx.some((x, i) => x !== exp[i])) {
      used = s.own(await b.routingFromIndices(exp.slice(), { T: gc.Tq, Hq: gc.Hq }, p.layout, p.cfg)); // near-tie: compare attention on the file's routing
      usedIdx = exp;
    }
    const e = gc.expected;
    const backward = gc.dout !== undefined && (e.dq !== undefined || e.dk !== undefined || e.dv !== undefined || e.dkconvWeight !== undefined);
    const got = await attention(s, p, { ...d, kUsed, ...(w ? { w } : {}) }, used, backward);
    // The file is the reference when the inputs are exact in this dtype; otherwise our f64 reference on the rounded inputs.
    const rp: GoldenReference = goldenReference(gc, p, usedIdx, backward);
    const ref = exact ? againstFile(rp, e) : rp;
    const checks: ToleranceCheck[] = attentionChecks(label, p.shape, got, ref);
    if (ref.kconv) {
      const C = Hkv * D;
      checks.push(checkTolerance(`${label} k_conv`, k64, ref.kconv.ref.kConv, ref.kconv.cal.kConv, { kind: 'forward', dtype, shape: [Tk, Hkv, D] }));
      if (got.dw) checks.push(checkTolerance(`${label} dkconv_weight`, got.dw, ref.kconv.ref.dw, ref.kconv.cal.dw, { kind: 'backward', dtype, shape: [C, gc.kconvWidth] }));
    }
    lines.push(...checks.filter((c) => !c.ok).map((c) => c.message));
    if (gc.requires.includes('seqlens_q') && b.caps.kvCache && b.createCache) {
      lines.push(...(await cacheCase(s, gc, p, w, label, ref, () => goldenReference(gc, p, idx, false))));
    }
    return lines;
  });
}

/** Why a case cannot run on this backend (null when it can); an extension the caps lack names the cap. */
function unsupported(ctx: PropertyContext, gc: GoldenCase): string | null {
  const caps = ctx.backend.caps;
  const req = gc.requires;
  if (req.includes('noncausal') && !caps.nonCausal) return 'requires noncausal, caps.nonCausal is false';
  if (req.includes('kconv') && !caps.kconv) return 'requires kconv, caps.kconv is false';
  if (req.includes('seqlens_q') && !caps.qkLayout) return 'requires seqlens_q (fewer queries than keys), caps.qkLayout is false';
  if (!supportsHeadDim(caps, gc.D)) return `head dim ${gc.D} not in caps`;
  if (!gc.causal && !caps.nonCausal) return 'non-causal, caps.nonCausal is false';
  if (gc.kconvWidth > caps.maxKconvWidth) return `kconv width ${gc.kconvWidth} > caps.maxKconvWidth ${caps.maxKconvWidth}`;
  if (gc.topk > caps.maxTopk) return `topk ${gc.topk} > caps.maxTopk ${caps.maxTopk}`;
  if (gc.blockSize > caps.maxBlockSize) return `blockSize ${gc.blockSize} > caps.maxBlockSize ${caps.maxBlockSize}`;
  return null;
}

/** The parsed case, or a visible skip when it needs an extension this reader does not know. */
function loadOrSkip(ctx: PropertyContext, name: string, load: () => GoldenCase): GoldenCase {
  try {
    return load();
  } catch (e) {
    if (!(e instanceof UnsupportedGoldenCaseError)) throw e;
    ctx.notCovered(`golden ${name} (requires ${e.requires.join(', ')}: unknown to this reader)`);
    throw new Skip(e.message);
  }
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
      const gc = loadOrSkip(ctx, name, load);
      const why = unsupported(ctx, gc);
      if (why !== null) {
        ctx.notCovered(`golden ${gc.name} (${why})`);
        throw new Skip(why);
      }
      const b = ctx.backend;
      if (gc.requires.includes('seqlens_q') && !(b.caps.kvCache && b.createCache)) ctx.notCovered(`golden ${gc.name} through the KV cache (caps.kvCache is false: only the QK layout path ran)`);
      const lines: string[] = [];
      for (const dtype of b.caps.dtypes) {
        for (const l of await runCase(ctx, gc, dtype)) lines.push(`${dtype}: ${l}`);
      }
      if (lines.length > 0) {
        const q = gc.requires.includes('seqlens_q') ? ` seqlens_q=[${gc.seqlensQ.join(',')}]` : '';
        const cfg = `T=${gc.T} seqlens=[${gc.seqlens.join(',')}]${q} Hq=${gc.Hq} Hkv=${gc.Hkv} D=${gc.D} blockSize=${gc.blockSize} topk=${gc.topk} causal=${gc.causal}${gc.kconvWidth ? ` kconv_width=${gc.kconvWidth}` : ''}`;
        throw new Error(`golden case ${gc.name} (${gc.file})\nconfig: ${cfg}\n  ${lines.join('\n  ')}`);
      }
    },
  };
}
