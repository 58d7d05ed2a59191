/**
 * Determinism (only when `caps.deterministic`): two identical runs of route, forward, backward (and
 * kconv) give bitwise-equal results, on a problem large enough for a backend to split its work.
 */
import { type Backend, type HostTensor, Rng } from '@moba/core';
import { failure, firstBitDiff, scoped, uploadProblem } from '../checks.js';
import { type ProblemSpec, makeProblem, nearestHeadDim, randomTensor } from '../problem.js';
import { type Property, Skip } from '../types.js';

/** All outputs of one route → forward → backward (→ kconv) run, as raw host data. */
async function runOnce(b: Backend, spec: ProblemSpec): Promise<Map<string, HostTensor['data'] | Int32Array>> {
  const p = makeProblem(spec);
  const res = new Map<string, HostTensor['data'] | Int32Array>();
  await scoped(b, async (s) => {
    const d = await uploadProblem(s, p);
    const r = s.own(await b.route(d.q, d.k, p.layout, p.cfg));
    res.set('routing', await b.routingIndices(r));
    const { out, lse } = await b.forward(d.q, d.k, d.v, r, p.layout, p.cfg);
    s.own(out);
    s.own(lse);
    const g = await b.backward(d.q, d.k, d.v, out, lse, d.dOut, r, p.layout, p.cfg);
    for (const [name, t] of Object.entries({ out, lse, ...g })) res.set(name, (await b.download(s.own(t))).data);
    if (b.caps.kconv) {
      const w = randomTensor(new Rng(spec.seed), spec.dtype, [spec.Hkv * spec.D, Math.min(3, b.caps.maxKconvWidth)], 0.5);
      const wd = await s.up(w.t);
      res.set("kconv k'", (await b.download(s.own(await b.kconv(d.k, wd, p.layout)))).data);
      const kg = await b.kconvBackward(d.k, wd, d.v, p.layout);
      res.set('kconv dk', (await b.download(s.own(kg.dk))).data);
      res.set('kconv dw', (await b.download(s.own(kg.dw))).data);
    }
  });
  return res;
}

export const determinismProperties: Property[] = [
  {
    group: 'determinism',
    name: 'two identical runs of route, forward, backward, kconv are bitwise equal',
    async run(ctx) {
      const b = ctx.backend;
      if (!b.caps.deterministic) {
        ctx.notCovered('determinism (caps.deterministic is false)');
        throw new Skip('caps.deterministic is false');
      }
      const lines: string[] = [];
      for (const dtype of b.caps.dtypes) {
        const spec: ProblemSpec = {
          seqlens: [300, 113], Hq: 4, Hkv: 2, D: nearestHeadDim(b.caps, 32), dtype, blockSize: Math.min(16, b.caps.maxBlockSize),
          topk: Math.min(4, b.caps.maxTopk), causal: true, seed: ctx.seed,
        };
        const a = await runOnce(b, spec);
        const c = await runOnce(b, spec);
        for (const [name, x] of a) {
          const at = firstBitDiff(x, c.get(name)!);
          if (at >= 0) lines.push(`${dtype} ${name}: runs differ first at flat index ${at} (${x[at]} vs ${c.get(name)![at]})`);
        }
        if (lines.length > 0) throw failure(spec, lines);
      }
    },
  },
];
