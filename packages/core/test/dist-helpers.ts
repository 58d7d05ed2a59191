// Generators shared by the context-parallel tests (issue 15, src/cp): small packed layouts with lengths that are
// not multiples of B, random G and modes, and a brute-force "selected remote blocks" oracle.
import fc from 'fast-check';
import { type ShardLayout, type ShardMode, sequences } from '../src/index.js';

export interface DistCase {
  readonly lens: number[];
  readonly B: number;
  readonly G: number;
  readonly mode: ShardMode;
  readonly Hkv: number;
  readonly group: number;
  readonly D: number;
  readonly topk: number;
  readonly causal: boolean;
  readonly seed: number;
}

export const distCase = (maxLen = 120): fc.Arbitrary<DistCase> =>
  fc.record({
    lens: fc.array(fc.integer({ min: 1, max: maxLen }), { minLength: 1, maxLength: 3 }),
    B: fc.constantFrom(4, 8, 16),
    G: fc.integer({ min: 1, max: 6 }),
    mode: fc.constantFrom<ShardMode>('contiguous', 'zigzag'),
    Hkv: fc.integer({ min: 1, max: 2 }),
    group: fc.integer({ min: 1, max: 2 }),
    D: fc.constantFrom(2, 4, 8),
    topk: fc.integer({ min: 1, max: 4 }),
    causal: fc.boolean(),
    seed: fc.integer({ min: 1, max: 2 ** 30 }),
  });

export const cuOf = (lens: readonly number[]): Int32Array => {
  const cu = new Int32Array(lens.length + 1);
  lens.forEach((l, i) => (cu[i + 1] = cu[i]! + l));
  return cu;
};

/** Brute force: for each rank, the keys "globalBlock*Hkv+kvHead" its rows selected and it does not own. */
export function selectedRemote(indices: Int32Array, cu: Int32Array, B: number, shard: ShardLayout, Hq: number, Hkv: number, topk: number): Set<number>[] {
  const seqs = sequences({ cuSeqlens: cu }, B);
  const out = Array.from({ length: shard.G }, () => new Set<number>());
  for (let t = 0; t < seqs.seqOf.length; t++) {
    const s = seqs.seqs[seqs.seqOf[t]!]!;
    const r = shard.rowOwner[t]!;
    for (let h = 0; h < Hq; h++) for (let i = 0; i < topk; i++) {
      const j = indices[(t * Hq + h) * topk + i]!;
      if (j >= 0 && shard.blockOwner[s.blockBase + j] !== r) out[r]!.add((s.blockBase + j) * Hkv + Math.floor(h / (Hq / Hkv)));
    }
  }
  return out;
}
