/**
 * The block-exchange plan of context-parallel MoBA (issue 15): given a routing (`[T, Hq, topk]`, the
 * reference's format: indices of blocks in the query's sequence, -1 padded) and a shard layout, what each
 * rank receives (centroids by all-gather, the K/V of the remote blocks its queries selected), what each owner
 * sends, and the dK/dV partials that go back. A request is one (owner, sequence, block, kv head): the query
 * heads of a GQA group and all of a rank's rows that select the same block share it (deduped).
 */
import type { Layout } from '../config.js';
import { sequences } from '../config.js';
import { MobaError } from '../errors.js';
import type { ShardLayout } from './shard.js';

/** One block of one kv head: `block` is the global block number (`sequences()` numbering). */
export interface BlockRequest {
  readonly owner: number;
  readonly seq: number;
  /** Index of the block in its sequence. */
  readonly index: number;
  readonly block: number;
  readonly kvHead: number;
}

export interface ExchangeSizes {
  readonly Hq: number;
  readonly Hkv: number;
  readonly D: number;
  readonly topk: number;
  /** Bytes of a K or V element on the wire (2 for f16/bf16, 4 for f32). */
  readonly dtypeBytes: number;
}

export interface RankExchange {
  /** Remote blocks this rank's queries selected, unique, sorted by (owner, seq, index, kvHead). */
  readonly requests: readonly BlockRequest[];
  /** What this rank sends: `sends[dst]` = its blocks that rank `dst` requested (same order). */
  readonly sends: readonly (readonly BlockRequest[])[];
  /** dK/dV partials this rank returns = its `requests`; `gradReturns[owner]` = those of `owner`. */
  readonly gradReturns: readonly (readonly BlockRequest[])[];
  /** Centroid bytes received by the all-gather: every block it does not own, all kv heads. */
  readonly centroidBytes: number;
  /** K and V bytes received: requests × B × D × dtypeBytes × 2 (a partial last block counts as B). */
  readonly kvBytes: number;
  /** dK and dV bytes this rank sends back, in f32: requests × B × D × 4 × 2. */
  readonly gradBytes: number;
}

export interface ExchangePlan {
  readonly G: number;
  readonly ranks: readonly RankExchange[];
}

const cmp = (a: BlockRequest, b: BlockRequest): number => a.owner - b.owner || a.seq - b.seq || a.index - b.index || a.kvHead - b.kvHead;

export function exchangePlan(indices: Int32Array, layout: Layout, shard: ShardLayout, sizes: ExchangeSizes): ExchangePlan {
  const { Hq, Hkv, D, topk, dtypeBytes } = sizes;
  const B = shard.blockSize;
  if (!Number.isInteger(Hkv) || Hkv < 1 || !Number.isInteger(Hq) || Hq % Hkv !== 0) throw new MobaError('E_SHAPE', `Hq = ${Hq} must be a positive multiple of Hkv = ${Hkv}`, 'Hq');
  if (!Number.isInteger(topk) || topk < 1) throw new MobaError('E_RANGE', `topk = ${topk} is invalid: must be a positive integer`, 'topk');
  if (!(dtypeBytes === 2 || dtypeBytes === 4 || dtypeBytes === 8)) throw new MobaError('E_RANGE', `dtypeBytes = ${dtypeBytes} is invalid: must be 2, 4 or 8`, 'dtypeBytes');
  const seqs = sequences(layout, B);
  const T = seqs.seqOf.length;
  if (seqs.totalBlocks !== shard.blockOwner.length || shard.rowOwner.length !== T) throw new MobaError('E_SHAPE', 'shard was made for another layout or block size', 'shard');
  if (!(indices instanceof Int32Array) || indices.length !== T * Hq * topk) throw new MobaError('E_SHAPE', `indices must be an Int32Array of T·Hq·topk = ${T * Hq * topk}`, 'indices');
  const G = shard.G;
  const group = Hq / Hkv;
  const seen: Set<number>[] = Array.from({ length: G }, () => new Set());
  for (let t = 0; t < T; t++) {
    const s = seqs.seqs[seqs.seqOf[t]!]!;
    const me = shard.rowOwner[t]!;
    for (let h = 0; h < Hq; h++) {
      for (let i = 0; i < topk; i++) {
        const j = indices[(t * Hq + h) * topk + i]!;
        if (j < 0) continue;
        if (j >= s.nBlocks) throw new MobaError('E_RANGE', `indices[${t}, ${h}, ${i}] = ${j} is past the sequence's ${s.nBlocks} blocks`, 'indices');
        const g = s.blockBase + j;
        if (shard.blockOwner[g] !== me) seen[me]!.add(g * Hkv + Math.floor(h / group));
      }
    }
  }
  const requests = seen.map((set) =>
    [...set].map((key): BlockRequest => {
      const g = Math.floor(key / Hkv);
      return { owner: shard.blockOwner[g]!, seq: shard.blockSeq[g]!, index: shard.blockIndex[g]!, block: g, kvHead: key % Hkv };
    }).sort(cmp));
  const ranks = requests.map((req, r): RankExchange => {
    const own = shard.blocksOf[r]!.length;
    return {
      requests: req,
      sends: requests.map((other) => other.filter((q) => q.owner === r)),
      gradReturns: Array.from({ length: G }, (_, o) => req.filter((q) => q.owner === o)),
      centroidBytes: (seqs.totalBlocks - own) * Hkv * D * dtypeBytes,
      kvBytes: req.length * B * D * dtypeBytes * 2,
      gradBytes: req.length * B * D * 4 * 2,
    };
  });
  return { G, ranks };
}
