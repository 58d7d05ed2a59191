/**
 * Fewer queries than keys (SPEC §8) for the reference: a layout with separate query and key boundaries,
 * bottom-right aligned. Query `a` of sequence `i` sits at key position `nk_i − nq_i + a`.
 */
import type { Layout, SeqInfo } from '../config.js';
import { sequences } from '../config.js';
import { type AttentionLayout, isQKLayout } from '../layout.js';

export { isQKLayout, validateQKLayout, type QKLayout } from '../layout.js';

/** What the reference accepts: one `cuSeqlens` (self-attention, SPEC §1) or a `QKLayout` (SPEC §8). */
export type ReferenceLayout = AttentionLayout;

export interface QueryMap {
  readonly Tq: number;
  readonly Tk: number;
  /** The key layout: blocks, centroids and kconv live on it. */
  readonly keyLayout: Layout;
  /** For each query row, its key sequence. */
  readonly seqOfQ: readonly SeqInfo[];
  /** For each query row, its global key position (bottom-right aligned; the row itself for one `cuSeqlens`). */
  readonly pos: Int32Array;
}

/** Maps query rows to key positions (assumes a valid layout). */
export function queryMap(layout: ReferenceLayout, blockSize: number): QueryMap {
  if (!isQKLayout(layout)) {
    const s = sequences(layout, blockSize);
    const T = s.seqOf.length;
    return { Tq: T, Tk: T, keyLayout: layout, seqOfQ: Array.from(s.seqOf, (b) => s.seqs[b]!), pos: Int32Array.from({ length: T }, (_, t) => t) };
  }
  const cq = layout.cuSeqlensQ;
  const keyLayout = { cuSeqlens: layout.cuSeqlensK };
  const ks = sequences(keyLayout, blockSize);
  const Tq = cq[cq.length - 1]!;
  const seqOfQ: SeqInfo[] = [];
  const pos = new Int32Array(Tq);
  for (let b = 0; b + 1 < cq.length; b++) {
    const s = ks.seqs[b]!;
    const nq = cq[b + 1]! - cq[b]!;
    for (let a = 0; a < nq; a++) {
      seqOfQ.push(s);
      pos[cq[b]! + a] = s.start + s.len - nq + a;
    }
  }
  return { Tq, Tk: ks.seqOf.length, keyLayout, seqOfQ, pos };
}
