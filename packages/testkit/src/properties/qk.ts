/**
 * Fewer queries than keys (SPEC §8): with `caps.qkLayout`, route/forward/backward on random `{ cuSeqlensQ,
 * cuSeqlensK }` layouts (several sequences, nq in {0, 1, a few, nk}, bottom-right aligned; GQA/MQA; caps' dtypes;
 * causal and non-causal) against the float64 reference, and routingFromIndices with such a layout. On every
 * backend: a layout whose boundaries are equal is self-attention, and the layout is validated first (nq > nk is
 * E_RANGE, boundaries of different lengths E_SHAPE, both naming cuSeqlensQ); without `caps.qkLayout` a real
 * nq < nk layout is E_UNSUPPORTED naming cuSeqlensQ.
 */
import { type Backend, type QKLayout, MobaError, Rng } from '@moba/core';
import { attentionChecks, expectWithin, failure, forAll, referencePair, runAttention, scoped, uploadProblem, withTimeout } from '../checks.js';
import { routingErrors } from '../routing-checks.js';
import { makeProblem, specArb } from '../problem.js';
import { type QkSpec, describeQkSpec, makeQkProblem, qkSpecArb, randomQkRouting } from '../qk-problem.js';
import { type Property, type PropertyContext, Skip } from '../types.js';

const LIMITS = { maxSeqs: 4, maxTokens: 48 } as const;

/** Skips visibly unless the backend declares `caps.qkLayout`. */
function needQk(ctx: PropertyContext): void {
  if (ctx.backend.caps.qkLayout) return;
  ctx.notCovered('fewer queries than keys (caps.qkLayout is false)');
  throw new Skip('fewer queries than keys: caps.qkLayout is false');
}

/** The backend's routing on a QK problem, checked against SPEC §3 at each row's bottom-right aligned key position. */
async function qkCheck(b: Backend, spec: QkSpec, opts: { own: boolean; backward: boolean }): Promise<void> {
  const p = makeQkProblem(spec);
  await scoped(b, async (s) => {
    const d = await uploadProblem(s, p);
    let routing;
    let indices;
    if (opts.own) {
      routing = s.own(await b.route(d.q, d.k, p.layout, p.cfg));
      indices = await b.routingIndices(routing);
      const errs = routingErrors(indices, p.q64, p.k64, p.shape, p.seqs, p.keys, p.rcfg, { pos: p.queries.pos });
      if (errs.length > 0) throw failure(describeQkSpec(spec), errs);
    } else {
      indices = randomQkRouting(p, new Rng(spec.seed + 1));
      routing = s.own(await b.routingFromIndices(indices.slice(), { T: p.shape.T, Hq: p.shape.Hq }, p.layout, p.cfg));
      const back = await b.routingIndices(routing);
      const at = back.length !== indices.length ? 0 : back.findIndex((x, i) => x !== indices![i]);
      if (at >= 0) throw failure(describeQkSpec(spec), [`routingIndices differs from the indices given to routingFromIndices (QK layout) at flat index ${at}: got ${back[at]}, gave ${indices[at]}`]);
    }
    const got = await runAttention(s, p, d, routing, { backward: opts.backward });
    const label = `${opts.own ? 'own' : 'random'} routing, QK layout:`;
    expectWithin(describeQkSpec(spec), attentionChecks(label, p.shape, got, referencePair(p, indices, { backward: opts.backward })));
  });
}

/** A MobaError of `code` naming `param`, or a description of what happened instead (null when it matches). */
async function expectError(what: string, code: string, param: string, fn: () => Promise<unknown>): Promise<string | null> {
  try {
    await withTimeout(Promise.resolve().then(fn), 30_000, what);
  } catch (e) {
    if (e instanceof MobaError || (e instanceof Error && e.name === 'MobaError')) {
      const m = e as MobaError;
      if (m.code !== code) return `${what}: threw ${m.code} (${m.message}), expected ${code}`;
      if (m.param !== param && !m.message.includes(param)) return `${what}: threw ${code} naming ${m.param ?? 'no parameter'} (${m.message}), expected it to name ${param}`;
      return null;
    }
    return `${what}: threw ${e instanceof Error ? `${e.name}: ${e.message}` : String(e)}, expected a MobaError ${code}`;
  }
  return `${what}: did not throw, expected a MobaError ${code} naming ${param}`;
}

