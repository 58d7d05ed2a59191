/**
 * End to end through the public one-call API: `moba()` (kconv → route → forward) and `mobaBackward()`
 * against the reference chain, stage by stage: k' vs referenceKconv, the routing (tie-robust) on the
 * backend's k', out/lse and dq/dv vs the reference on that k', and dk/dw through referenceKconvBackward.
 */
import fc from 'fast-check';
import { type DeviceTensor, type ToleranceCheck, checkTolerance, moba, mobaBackward, toFloat64 } from '@moba/core';
import { referenceKconv, referenceKconvBackward } from '@moba/core/reference';
import { attentionChecks, expectWithin, failure, forAll, referencePair, roundAll } from '../checks.js';
import { routingErrors } from '../routing-checks.js';
import { describeSpec, makeProblem, specArb } from '../problem.js';
import type { Property } from '../types.js';
import { kconvWeight } from './kconv.js';

export const mobaProperties: Property[] = [
  {
    group: 'moba',
    name: 'moba() and mobaBackward() end to end (kconv on when supported) match the reference chain',
    async run(ctx) {
      const b = ctx.backend;
      const caps = b.caps;
      if (!caps.kconv) ctx.notCovered('moba() with kconv (kconv not in caps)');
      const widths = caps.kconv ? fc.integer({ min: 1, max: Math.min(5, caps.maxKconvWidth) }) : fc.constant(0);
      const arb = fc.tuple(specArb(caps), widths).map(([s, width]) => ({ ...s, width }));
      await forAll(ctx, arb, async (spec) => {
        const p = makeProblem(spec);
        const { T, Hkv, D, dtype } = p.shape;
        const w = spec.width > 0 ? kconvWeight(spec) : undefined;
        const res = await moba(b, { q: p.q, k: p.k, v: p.v, cuSeqlens: p.layout.cuSeqlens, ...(w ? { kconvWeight: w.t } : {}) }, p.cfg);
        const mc = res.ctx;
        const owned: DeviceTensor[] = [];
        try {
          const checks: ToleranceCheck[] = [];
          const kUsed = w ? toFloat64(await b.download(mc.kUsed)) : p.k64;
          const C = Hkv * D;
          if (w) {
            const ref = referenceKconv(p.k64, w.f64, C, spec.width, p.layout);
            const cal = roundAll(dtype, referenceKconv(p.k64, w.f64, C, spec.width, p.layout, Math.fround));
            checks.push(checkTolerance("k' (kconv)", kUsed, ref, cal, { kind: 'forward', dtype, shape: [T, Hkv, D] }));
          }
          const idx = await b.routingIndices(res.routing);
          const errs = routingErrors(idx, p.q64, kUsed, p.shape, p.seqs, p.layout, p.rcfg);
          if (errs.length > 0) throw failure(spec, errs);
          const g = await mobaBackward(b, mc, p.dOut);
          owned.push(g.dq, g.dk, g.dv, ...(g.dKconvWeight ? [g.dKconvWeight] : []));
          const rp = referencePair(p, idx, { keys: kUsed });
          const got = {
            out: toFloat64(await b.download(res.out)), lse: toFloat64(await b.download(res.lse)),
            dq: toFloat64(await b.download(g.dq)), dv: toFloat64(await b.download(g.dv)),
          };
          const dk = toFloat64(await b.download(g.dk));
          checks.push(...attentionChecks('moba', p.shape, got, rp));
          if (w) {
            if (!g.dKconvWeight) throw failure(spec, ['mobaBackward returned no dKconvWeight although a kconv weight was given']);
            const rk = referenceKconvBackward(p.k64, w.f64, rp.ref.dk, C, spec.width, p.layout);
            const ck = referenceKconvBackward(p.k64, w.f64, rp.cal.dk, C, spec.width, p.layout, Math.fround);
            checks.push(
              checkTolerance('moba dk (through kconv)', dk, rk.dk, roundAll(dtype, ck.dk), { kind: 'backward', dtype, shape: [T, Hkv, D] }),
              checkTolerance('moba dKconvWeight', toFloat64(await b.download(g.dKconvWeight)), rk.dw, roundAll(dtype, ck.dw), { kind: 'backward', dtype, shape: [C, spec.width] }),
            );
          } else {
            checks.push(checkTolerance('moba dk', dk, rp.ref.dk, rp.cal.dk, { kind: 'backward', dtype, shape: [T, Hkv, D] }));
          }
          expectWithin(`${spec.width > 0 ? `kconv W=${spec.width} ` : ''}${describeSpec(spec)}`, checks);
        } finally {
          b.dispose(...owned);
          mc.dispose();
        }
      });
    },
  },
];

