/**
 * The three oracles of SPEC §3 (fla-style degenerate cases), end to end through the backend's own
 * router: topk ≥ #blocks equals dense causal attention; topk = 1 equals block-local causal attention;
 * a small topk on a long sequence differs from dense. The dense oracles are written here, independently
 * of the reference's routing machinery: `out [T, Hq, D]` from a plain masked softmax.
 */
import fc from 'fast-check';
import { type Capabilities, checkTolerance, errorStats } from '@moba/core';
import { referenceForward } from '@moba/core/reference';
import { failure, forAll, roundAll, scoped, uploadProblem } from '../checks.js';
import { type Problem, type ProblemSpec, headDims, makeProblem } from '../problem.js';
import { type Property, type PropertyContext, Skip } from '../types.js';

/** Masked dense softmax attention in f64: key `p` is visible to query `t` when `visible(t, p)`. */
function maskedAttention(p: Problem, visible: (t: number, key: number, start: number) => boolean): Float64Array {
  const { T, Hq, Hkv, D } = p.shape;
  const out = new Float64Array(T * Hq * D);
  for (let t = 0; t < T; t++) {
    const s = p.seqs.seqs[p.seqs.seqOf[t]!]!;
    for (let h = 0; h < Hq; h++) {
      const kvh = Math.floor(h / (Hq / Hkv));
      const keys: number[] = [];
      const sc: number[] = [];
      for (let key = s.start; key < s.start + s.len; key++) {
        if (!visible(t, key, s.start)) continue;
        let dot = 0;
        for (let d = 0; d < D; d++) dot += p.q64[(t * Hq + h) * D + d]! * p.k64[(key * Hkv + kvh) * D + d]!;
        keys.push(key);
        sc.push(dot * p.rcfg.scale);
      }
      const m = Math.max(...sc);
      const w = sc.map((x) => Math.exp(x - m));
      const l = w.reduce((a, b) => a + b, 0);
      for (let i = 0; i < keys.length; i++) {
        for (let d = 0; d < D; d++) out[(t * Hq + h) * D + d]! += (w[i]! / l) * p.v64[(keys[i]! * Hkv + kvh) * D + d]!;
      }
    }
  }
  return out;
}

/** Indices selecting blocks `lo(cb)..cb` of every row (the routing an oracle implies). */
function oracleIndices(p: Problem, lo: (cb: number) => number): Int32Array {
  const { T, Hq } = p.shape;
  const K = p.rcfg.topk;
  const idx = new Int32Array(T * Hq * K).fill(-1);
  for (let t = 0; t < T; t++) {
    const s = p.seqs.seqs[p.seqs.seqOf[t]!]!;
    const cb = Math.floor((t - s.start) / p.rcfg.blockSize);
    for (let h = 0; h < Hq; h++) for (let j = lo(cb); j <= cb; j++) idx[(t * Hq + h) * K + j - lo(cb)] = j;
  }
  return idx;
}

/** Causal specs whose every sequence has at most `topk` blocks (topk ≤ caps.maxTopk). */
function denseSpecArb(caps: Capabilities): fc.Arbitrary<ProblemSpec> {
  return fc.record({
    seqlens: fc.array(fc.integer({ min: 1, max: 40 }), { minLength: 1, maxLength: 3 }),
    Hkv: fc.integer({ min: 1, max: 2 }), group: fc.integer({ min: 1, max: 2 }),
    D: fc.constantFrom(...headDims(caps)), dtype: fc.constantFrom(...caps.dtypes),
    blockSize: fc.integer({ min: 1, max: Math.min(8, caps.maxBlockSize) }),
    extra: fc.integer({ min: 0, max: 2 }), seed: fc.integer({ min: 1, max: 0x7fffffff }),
  }).map(({ group, extra, ...r }) => {
    const longest = Math.max(...r.seqlens);
    const blockSize = Math.min(caps.maxBlockSize, Math.max(r.blockSize, Math.ceil(longest / caps.maxTopk)));
    const nb = Math.ceil(longest / blockSize);
    return { ...r, blockSize, Hq: r.Hkv * group, causal: true, topk: Math.min(caps.maxTopk, nb + extra) };
  }).filter((s) => Math.ceil(Math.max(...s.seqlens) / s.blockSize) <= s.topk);
}

