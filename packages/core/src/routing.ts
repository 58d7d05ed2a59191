/**
 * Routing formats (SPEC §3). The API form is `indices [T, Hq, topk]`: per (token, query head) the
 * selected sequence-local blocks, ascending, unused slots -1 at the end. The collected form is
 * key-block-major: per (query head, global block) the ascending list of query rows that chose it;
 * the densified forward and the dK/dV backward walk it.
 */
import type { ResolvedConfig, Sequences } from './config.js';
import { MobaError } from './errors.js';
import type { QueryRows } from './layout.js';

export interface CollectedRouting {
  /** `[Hq·totalBlocks + 1]`: list of (head h, global block g) is `rows[offsets[h·NB + g] .. offsets[h·NB + g + 1])`. */
  readonly offsets: Int32Array;
  /** Global query rows, ascending within each list. */
  readonly rows: Int32Array;
  readonly totalBlocks: number;
}

/** SPEC §7: rejects out-of-range, unsorted, duplicate, mis-padded or (causal) future selections. */
export function validateRoutingIndices(indices: Int32Array, T: number, Hq: number, seqs: Sequences, cfg: ResolvedConfig, queries?: QueryRows): void {
  const k = cfg.topk;
  if (!(indices instanceof Int32Array) || indices.length !== T * Hq * k) {
    const got = indices instanceof Int32Array ? `length ${indices.length}` : String(indices);
    throw new MobaError('E_SHAPE', `routing indices (${got}) are invalid: must be an Int32Array [T, Hq, topk] of length ${T * Hq * k}`, 'indices');
  }
  for (let t = 0; t < T; t++) {
    const s = seqs.seqs[queries ? queries.seqOf[t]! : seqs.seqOf[t]!]!;
    const cb = Math.floor(((queries ? queries.pos[t]! : t) - s.start) / cfg.blockSize); // SPEC §8: the row's key position
    const limit = cfg.causal ? cb : s.nBlocks - 1;
    for (let h = 0; h < Hq; h++) {
      const base = (t * Hq + h) * k;
      let prev = -1;
      let ended = false;
      for (let i = 0; i < k; i++) {
        const j = indices[base + i]!;
        const where = `indices[${t}, ${h}, ${i}] = ${j}`;
        if (j === -1) { ended = true; continue; }
        if (ended) throw new MobaError('E_RANGE', `${where} follows a -1: unused slots must be at the end of the row`, 'indices');
        if (j < 0 || j > limit) {
          const why = cfg.causal && j > cb && j < s.nBlocks ? ` selects a future block (current block ${cb})` : ' is out of range';
          throw new MobaError('E_RANGE', `${where}${why}: allowed 0..${limit} or -1`, 'indices');
        }
        if (j <= prev) throw new MobaError('E_RANGE', `${where} is not greater than the previous entry ${prev}: rows must be strictly ascending`, 'indices');
        prev = j;
      }
    }
  }
}

/**
 * Inverts `[T, Hq, topk]` indices into the collected form by count → prefix sum → scatter. `T` query rows; with
 * `queries` (SPEC §8) row `t` belongs to key sequence `queries.seqOf[t]`, else to `seqs.seqOf[t]`.
 */
