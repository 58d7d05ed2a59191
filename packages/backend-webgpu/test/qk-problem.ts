/**
 * Cases with fewer queries than keys (SPEC §8) for qk.test.ts: each is a testkit `QkSpec` with a label, expanded by
 * the testkit's `makeQkFullProblem` into a QK problem built on a whole self-attention problem (the query rows are
 * the last nq_i key rows of each sequence, bottom-right aligned; the full call's dOut is zero outside them), so the
 * CPU backend's full self-attention call gives a second result to compare with.
 */
import { type DType, Rng } from '@moba/core';
import type { QkSpec } from '@moba/testkit';

export interface QKCase extends QkSpec {
  readonly label: string;
}

/** A random case: several sequences, nq_i in {0, 1, a few, nk_i} (at least one query row in all). */
export function randomCase(rng: Rng, i: number, dtypes: readonly DType[]): QKCase {
  const blockSize = [1, 4, 16, 32, 64][rng.int(0, 4)]!;
  const nSeq = rng.int(1, 4);
  const nk = Array.from({ length: nSeq }, () => rng.int(1, Math.min(400, 12 * blockSize + 20)));
  const nq = nk.map((n): number => {
    const kind = rng.int(0, 3);
    return kind === 0 ? 0 : kind === 1 ? 1 : kind === 2 ? Math.min(n, rng.int(2, 9)) : n;
  });
  if (!nq.some((n) => n > 0)) nq[0] = 1;
  const Hkv = rng.int(1, 2);
  const group = [1, 2, 4][rng.int(0, 2)]!; // MHA, GQA, and MQA when Hkv = 1
  return {
    label: `case ${i}`, seqlens: nk, seqlensQ: nq, Hkv, Hq: Hkv * group, D: [8, 16, 40, 64][rng.int(0, 3)]!, dtype: dtypes[i % dtypes.length]!,
    blockSize, topk: rng.int(1, 6), causal: rng.next() < 0.7, seed: 1000 + i,
  };
}