export const qkProperties: Property[] = [
  {
    group: 'qk',
    name: 'route() with fewer queries than keys selects the blocks of the bottom-right aligned key position (tie-robust)',
    async run(ctx) {
      needQk(ctx);
      await forAll(ctx, qkSpecArb(ctx.backend.caps, LIMITS), (spec) => qkCheck(ctx.backend, spec, { own: true, backward: false }));
    },
  },
  {
    group: 'qk',
    name: 'forward (out, lse) and backward (dq of the query rows; dk, dv of every key row) with fewer queries than keys match the reference, own and random routings',
    async run(ctx) {
      needQk(ctx);
      await forAll(ctx, qkSpecArb(ctx.backend.caps, LIMITS), (spec) => qkCheck(ctx.backend, spec, { own: true, backward: true }));
      await forAll(ctx, qkSpecArb(ctx.backend.caps, LIMITS), (spec) => qkCheck(ctx.backend, spec, { own: false, backward: true }));
    },
  },
  {
    group: 'qk',
    name: 'a QK layout whose query and key boundaries are equal is self-attention (same routing where deterministic, outputs within tolerance)',
    async run(ctx) {
      const b = ctx.backend;
      await forAll(ctx, specArb(b.caps, LIMITS), async (spec) => {
        const p = makeProblem(spec);
        const qk: QKLayout = { cuSeqlensQ: p.layout.cuSeqlens.slice(), cuSeqlensK: p.layout.cuSeqlens.slice() };
        await scoped(b, async (s) => {
          const d = await uploadProblem(s, p);
          const self = await b.routingIndices(s.own(await b.route(d.q, d.k, p.layout, p.cfg)));
          const rq = s.own(await b.route(d.q, d.k, qk, p.cfg));
          const idx = await b.routingIndices(rq);
          // a backend that does not declare determinism may break near-ties differently on two calls: the rule below decides
          const at = !b.caps.deterministic ? -1 : idx.length !== self.length ? 0 : idx.findIndex((x, i) => x !== self[i]);
          if (at >= 0) throw failure(spec, [`route() with { cuSeqlensQ = cuSeqlensK } differs from route() with { cuSeqlens } at flat index ${at}: got ${idx[at]}, expected ${self[at]}`]);
          const errs = routingErrors(idx, p.q64, p.k64, p.shape, p.seqs, p.layout, p.rcfg);
          if (errs.length > 0) throw failure(spec, errs);
          const fromIdx = s.own(await b.routingFromIndices(idx.slice(), { T: p.shape.T, Hq: p.shape.Hq }, qk, p.cfg));
          const got = await runAttention(s, { ...p, layout: qk }, d, fromIdx, { backward: true });
          expectWithin(spec, attentionChecks('equal boundaries:', p.shape, got, referencePair(p, idx)));
        });
      });
    },
  },
  {
    group: 'qk',
    name: 'the QK layout is validated first: nq > nk is E_RANGE, boundaries of different lengths E_SHAPE; without caps.qkLayout nq < nk is E_UNSUPPORTED (all naming cuSeqlensQ)',
    async run(ctx) {
      const b = ctx.backend;
      const caps = b.caps;
      const spec = { seqlens: [5, 3], Hq: 2, Hkv: 1, D: specDim(b), dtype: caps.dtypes[0]!, blockSize: Math.min(2, caps.maxBlockSize), topk: Math.min(2, caps.maxTopk), causal: true, seed: ctx.seed };
      const p = makeProblem(spec); // q, k, v [8, ·, D]
      const cu = (...x: number[]): Int32Array => Int32Array.from(x);
      const lines: (string | null)[] = [];
      await scoped(b, async (s) => {
        const d = await uploadProblem(s, p);
        const r = s.own(await b.route(d.q, d.k, p.layout, p.cfg));
        const calls = (layout: QKLayout): [string, () => Promise<unknown>][] => [
          ['route', () => b.route(d.q, d.k, layout, p.cfg)],
          ['forward', () => b.forward(d.q, d.k, d.v, r, layout, p.cfg)],
          ['routingFromIndices', () => b.routingFromIndices(new Int32Array(8 * 2 * spec.topk).fill(-1), { T: 8, Hq: 2 }, layout, p.cfg)],
        ];
        // 8 query rows against 8 keys, but sequence 1 has 4 queries and 3 keys
        for (const [what, fn] of calls({ cuSeqlensQ: cu(0, 4, 8), cuSeqlensK: cu(0, 5, 8) })) lines.push(await expectError(`${what} with nq > nk`, 'E_RANGE', 'cuSeqlensQ', fn));
        for (const [what, fn] of calls({ cuSeqlensQ: cu(0, 8), cuSeqlensK: cu(0, 5, 8) })) lines.push(await expectError(`${what} with cuSeqlensQ shorter than cuSeqlensK`, 'E_SHAPE', 'cuSeqlensQ', fn));
        if (!caps.qkLayout) {
          ctx.notCovered('fewer queries than keys (caps.qkLayout is false)');
          const q2 = await s.up(makeQkProblem({ ...spec, seqlensQ: [1, 1] }).q); // 2 query rows: the last of each sequence
          const real = { cuSeqlensQ: cu(0, 1, 2), cuSeqlensK: cu(0, 5, 8) };
          lines.push(await expectError('route with nq < nk (caps.qkLayout false)', 'E_UNSUPPORTED', 'cuSeqlensQ', () => b.route(q2, d.k, real, p.cfg)));
          lines.push(await expectError('routingFromIndices with nq < nk (caps.qkLayout false)', 'E_UNSUPPORTED', 'cuSeqlensQ',
            () => b.routingFromIndices(new Int32Array(2 * 2 * spec.topk).fill(-1), { T: 2, Hq: 2 }, real, p.cfg)));
        }
      });
      const bad = lines.filter((x): x is string => x !== null);
      if (bad.length > 0) throw failure(`seqlens(keys)=[5,3] Hq=2 Hkv=1 D=${spec.D} dtype=${spec.dtype}`, bad);
    },
  },
];

function specDim(b: Backend): number {
  const c = b.caps;
  return c.headDims ? Math.min(...c.headDims) : Math.min(8, c.maxHeadDim);
}