/** Runs route → forward on the backend and compares out with an oracle (and the routing with its indices). */
async function oracleCheck(ctx: PropertyContext, spec: ProblemSpec, oracle: Float64Array, expected: Int32Array): Promise<void> {
  const b = ctx.backend;
  const p = makeProblem(spec);
  await scoped(b, async (s) => {
    const d = await uploadProblem(s, p);
    const r = s.own(await b.route(d.q, d.k, p.layout, p.cfg));
    const idx = await b.routingIndices(r);
    const at = idx.findIndex((x, i) => x !== expected[i]);
    if (at >= 0) {
      const row = Math.floor(at / spec.topk);
      throw failure(spec, [`routing row (t=${Math.floor(row / spec.Hq)}, h=${row % spec.Hq}) = [${idx.subarray(row * spec.topk, (row + 1) * spec.topk).join(', ')}], expected [${expected.subarray(row * spec.topk, (row + 1) * spec.topk).join(', ')}]`]);
    }
    const { out } = await b.forward(d.q, d.k, d.v, r, p.layout, p.cfg);
    s.own(out);
    const cal = roundAll(spec.dtype, referenceForward(p.q64, p.k64, p.v64, expected, p.shape, p.layout, p.rcfg, Math.fround).out);
    const c = checkTolerance('out vs oracle', await s.f64(out), oracle, cal, { kind: 'forward', dtype: spec.dtype, shape: [p.shape.T, spec.Hq, spec.D] });
    if (!c.ok) throw failure(spec, [c.message]);
  });
}

export const oracleProperties: Property[] = [
  {
    group: 'oracles',
    name: 'topk >= #blocks equals dense causal attention',
    async run(ctx) {
      await forAll(ctx, denseSpecArb(ctx.backend.caps), async (spec) => {
        const p = makeProblem(spec);
        await oracleCheck(ctx, spec, maskedAttention(p, (t, key) => key <= t), oracleIndices(p, () => 0));
      });
    },
  },
  {
    group: 'oracles',
    name: 'topk = 1 equals block-local causal attention',
    async run(ctx) {
      const caps = ctx.backend.caps;
      const arb = denseSpecArb(caps).map((s) => ({ ...s, topk: 1, blockSize: Math.min(s.blockSize + 1, caps.maxBlockSize) }));
      await forAll(ctx, arb, async (spec) => {
        const p = makeProblem(spec);
        const B = spec.blockSize;
        const sameBlock = (t: number, key: number, start: number): boolean => key <= t && Math.floor((key - start) / B) === Math.floor((t - start) / B);
        await oracleCheck(ctx, spec, maskedAttention(p, sameBlock), oracleIndices(p, (cb) => cb));
      });
    },
  },
  {
    group: 'oracles',
    name: 'a small topk differs from dense attention (long sequence, random data)',
    async run(ctx) {
      const b = ctx.backend;
      const caps = b.caps;
      if (caps.maxBlockSize < 2) throw new Skip('needs blockSize >= 2');
      const arb = fc.record({
        len: fc.integer({ min: 64, max: 96 }), D: fc.constantFrom(...headDims(caps)), dtype: fc.constantFrom(...caps.dtypes),
        seed: fc.integer({ min: 1, max: 0x7fffffff }),
      }).map(({ len, ...r }): ProblemSpec => ({ ...r, seqlens: [len], Hq: 2, Hkv: 1, blockSize: Math.min(8, caps.maxBlockSize), topk: 2, causal: true }));
      await forAll(ctx, arb, async (spec) => {
        const p = makeProblem(spec);
        const dense = maskedAttention(p, (t, key) => key <= t);
        await scoped(b, async (s) => {
          const d = await uploadProblem(s, p);
          const r = s.own(await b.route(d.q, d.k, p.layout, p.cfg));
          const { out } = await b.forward(d.q, d.k, d.v, r, p.layout, p.cfg);
          s.own(out);
          const st = errorStats(await s.f64(out), dense);
          if (!(st.relRms > 0.05)) throw failure(spec, [`topk = 2 of ${Math.ceil(spec.seqlens[0]! / spec.blockSize)} blocks gives out within rel RMS ${st.relRms.toExponential(3)} of dense attention (expected > 5e-2): the routing has no effect`]);
        });
      });
    },
  },
];
