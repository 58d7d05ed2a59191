/**
 * Forward properties (SPEC §4): `out [T, Hq, D]` and `lse [T, Hq]` match the f64 reference within the
 * tolerance policy, under random valid routings (attention tested apart from the router, as in
 * FlashMoBA) and under the backend's own routing (checked valid first, then fed to the reference).
 */
import { type Backend, Rng } from '@moba/core';
import { attentionChecks, expectWithin, failure, forAll, referencePair, runAttention, scoped, uploadProblem } from '../checks.js';
import { routingErrors } from '../routing-checks.js';
import { type ProblemSpec, type SpecLimits, makeProblem, randomRouting, specArb } from '../problem.js';
import type { Property, PropertyContext } from '../types.js';

/**
 * Checks forward (and backward) of one problem under a random valid routing (`own: false`) or the backend's
 * routing (`own: true`, checked valid first); throws a failure naming the spec.
 */
export async function attentionCheck(b: Backend, spec: ProblemSpec, opts: { own: boolean; backward: boolean }): Promise<void> {
  const p = makeProblem(spec);
  await scoped(b, async (s) => {
    const d = await uploadProblem(s, p);
    let routing;
    let indices;
    if (opts.own) {
      routing = s.own(await b.route(d.q, d.k, p.layout, p.cfg));
      indices = await b.routingIndices(routing);
      const errs = routingErrors(indices, p.q64, p.k64, p.shape, p.seqs, p.layout, p.rcfg);
      if (errs.length > 0) throw failure(spec, errs);
    } else {
      indices = randomRouting(p, new Rng(spec.seed + 1));
      routing = s.own(await b.routingFromIndices(indices.slice(), { T: p.shape.T, Hq: p.shape.Hq }, p.layout, p.cfg));
    }
    const got = await runAttention(s, p, d, routing, { backward: opts.backward });
    const label = opts.own ? 'own routing:' : 'random routing:';
    expectWithin(spec, attentionChecks(label, p.shape, got, referencePair(p, indices, { backward: opts.backward })));
  });
}

/**
 * Checks forward (and backward) of random problems under random routings (`own: false`) or the
 * backend's routing (`own: true`). Shared by the forward and backward properties.
 */
export async function attentionProperty(
  ctx: PropertyContext, opts: { own: boolean; backward: boolean; limits?: SpecLimits; numRuns?: number },
): Promise<void> {
  await forAll(ctx, specArb(ctx.backend.caps, opts.limits), (spec) => attentionCheck(ctx.backend, spec, opts), opts.numRuns);
}

/**
 * Production-sized shapes: the head dims and block sizes GPU fast paths are built for (D 64/128,
 * blocks of 32..128 tokens, a few hundred tokens), which the small default generators never reach.
 */
export const PRODUCTION_LIMITS: SpecLimits = {
  headDims: [64, 128], minBlockSize: 32, maxBlockSize: 128, minTokens: 64, maxTokens: 260, maxSeqs: 2, maxTopk: 4, maxHkv: 1, maxGroup: 3,
};


export const forwardProperties: Property[] = [
  {
    group: 'forward',
    name: 'out and lse match the reference under random valid routings',
    run: (ctx) => attentionProperty(ctx, { own: false, backward: false }),
  },
  {
    group: 'forward',
    name: "out and lse match the reference under the backend's own routing",
    run: (ctx) => attentionProperty(ctx, { own: true, backward: false }),
  },
  {
    group: 'forward',
    name: 'production shapes (D 64/128, blocks of 32..128): forward and backward match the reference under own and random routings',
    run: async (ctx) => {
      const numRuns = Math.max(2, Math.ceil(ctx.numRuns / 6));
      await attentionProperty(ctx, { own: true, backward: true, limits: PRODUCTION_LIMITS, numRuns });
      await attentionProperty(ctx, { own: false, backward: true, limits: PRODUCTION_LIMITS, numRuns });
    },
  },
];