export function collectRouting(indices: Int32Array, T: number, Hq: number, topk: number, seqs: Sequences, queries?: QueryRows): CollectedRouting {
  const NB = seqs.totalBlocks;
  const seqOf = queries ? queries.seqOf : seqs.seqOf;
  const offsets = new Int32Array(Hq * NB + 1);
  // -- count --
  for (let t = 0; t < T; t++) {
    const base = seqs.seqs[seqOf[t]!]!.blockBase;
    for (let h = 0; h < Hq; h++) {
      for (let i = 0; i < topk; i++) {
        const j = indices[(t * Hq + h) * topk + i]!;
        if (j >= 0) offsets[h * NB + base + j + 1]!++;
      }
    }
  }
  // -- exclusive prefix sum --
  for (let i = 1; i < offsets.length; i++) offsets[i]! += offsets[i - 1]!;
  // -- scatter: rows visited in ascending order, so every list comes out sorted --
  const fill = offsets.slice(0, Hq * NB);
  const rows = new Int32Array(offsets[Hq * NB]!);
  for (let t = 0; t < T; t++) {
    const base = seqs.seqs[seqOf[t]!]!.blockBase;
    for (let h = 0; h < Hq; h++) {
      for (let i = 0; i < topk; i++) {
        const j = indices[(t * Hq + h) * topk + i]!;
        if (j >= 0) rows[fill[h * NB + base + j]!++] = t;
      }
    }
  }
  return { offsets, rows, totalBlocks: NB };
}

/** The inverse of `collectRouting`: back to `[T, Hq, topk]`, ascending rows, -1 padded. */
export function expandCollected(c: CollectedRouting, T: number, Hq: number, topk: number, seqs: Sequences): Int32Array {
  const out = new Int32Array(T * Hq * topk).fill(-1);
  const fill = new Int32Array(T * Hq);
  const NB = c.totalBlocks;
  for (let h = 0; h < Hq; h++) {
    for (const s of seqs.seqs) {
      for (let j = 0; j < s.nBlocks; j++) {
        const key = h * NB + s.blockBase + j;
        for (let p = c.offsets[key]!; p < c.offsets[key + 1]!; p++) {
          const row = c.rows[p]!;
          const slot = row * Hq + h;
          if (fill[slot]! >= topk) throw new MobaError('E_RANGE', `collected routing gives row ${row} head ${h} more than topk = ${topk} blocks`, 'routing');
          out[slot * topk + fill[slot]!++] = j; // blocks visited ascending: rows come out sorted
        }
      }
    }
  }
  return out;
}

/**
 * The token-level mask a routing implies, for small problems and tests: `[Hq, T, T]`, 1 where query
 * `t` attends key `p` (SPEC §4).
 */
export function routingToMask(indices: Int32Array, T: number, Hq: number, seqs: Sequences, cfg: ResolvedConfig): Uint8Array {
  const mask = new Uint8Array(Hq * T * T);
  const k = cfg.topk;
  for (let t = 0; t < T; t++) {
    const s = seqs.seqs[seqs.seqOf[t]!]!;
    const cb = Math.floor((t - s.start) / cfg.blockSize);
    for (let h = 0; h < Hq; h++) {
      for (let i = 0; i < k; i++) {
        const j = indices[(t * Hq + h) * k + i]!;
        if (j < 0) continue;
        const p0 = s.start + j * cfg.blockSize;
        const p1 = Math.min(p0 + cfg.blockSize, s.start + s.len);
        for (let p = p0; p < p1; p++) {
          if (cfg.causal && j === cb && p > t) break;
          mask[(h * T + t) * T + p] = 1;
        }
      }
    }
  }
  return mask;
}

/** Selection counts `[nb, nb]`: `counts[qb · nb + kb]` = (query row, head) pairs of query block qb that chose kb. */
export interface RoutingCounts {
  readonly nb: number;
  readonly counts: Float64Array;
}

/** Counts selections from `[T, Hq, topk]` indices (-1 padded): the data of the routing heatmaps (CLI SVG, web canvas). */
export function routingCounts(indices: Int32Array, Hq: number, topk: number, seqs: Sequences, blockSize: number): RoutingCounts {
  const nb = seqs.maxBlocks;
  const counts = new Float64Array(nb * nb);
  for (const s of seqs.seqs) {
    for (let t = s.start; t < s.start + s.len; t++) {
      const qb = Math.floor((t - s.start) / blockSize);
      for (let i = 0; i < Hq * topk; i++) {
        const kb = indices[t * Hq * topk + i]!;
        if (kb >= 0) counts[qb * nb + kb]!++;
      }
    }
  }
  return { nb, counts };
}
