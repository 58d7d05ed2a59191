/**
 * Properties at the edges of the declared caps, which the small random generators reach only by chance:
 * every GQA group size 1..8 (Hkv = 2, plus MQA 8/1) with topk 7..14 on sequences of
 * 10 blocks, and sequences of several hundred blocks (blockSize 1..2, small D and heads) with topk up to
 * min(maxTopk, 64); the first long problem takes the largest topk up to 128 with every slot filled.
 */
import fc from 'fast-check';
import type { Capabilities } from '@moba/core';
import { forAll } from '../checks.js';
import { type ProblemSpec, fitMemory, headDims, nearestHeadDim, preferredDtype, topkArb } from '../problem.js';
import type { Property } from '../types.js';
import { attentionCheck } from './forward.js';

/** [group, Hkv] pairs of the GQA sweep. */
const GROUPS: readonly (readonly [number, number])[] = [[1, 2], [2, 2], [3, 2], [4, 2], [5, 2], [6, 2], [7, 2], [8, 2], [8, 1]];

/**
 * One problem per GQA group size, each with topk 6 + group (≤ maxTopk). One head dim and dtype throughout (the
 * random generators vary those): a GPU backend compiles its kernels for them once.
 */
export function groupSweepSpecs(caps: Capabilities, seed: number): ProblemSpec[] {
  return GROUPS.map(([G, Hkv], i) => fitMemory(caps, {
    seqlens: [30, 9], Hq: G * Hkv, Hkv, D: nearestHeadDim(caps, 8), dtype: preferredDtype(caps),
    blockSize: Math.min(3, caps.maxBlockSize), topk: Math.min(caps.maxTopk, 6 + G), causal: true, seed: seed + i,
  }));
}

/** A long problem and whether it runs under the backend's own routing (else a random valid one). */
export type LongSpec = ProblemSpec & { readonly own: boolean };

/** One sequence of 256..512 tokens (and maybe a short one) in blocks of 1..2: 128..512 blocks. */
export function longSpecArb(caps: Capabilities): fc.Arbitrary<LongSpec> {
  const causal = caps.nonCausal ? fc.boolean() : fc.constant(true);
  return fc.record({
    long: fc.integer({ min: 256, max: 512 }), short: fc.integer({ min: 0, max: 40 }),
    Hkv: fc.integer({ min: 1, max: 2 }), group: fc.integer({ min: 1, max: 2 }),
    D: fc.constantFrom(...headDims(caps, 8)), dtype: fc.constantFrom(...caps.dtypes),
    blockSize: fc.integer({ min: 1, max: Math.min(2, caps.maxBlockSize) }),
    topk: fc.oneof({ arbitrary: topkArb(caps), weight: 3 }, { arbitrary: fc.constant(Math.min(caps.maxTopk, 64)), weight: 1 }),
    causal, own: fc.boolean(), seed: fc.integer({ min: 1, max: 0x7fffffff }),
  }).map(({ long, short, group, ...r }) => fitMemory(caps, { ...r, seqlens: short > 0 ? [long, short] : [long], Hq: r.Hkv * group }));
}

/** The largest topk (≤ 128) on a sequence of topk + 45 blocks of one token, under the backend's routing. */
export function largestTopkSpec(caps: Capabilities, seed: number): LongSpec {
  const topk = Math.min(caps.maxTopk, 128);
  return fitMemory(caps, {
    seqlens: [topk + 45, 17], Hq: 2, Hkv: 1, D: nearestHeadDim(caps, 4), dtype: preferredDtype(caps), blockSize: 1, topk, causal: true, seed, own: true,
  });
}

export const reachProperties: Property[] = [
  {
    group: 'reach',
    name: 'every GQA group size 1..8 (Hkv = 2; 8/1) with topk 7..14: route, forward, backward match the reference',
    async run(ctx) {
      const failures: string[] = [];
      for (const spec of groupSweepSpecs(ctx.backend.caps, ctx.seed)) {
        try {
          await attentionCheck(ctx.backend, spec, { own: true, backward: true });
        } catch (e) {
          failures.push(`group ${spec.Hq / spec.Hkv}, Hkv ${spec.Hkv}: ${e instanceof Error ? e.message : String(e)}`);
        }
      }
      if (failures.length > 0) throw new Error(`seed=${ctx.seed}\n${failures.join('\n')}`);
    },
  },
  {
    group: 'reach',
    name: 'sequences of several hundred blocks, topk up to min(maxTopk, 64) (first the largest topk up to 128): forward and backward match',
    async run(ctx) {
      const caps = ctx.backend.caps;
      const numRuns = Math.max(1, Math.ceil(ctx.numRuns / 12)); // plus the largest-topk example: 2 long problems by default
      await forAll(ctx, longSpecArb(caps), (spec) => attentionCheck(ctx.backend, spec, { own: spec.own, backward: true }), numRuns, [largestTopkSpec(caps, ctx.seed)]);
    },
  },
];
