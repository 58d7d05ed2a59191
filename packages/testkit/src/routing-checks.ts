/**
 * The tie-robust routing rule (in the spirit of FlashMoBA's `moba_verifier`): a selection passes when every
 * selected block scores at least the k-th best minus an eps scaled by the scores' magnitude, the own block is
 * there, no future block is, and rows are ascending and -1 padded.
 */
import { type ProblemShape, type ResolvedConfig, type Sequences } from '@moba/core';
import { referenceCentroids } from '@moba/core/reference';

/** Block scores `q·c` (f64) of every block of a row's sequence, with their magnitude `Σ|q_d c_d|`. */
export class BlockScorer {
  private readonly cent: Float64Array;
  constructor(private readonly q: Float64Array, k: Float64Array, private readonly shape: ProblemShape, private readonly seqs: Sequences, layout: { cuSeqlens: Int32Array }, blockSize: number) {
    this.cent = referenceCentroids(k, shape, layout, blockSize); // [totalBlocks, Hkv, D]
  }
  /**
   * Scores and magnitudes `[nBlocks]` for query row `t`, query head `h`; `keyPos` is the row's key position
   * (SPEC §8, bottom-right aligned; `t` itself for self-attention).
   */
  row(t: number, h: number, keyPos = t): { scores: Float64Array; mags: Float64Array } {
    const { Hq, Hkv, D } = this.shape;
    const s = this.seqs.seqs[this.seqs.seqOf[keyPos]!]!;
    const kvh = Math.floor(h / (Hq / Hkv));
    const scores = new Float64Array(s.nBlocks);
    const mags = new Float64Array(s.nBlocks);
    const qo = (t * Hq + h) * D;
    for (let j = 0; j < s.nBlocks; j++) {
      const co = ((s.blockBase + j) * Hkv + kvh) * D;
      let dot = 0;
      let mag = 0;
      for (let d = 0; d < D; d++) {
        const x = this.q[qo + d]! * this.cent[co + d]!;
        dot += x;
        mag += Math.abs(x);
      }
      scores[j] = dot;
      mags[j] = mag;
    }
    return { scores, mags };
  }
}

/**
 * Slack of the score comparison: a backend computes centroids and scores in f32 from the same inputs,
 * so its scores may differ from the f64 ones by a few f32 roundings per term of the D-long dot product
 * and the B-long centroid sum, relative to the magnitude `Σ|q_d c_d|`.
 */
export function scoreEps(D: number, blockSize: number, mag: number): number {
  return 16 * 2 ** -24 * (D + blockSize + 8) * mag;
}

export interface RoutingCheckOptions {
  /** Also require exact ties to go to the higher block index (only meaningful with exact ties). */
  readonly exactTies?: boolean;
  /** Stop after this many bad rows (default 5). */
  readonly maxReports?: number;
  /**
   * Fewer queries than keys (SPEC §8): the global key position of each query row (`QueryRows.pos`); `seqs` and
   * `layout` are then the keys'. Absent: self-attention (row t sits at t).
   */
  readonly pos?: Int32Array;
}

/**
 * Checks routing indices `[T, Hq, topk]` against SPEC §3 with the tie-robust rule: format (ascending,
 * -1 padded), count = min(topk, cb+1) causal / min(topk, nBlocks) non-causal, own block present, no
 * future block, and every selected block's f64 score ≥ the k-th best − eps. Rows whose scores are not
 * all finite are only format-checked. Returns the bad rows' descriptions (empty when valid).
 */
export function routingErrors(
  indices: Int32Array, q: Float64Array, k: Float64Array, shape: ProblemShape, seqs: Sequences,
  layout: { cuSeqlens: Int32Array }, cfg: ResolvedConfig, opts: RoutingCheckOptions = {},
): string[] {
  const { T, Hq, D } = shape;
  const K = cfg.topk;
  const B = cfg.blockSize;
  const errors: string[] = [];
  const max = opts.maxReports ?? 5;
  let bad = 0;
  if (indices.length !== T * Hq * K) return [`routing indices have length ${indices.length}, expected T·Hq·topk = ${T * Hq * K}`];
  const scorer = new BlockScorer(q, k, shape, seqs, layout, B);
  for (let t = 0; t < T; t++) {
    const tk = opts.pos ? opts.pos[t]! : t;
    const s = seqs.seqs[seqs.seqOf[tk]!]!;
    const cb = Math.floor((tk - s.start) / B);
    for (let h = 0; h < Hq; h++) {
      const row = Array.from(indices.subarray((t * Hq + h) * K, (t * Hq + h + 1) * K));
      const why = rowError(row, t, tk, cb, s.nBlocks, cfg, D, scorer, h, opts.exactTies ?? false);
      if (why !== null) {
        if (++bad <= max) errors.push(`routing row (t=${t}, h=${h}) = [${row.join(', ')}]: ${why}`);
      }
    }
  }
  if (bad > max) errors.push(`… ${bad} bad routing rows in all (of ${T * Hq})`);
  return errors;
}

function rowError(row: number[], t: number, tk: number, cb: number, nBlocks: number, cfg: ResolvedConfig, D: number, scorer: BlockScorer, h: number, exactTies: boolean): string | null {
  const sel: number[] = [];
  for (let i = 0; i < row.length; i++) {
    const j = row[i]!;
    if (j === -1) continue;
    if (i > sel.length) return 'a block follows a -1 (unused slots must be at the end)';
    if (j < 0 || j >= nBlocks) return `block ${j} out of range 0..${nBlocks - 1}`;
    if (sel.length > 0 && j <= sel[sel.length - 1]!) return 'not strictly ascending';
    sel.push(j);
  }
  if (cfg.causal && sel.some((j) => j > cb)) return `selects a future block (current block ${cb})`;
  const { scores, mags } = scorer.row(t, h, tk);
  if (scores.some((x) => !Number.isFinite(x))) return null; // non-finite inputs: only the format is defined
  const want = cfg.causal ? Math.min(cfg.topk, cb + 1) : Math.min(cfg.topk, nBlocks);
  if (sel.length !== want) return `${sel.length} blocks selected, expected min(topk, ${cfg.causal ? 'cb + 1' : 'nBlocks'}) = ${want}`;
  if (cfg.causal && !sel.includes(cb)) return `own block ${cb} missing`;
  const cand = Array.from({ length: cfg.causal ? cb : nBlocks }, (_, j) => j);
  const need = cfg.causal ? cfg.topk - 1 : cfg.topk;
  if (need >= cand.length || need === 0) return null; // every candidate (or none) is selected: the count said it all
  const order = [...cand].sort((a, b) => scores[b]! - scores[a]! || b - a);
  const kth = order[need - 1]!;
  const B = cfg.blockSize;
  for (const j of sel) {
    if (cfg.causal && j === cb) continue;
    const eps = scoreEps(D, B, mags[j]!) + scoreEps(D, B, mags[kth]!);
    if (scores[j]! < scores[kth]! - eps) {
      return `block ${j} scores ${scores[j]!.toPrecision(8)}, below the k-th best ${scores[kth]!.toPrecision(8)} (block ${kth}) − eps ${eps.toExponential(2)}`;
    }
  }
  if (exactTies) {
    const exp = order.slice(0, need).concat(cfg.causal ? [cb] : []).sort((a, b) => a - b);
    if (exp.join() !== sel.join()) return `exact ties must go to the higher block index: expected [${exp.join(', ')}]`;
  }
  return null;
}

