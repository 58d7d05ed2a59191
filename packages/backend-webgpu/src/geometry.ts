/**
 * Problem geometry for the kernels, packed into one u32 buffer: per sequence (start, len, blockBase, nBlocks),
 * per token its sequence, query tiles (r0, r1, seq, 0) that never cross a sequence (routing), and per global
 * block (start, len, seq, localBlock).
 */
import type { Sequences } from '@moba/core';

export interface Geometry {
  /** The packed u32 words (upload as one storage buffer). */
  readonly words: Uint32Array;
  /** Word offsets of the sections. */
  readonly seqsOff: number;
  readonly rowSeqOff: number;
  readonly qTilesOff: number;
  readonly blocksOff: number;
  readonly nSeqs: number;
  readonly nQTiles: number;
  readonly totalBlocks: number;
}

/** Builds the geometry of a layout split into `blockSize` blocks and `tileRows` query rows per tile. */
export function buildGeometry(seqs: Sequences, T: number, blockSize: number, tileRows: number): Geometry {
  const seqWords: number[] = [];
  const qTiles: number[] = [];
  const blocks: number[] = [];
  seqs.seqs.forEach((s, i) => {
    seqWords.push(s.start, s.len, s.blockBase, s.nBlocks);
    for (let r = 0; r < s.len; r += tileRows) qTiles.push(s.start + r, s.start + Math.min(r + tileRows, s.len), i, 0);
    for (let j = 0; j < s.nBlocks; j++) {
      const b0 = s.start + j * blockSize;
      const b1 = s.start + Math.min((j + 1) * blockSize, s.len);
      blocks.push(b0, b1 - b0, i, j);
    }
  });
  const seqsOff = 0;
  const rowSeqOff = seqsOff + seqWords.length;
  const qTilesOff = rowSeqOff + T;
  const blocksOff = qTilesOff + qTiles.length;
  const words = new Uint32Array(blocksOff + blocks.length);
  words.set(seqWords, seqsOff);
  words.set(seqs.seqOf, rowSeqOff);
  words.set(qTiles, qTilesOff);
  words.set(blocks, blocksOff);
  return {
    words, seqsOff, rowSeqOff, qTilesOff, blocksOff,
    nSeqs: seqs.seqs.length, nQTiles: qTiles.length / 4, totalBlocks: seqs.totalBlocks,
  };
}
