/**
 * Problem geometry for the kernels, packed into one u32 buffer: per sequence (start, len, blockBase, nBlocks),
 * per query row its sequence, query tiles (r0, r1, seq, origin) that never cross a sequence (routing), per
 * global block (start, len, seq, localBlock), and, with fewer queries than keys only (SPEC §8), per sequence
 * the shift from a query row to its key row.
 * A query row r of sequence i sits at key row r + shift_i (bottom-right aligned: shift_i = cuSeqlensK[i + 1] −
 * cuSeqlensQ[i + 1] ≥ 0), so at local key position r − origin_i, origin_i = cuSeqlensQ[i + 1] − nk_i (mod 2³²:
 * the kernels' u32 arithmetic wraps). Self-attention: shift 0, origin = start, no shift section.
 */
import type { QueryRows, Sequences } from '@moba/core';

export interface Geometry {
  /** The packed u32 words (upload as one storage buffer). */
  readonly words: Uint32Array;
  /** Word offsets of the sections. */
  readonly seqsOff: number;
  readonly rowSeqOff: number;
  readonly qTilesOff: number;
  readonly blocksOff: number;
  /** Per sequence the query-to-key row shift; 0 (no section) for self-attention. */
  readonly qShiftOff: number;
  readonly nSeqs: number;
  readonly nQTiles: number;
  readonly totalBlocks: number;
  /** Query rows apart from key rows (the shift section exists; the attention kernels' QK specialization). */
  readonly qk: boolean;
}

/**
 * Builds the geometry of a layout split into `blockSize` blocks and `tileRows` query rows per tile; `queries`
 * (SPEC §8) maps the query rows when they are not the key rows (else the key rows are the query rows).
 */
export function buildGeometry(seqs: Sequences, T: number, blockSize: number, tileRows: number, queries?: QueryRows): Geometry {
  const qk = queries !== undefined && !queries.selfAttention;
  const seqWords: number[] = [];
  const qTiles: number[] = [];
  const blocks: number[] = [];
  const shifts: number[] = [];
  seqs.seqs.forEach((s, i) => {
    seqWords.push(s.start, s.len, s.blockBase, s.nBlocks);
    const q0 = qk ? queries.cuSeqlensQ[i]! : s.start;
    const q1 = qk ? queries.cuSeqlensQ[i + 1]! : s.start + s.len;
    const origin = (q1 - s.len) >>> 0; // = s.start for self-attention
    for (let r = q0; r < q1; r += tileRows) qTiles.push(r, Math.min(r + tileRows, q1), i, origin);
    if (qk) shifts.push(s.start + s.len - q1);
    for (let j = 0; j < s.nBlocks; j++) {
      const b0 = s.start + j * blockSize;
      const b1 = s.start + Math.min((j + 1) * blockSize, s.len);
      blocks.push(b0, b1 - b0, i, j);
    }
  });
  const rowSeq = qk ? queries.seqOf : seqs.seqOf;
  const seqsOff = 0;
  const rowSeqOff = seqsOff + seqWords.length;
  const qTilesOff = rowSeqOff + (qk ? rowSeq.length : T);
  const blocksOff = qTilesOff + qTiles.length;
  const qShiftOff = qk ? blocksOff + blocks.length : 0;
  const words = new Uint32Array(blocksOff + blocks.length + shifts.length);
  words.set(seqWords, seqsOff);
  words.set(rowSeq, rowSeqOff);
  words.set(qTiles, qTilesOff);
  words.set(blocks, blocksOff);
  if (qk) words.set(shifts, qShiftOff);
  return {
    words, seqsOff, rowSeqOff, qTilesOff, blocksOff, qShiftOff,
    nSeqs: seqs.seqs.length, nQTiles: qTiles.length / 4, totalBlocks: seqs.totalBlocks, qk,
  };
}
