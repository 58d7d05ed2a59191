/**
 * Routing properties (SPEC §3): validity of `backend.route` with the tie-robust rule (FlashMoBA's
 * `moba_verifier`), exact ties to the higher block index, the `[T, Hq, topk]` round trip, and a large
 * problem checked against the exact top-k and rerun (what catches FlashMoBA's top-k race, as the peer measurements found).
 */
import fc from 'fast-check';
import { MobaError, Rng, fromFloat, toFloat64 } from '@moba/core';
import { failure, firstBitDiff, forAll, scoped } from '../checks.js';
import { routingErrors } from '../routing-checks.js';
import { type ProblemSpec, describeSpec, makeProblem, nearestHeadDim, preferredDtype, randomRouting, specArb } from '../problem.js';
import { type Property, Skip } from '../types.js';

/** Keys whose blocks are identical copies of one block, so every centroid (and score) ties exactly. */
function tiedKeys(spec: ProblemSpec): Float64Array {
  const { Hkv, D, blockSize: B } = spec;
  const T = spec.seqlens.reduce((a, b) => a + b, 0);
  const row = Hkv * D;
  const one = toFloat64(fromFloat(new Rng(spec.seed ^ 0x5eed).normals(B * row), spec.dtype, [B, Hkv, D]));
  const keys = new Float64Array(T * row);
  for (let t = 0, s = 0, start = 0; t < T; t++) {
    while (t >= start + spec.seqlens[s]!) start += spec.seqlens[s++]!;
    keys.set(one.subarray(((t - start) % B) * row, ((t - start) % B + 1) * row), t * row);
  }
  return keys;
}

export const routingProperties: Property[] = [
  {
    group: 'routing',
    name: 'route() is valid: count, own block, no future block, ascending/-1 padded, scores >= k-th best - eps',
    async run(ctx) {
      const b = ctx.backend;
      await forAll(ctx, specArb(b.caps), async (spec) => {
        const p = makeProblem(spec);
        await scoped(b, async (s) => {
          const r = s.own(await b.route(await s.up(p.q), await s.up(p.k), p.layout, p.cfg));
          const idx = await b.routingIndices(r);
          const errs = routingErrors(idx, p.q64, p.k64, p.shape, p.seqs, p.layout, p.rcfg);
          if (errs.length > 0) throw failure(spec, errs);
        });
      });
    },
  },
  {
    group: 'routing',
    name: 'exact ties (identical key blocks) go to the higher block index',
    async run(ctx) {
      const b = ctx.backend;
      const arb = specArb(b.caps, { maxTokens: 6 }).chain((spec) =>
        fc.array(fc.integer({ min: 1, max: 6 }), { minLength: 1, maxLength: 2 }).map((blocks) => ({ ...spec, seqlens: blocks.map((n) => n * spec.blockSize) })),
      );
      await forAll(ctx, arb, async (spec) => {
        const p = makeProblem(spec, tiedKeys(spec));
        await scoped(b, async (s) => {
          const r = s.own(await b.route(await s.up(p.q), await s.up(p.k), p.layout, p.cfg));
          const errs = routingErrors(await b.routingIndices(r), p.q64, p.k64, p.shape, p.seqs, p.layout, p.rcfg, { exactTies: true });
          if (errs.length > 0) throw failure(spec, errs);
        });
      });
    },
  },
  {
    group: 'routing',
    name: 'routingFromIndices -> routingIndices round-trips any valid routing',
    async run(ctx) {
      const b = ctx.backend;
      await forAll(ctx, specArb(b.caps), async (spec) => {
        const p = makeProblem(spec);
        const idx = randomRouting(p, new Rng(spec.seed + 1));
        await scoped(b, async (s) => {
          const r = s.own(await b.routingFromIndices(idx.slice(), { T: p.shape.T, Hq: p.shape.Hq }, p.layout, p.cfg));
          const back = await b.routingIndices(r);
          const at = back.length !== idx.length ? 0 : back.findIndex((x, i) => x !== idx[i]);
          if (at >= 0) throw failure(spec, [`routingIndices differs from the given indices at flat index ${at}: got ${back[at]}, gave ${idx[at]}`]);
        });
      });
    },
  },
  {
    group: 'routing',
    name: 'large problem (T = 2048, 4 heads): exact top-k outside near-ties, identical across two runs',
    async run(ctx) {
      const b = ctx.backend;
      const caps = b.caps;
      const blockSize = Math.min(16, caps.maxBlockSize);
      const spec: ProblemSpec = {
        seqlens: [1536, 512], Hq: 4, Hkv: 2, D: nearestHeadDim(caps, 64), dtype: preferredDtype(caps),
        blockSize, topk: Math.min(8, caps.maxTopk), causal: true, seed: ctx.seed,
      };
      const p = makeProblem(spec);
      await scoped(b, async (s) => {
        let q, k, r1;
        try {
          q = await s.up(p.q);
          k = await s.up(p.k);
          r1 = s.own(await b.route(q, k, p.layout, p.cfg));
        } catch (e) {
          if (e instanceof MobaError && e.code === 'E_MEMORY') {
            ctx.notCovered(`large routing check (${describeSpec(spec)} exceeds caps.memoryBytes)`);
            throw new Skip(`the large routing problem exceeds caps.memoryBytes: ${e.message}`);
          }
          throw e;
        }
        const idx1 = await b.routingIndices(r1);
        const r2 = s.own(await b.route(q, k, p.layout, p.cfg));
        const idx2 = await b.routingIndices(r2);
        const lines = routingErrors(idx1, p.q64, p.k64, p.shape, p.seqs, p.layout, p.rcfg, { maxReports: 8 });
        const diff = firstBitDiff(idx1, idx2);
        if (diff >= 0) {
          let rows = 0;
          for (let i = 0; i < idx1.length; i += spec.topk) {
            if (idx1.subarray(i, i + spec.topk).some((x, j) => x !== idx2[i + j])) rows++;
          }
          const row = Math.floor(diff / spec.topk);
          lines.push(`two identical route() calls differ in ${rows} of ${p.shape.T * p.shape.Hq} rows; first at (t=${Math.floor(row / spec.Hq)}, h=${row % spec.Hq})`);
        }
        if (lines.length > 0) throw failure(`${describeSpec(spec)} seed=${ctx.seed}`, lines);
      });
    },
  },
];

