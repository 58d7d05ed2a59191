/**
 * Context-parallel shard layouts (issue 15): which rank owns which key blocks (and so which query rows) of
 * a packed self-attention batch (one `cuSeqlens`, SPEC §1). Shards are whole blocks: a sequence of `nb`
 * blocks is cut into `n` chunks, chunk `c` being blocks `[floor(c·nb/n), floor((c+1)·nb/n))`; a sequence
 * whose length is not a multiple of `B·n` gives uneven chunks (some empty when `nb < n`), and its last,
 * partial block stays with the last chunk.
 * - `'contiguous'`: `n = G`, rank `r` gets chunk `r` of every sequence.
 * - `'zigzag'` (load-balanced causal): `n = 2G`, rank `r` gets chunks `r` and `2G − 1 − r`.
 */
import type { Layout } from '../config.js';
import { sequences } from '../config.js';
import { MobaError } from '../errors.js';
import { checkCuSeqlens } from '../layout.js';

export type ShardMode = 'contiguous' | 'zigzag';
export const MAX_RANKS = 1024;

export interface ShardLayout {
  readonly G: number;
  readonly mode: ShardMode;
  readonly blockSize: number;
  /** For each global block (numbering of `sequences()`), its owner rank. */
  readonly blockOwner: Int32Array;
  /** For each global block, its sequence. */
  readonly blockSeq: Int32Array;
  /** For each global block, its index in its sequence. */
  readonly blockIndex: Int32Array;
  /** For each rank, its global blocks, ascending. */
  readonly blocksOf: readonly Int32Array[];
  /** For each rank, its token rows (its blocks' tokens), ascending: its query rows and key rows. */
  readonly rowsOf: readonly Int32Array[];
  /** For each token row, its owner rank. */
  readonly rowOwner: Int32Array;
}

export function shardLayout(layout: Layout, G: number, mode: ShardMode, blockSize: number): ShardLayout {
  if (!Number.isInteger(G) || G < 1 || G > MAX_RANKS) throw new MobaError('E_RANGE', `G = ${G} is invalid: must be an integer in 1..${MAX_RANKS}`, 'G');
  if (mode !== 'contiguous' && mode !== 'zigzag') throw new MobaError('E_RANGE', `mode = ${String(mode)} is invalid: must be 'contiguous' or 'zigzag'`, 'mode');
  if (!Number.isInteger(blockSize) || blockSize < 1) throw new MobaError('E_RANGE', `blockSize = ${blockSize} is invalid: must be a positive integer`, 'blockSize');
  const cu = layout?.cuSeqlens;
  checkCuSeqlens('cuSeqlens', cu, cu instanceof Int32Array && cu.length > 0 ? cu[cu.length - 1]! : 0, 'its last entry');
  const seqs = sequences(layout, blockSize);
  const n = mode === 'zigzag' ? 2 * G : G;
  const blockOwner = new Int32Array(seqs.totalBlocks);
  const blockSeq = new Int32Array(seqs.totalBlocks);
  const blockIndex = new Int32Array(seqs.totalBlocks);
  const T = seqs.seqOf.length;
  const rowOwner = new Int32Array(T);
  seqs.seqs.forEach((s, b) => {
    for (let c = 0; c < n; c++) {
      const r = mode === 'zigzag' && c >= G ? 2 * G - 1 - c : c;
      for (let j = Math.floor((c * s.nBlocks) / n); j < Math.floor(((c + 1) * s.nBlocks) / n); j++) {
        blockOwner[s.blockBase + j] = r;
        blockSeq[s.blockBase + j] = b;
        blockIndex[s.blockBase + j] = j;
        const p1 = Math.min(s.start + (j + 1) * blockSize, s.start + s.len);
        for (let p = s.start + j * blockSize; p < p1; p++) rowOwner[p] = r;
      }
    }
  });
  const blocks: number[][] = Array.from({ length: G }, () => []);
  blockOwner.forEach((r, g) => blocks[r]!.push(g));
  const rows: number[][] = Array.from({ length: G }, () => []);
  rowOwner.forEach((r, p) => rows[r]!.push(p));
  return { G, mode, blockSize, blockOwner, blockSeq, blockIndex, blocksOf: blocks.map((b) => Int32Array.from(b)), rowsOf: rows.map((b) => Int32Array.from(b)), rowOwner };
}
