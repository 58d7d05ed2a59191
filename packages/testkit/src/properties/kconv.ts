/**
 * Key-convolution properties (SPEC §6): `kconv(k [T, Hkv, D], w [Hkv·D, W])` and its backward
 * (`dk [T, Hkv, D]`, `dw [Hkv·D, W]`) match the f64 reference for widths 1..min(5, maxKconvWidth),
 * over packed varlen batches (taps never cross a sequence start); with `caps.kconvWeightDtype: 'any'` the
 * weight's dtype is drawn from caps.dtypes independently of k's.
 */
import fc from 'fast-check';
import { type Capabilities, type DType, Rng, checkTolerance } from '@moba/core';
import { referenceKconv, referenceKconvBackward } from '@moba/core/reference';
import { expectWithin, forAll, roundAll, scoped } from '../checks.js';
import { type ProblemSpec, randomTensor, specArb } from '../problem.js';
import { type Property, Skip } from '../types.js';

/** Specs with a kconv width, narrowed by caps.maxKconvWidth. */
export function kconvSpecArb(caps: Capabilities): fc.Arbitrary<ProblemSpec & { width: number }> {
  return fc.tuple(specArb(caps), fc.integer({ min: 1, max: Math.min(5, caps.maxKconvWidth) })).map(([s, width]) => ({ ...s, width }));
}

/** Kconv weights `[Hkv·D, W]` small enough that SiLU's both regimes occur. */
export function kconvWeight(spec: ProblemSpec & { width: number }, dtype: DType = spec.dtype): ReturnType<typeof randomTensor> {
  return randomTensor(new Rng(spec.seed ^ 0x6b63), dtype, [spec.Hkv * spec.D, spec.width], 0.5);
}

/** The weight dtype a spec tests: k's, or with `kconvWeightDtype: 'any'` one of caps.dtypes chosen by the seed. */
export function kconvWeightDtype(caps: Capabilities, spec: ProblemSpec): DType {
  return (caps.kconvWeightDtype ?? 'k') === 'any' ? caps.dtypes[spec.seed % caps.dtypes.length]! : spec.dtype;
}

export const kconvProperties: Property[] = [
  {
    group: 'kconv',
    name: "kconv forward (k') and backward (dk, dw) match the reference, widths 1..5, varlen",
    async run(ctx) {
      const b = ctx.backend;
      if (!b.caps.kconv) {
        ctx.notCovered('kconv (not in caps)');
        throw new Skip('kconv is not in caps');
      }
      await forAll(ctx, kconvSpecArb(b.caps), async (spec) => {
        const rng = new Rng(spec.seed);
        const T = spec.seqlens.reduce((a, c) => a + c, 0);
        const shape = [T, spec.Hkv, spec.D];
        const k = randomTensor(rng, spec.dtype, shape);
        const dkOut = randomTensor(rng, spec.dtype, shape);
        const wdt = kconvWeightDtype(b.caps, spec);
        const w = kconvWeight(spec, wdt);
        const C = spec.Hkv * spec.D;
        const W = spec.width;
        const cu = new Int32Array(spec.seqlens.length + 1);
        spec.seqlens.forEach((n, i) => (cu[i + 1] = cu[i]! + n));
        const layout = { cuSeqlens: cu };
        const dt = spec.dtype;
        await scoped(b, async (s) => {
          const kd = await s.up(k.t);
          const wd = await s.up(w.t);
          const kOut = s.own(await b.kconv(kd, wd, layout));
          const g = await b.kconvBackward(kd, wd, await s.up(dkOut.t), layout);
          s.own(g.dk);
          s.own(g.dw);
          const ref = referenceKconv(k.f64, w.f64, C, W, layout);
          const cal = roundAll(dt, referenceKconv(k.f64, w.f64, C, W, layout, Math.fround));
          const rg = referenceKconvBackward(k.f64, w.f64, dkOut.f64, C, W, layout);
          const cg = referenceKconvBackward(k.f64, w.f64, dkOut.f64, C, W, layout, Math.fround);
          expectWithin(`T=${T} seqlens=[${spec.seqlens.join(',')}] Hkv=${spec.Hkv} D=${spec.D} dtype=${dt} weight dtype=${wdt} W=${W} dataSeed=${spec.seed}`, [
            checkTolerance(`kconv W=${W} k'`, await s.f64(kOut), ref, cal, { kind: 'forward', dtype: dt, shape }),
            checkTolerance(`kconv W=${W} dk`, await s.f64(g.dk), rg.dk, roundAll(dt, cg.dk), { kind: 'backward', dtype: dt, shape }),
            checkTolerance(`kconv W=${W} dw`, await s.f64(g.dw), rg.dw, roundAll(wdt, cg.dw), { kind: 'backward', dtype: wdt, shape: [C, W] }),
          ]);
        });
      });
    },
  },
];
