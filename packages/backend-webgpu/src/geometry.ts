/**
 * Problem geometry for the kernels, packed into one u32 buffer: per sequence (start, len, blockBase, nBlocks),
 * per token its sequence, query tiles (r0, r1, seq, 0) that never cross a sequence, key tiles
 * (c0, c1, seq, localBlock) that never cross a block, and per global block (start, len, seq, localBlock).
 */
import type { Sequences } from '@moba/core';

export interface Geometry {
  /** The packed u32 words (upload as one storage buffer). */
  readonly words: Uint32Array;
  /** Word offsets of the sections. */
  readonly seqsOff: number;
  readonly rowSeqOff: number;
  readonly qTilesOff: number;
  readonly kTilesOff: number;
  readonly blocksOff: number;
  readonly nSeqs: number;
  readonly nQTiles: number;
  readonly nKTiles: number;
  readonly totalBlocks: number;
}

/** Builds the geometry of a layout split into `blockSize` blocks, `tileRows` query rows and `tileKeys` keys per tile. */
export function buildGeometry(seqs: Sequences, T: number, blockSize: number, tileRows: number, tileKeys: number): Geometry {
  const seqWords: number[] = [];
  const qTiles: number[] = [];
  const kTiles: number[] = [];
  const blocks: number[] = [];
  seqs.seqs.forEach((s, i) => {
    seqWords.push(s.start, s.len, s.blockBase, s.nBlocks);
    for (let r = 0; r < s.len; r += tileRows) qTiles.push(s.start + r, s.start + Math.min(r + tileRows, s.len), i, 0);
    for (let j = 0; j < s.nBlocks; j++) {
      const b0 = s.start + j * blockSize;
      const b1 = s.start + Math.min((j + 1) * blockSize, s.len);
      blocks.push(b0, b1 - b0, i, j);
      for (let c = b0; c < b1; c += tileKeys) kTiles.push(c, Math.min(c + tileKeys, b1), i, j);
    }
  });
  const seqsOff = 0;
  const rowSeqOff = seqsOff + seqWords.length;
  const qTilesOff = rowSeqOff + T;
  const kTilesOff = qTilesOff + qTiles.length;
  const blocksOff = kTilesOff + kTiles.length;
  const words = new Uint32Array(blocksOff + blocks.length);
  words.set(seqWords, seqsOff);
  words.set(seqs.seqOf, rowSeqOff);
  words.set(qTiles, qTilesOff);
  words.set(kTiles, kTilesOff);
  words.set(blocks, blocksOff);
  return {
    words, seqsOff, rowSeqOff, qTilesOff, kTilesOff, blocksOff,
    nSeqs: seqs.seqs.length, nQTiles: qTiles.length / 4, nKTiles: kTiles.length / 4, totalBlocks: seqs.totalBlocks,
  };
}
