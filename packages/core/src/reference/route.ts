/**
 * Reference routing (SPEC §2–3), float64, simple loops. Centroid = mean of a block's actual keys;
 * score = raw q·c (no softmax scale); causal: own block forced (inside k), top k−1 of the fully past
 * blocks; non-causal: top k of all blocks; ties go to the higher block index; NaN scores never win.
 */
import type { Layout, ProblemShape, ResolvedConfig } from '../config.js';
import { sequences } from '../config.js';
import { type ReferenceLayout, isQKLayout, queryMap } from './qk.js';

/** Centroids `[totalBlocks, Hkv, D]` (global block numbering of `sequences()` over the key layout). */
export function referenceCentroids(k: Float64Array, shape: ProblemShape, layout: ReferenceLayout, blockSize: number): Float64Array {
  const { Hkv, D } = shape;
  const seqs = sequences(keyLayoutOf(layout), blockSize);
  const c = new Float64Array(seqs.totalBlocks * Hkv * D);
  for (const s of seqs.seqs) {
    for (let j = 0; j < s.nBlocks; j++) {
      const p0 = s.start + j * blockSize;
      const p1 = Math.min(p0 + blockSize, s.start + s.len);
      const dst = (s.blockBase + j) * Hkv * D;
      for (let p = p0; p < p1; p++) {
        for (let i = 0; i < Hkv * D; i++) c[dst + i]! += k[p * Hkv * D + i]!;
      }
      for (let i = 0; i < Hkv * D; i++) c[dst + i]! /= p1 - p0; // mean over the actual tokens
    }
  }
  return c;
}

function keyLayoutOf(layout: ReferenceLayout): Layout {
  return isQKLayout(layout) ? { cuSeqlens: layout.cuSeqlensK } : layout;
}

/** Scores of every block of query row `t`'s (key) sequence for query head `h`: `[nBlocks]` (SPEC §3). */
export function referenceBlockScores(q: Float64Array, centroids: Float64Array, shape: ProblemShape, layout: ReferenceLayout, blockSize: number, t: number, h: number): Float64Array {
  return blockScores(q, centroids, shape, queryMap(layout, blockSize).seqOfQ[t]!, t, h);
}

function blockScores(q: Float64Array, centroids: Float64Array, shape: ProblemShape, s: { nBlocks: number; blockBase: number }, t: number, h: number): Float64Array {
  const { Hq, Hkv, D } = shape;
  const kvh = Math.floor(h / (Hq / Hkv));
  const out = new Float64Array(s.nBlocks);
  for (let j = 0; j < s.nBlocks; j++) {
    let dot = 0;
    const c = ((s.blockBase + j) * Hkv + kvh) * D;
    for (let d = 0; d < D; d++) dot += q[(t * Hq + h) * D + d]! * centroids[c + d]!;
    out[j] = dot;
  }
  return out;
}

/** Reference router: `[Tq, Hq, topk]` indices (T for one `cuSeqlens`), rows ascending, -1 padded. */
export function referenceRoute(q: Float64Array, k: Float64Array, shape: ProblemShape, layout: ReferenceLayout, cfg: ResolvedConfig): Int32Array {
  return routeFromCentroids(q, referenceCentroids(k, shape, layout, cfg.blockSize), shape, layout, cfg);
}

/**
 * The router over given centroids `[totalBlocks, Hkv, D]`: only rows `rows` (all by default) are routed, the
 * others stay -1. Context parallelism (src/dist) routes each rank's rows over the all-gathered centroids.
 */
export function routeFromCentroids(q: Float64Array, cent: Float64Array, shape: ProblemShape, layout: ReferenceLayout, cfg: ResolvedConfig, rows?: readonly number[]): Int32Array {
  const { Hq } = shape;
  const B = cfg.blockSize;
  const K = cfg.topk;
  const m = queryMap(layout, B); // query row t sits at key position m.pos[t] (SPEC §8)
  const out = new Int32Array(m.Tq * Hq * K).fill(-1);
  for (const t of rows ?? Array.from({ length: m.Tq }, (_, i) => i)) {
    const s = m.seqOfQ[t]!;
    const cb = Math.floor((m.pos[t]! - s.start) / B);
    for (let h = 0; h < Hq; h++) {
      const scores = blockScores(q, cent, shape, s, t, h);
      const eligible = cfg.causal ? cb : s.nBlocks;
      const cand: number[] = [];
      for (let j = 0; j < eligible; j++) if (scores[j]! > -Infinity) cand.push(j); // NaN and -inf never win
      // score descending, ties to the higher index
      cand.sort((a, b) => (scores[b]! - scores[a]!) || b - a);
      const chosen = cand.slice(0, cfg.causal ? K - 1 : K);
      if (cfg.causal) chosen.push(cb);
      chosen.sort((a, b) => a - b);
      chosen.forEach((j, i) => (out[(t * Hq + h) * K + i] = j));
    }
  }
  return out;
}
