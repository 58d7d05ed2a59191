/**
 * Work and bytes of one KV-cache `attend` (SPEC §9): what a step must read — the f32 centroids of every completed
 * block once per kv head, and per (query row, query head) the keys and values of its `topk` selected blocks — beside
 * what a dense step reads (the whole K/V of every sequence once). With several query rows of a sequence (chunked
 * prefill) a query head reads a page once, so the selected bytes are capped at every page of the sequence. Benchmarks divide these bytes by the measured
 * time for the achieved bandwidth.
 */
import type { DType } from './dtype.js';
import { dtypeBytes } from './dtype.js';

export interface CacheAttendShape {
  readonly Hq: number;
  readonly Hkv: number;
  readonly D: number;
  readonly dtype: DType;
  readonly blockSize: number;
  readonly topk: number;
  readonly causal?: boolean;
}

export interface CacheAttendPlan {
  /** Query rows (all sequences). */
  readonly queries: number;
  /** Bytes a sparse step must read: centroids + selected K/V blocks + q; and write: out + lse. */
  readonly bytes: { readonly centroids: number; readonly selected: number; readonly q: number; readonly out: number; readonly total: number };
  /** Bytes a dense step reads (all K/V once, q) and writes (out, lse). */
  readonly denseBytes: number;
  /** FLOPs: centroid scores, attention (QKᵀ and PV over the attended keys), and the same attention dense. */
  readonly flops: { readonly route: number; readonly attend: number; readonly dense: number };
  /** Keys attended per query head, summed over query rows (exact: past blocks full, own block causal). */
  readonly attendedKeys: number;
}

/**
 * Plans an attend of `seqs` (each: keys held `length`, queries `nq`, the last nq positions). Causal (default):
 * query at position t scores its `floor(t / B)` completed blocks and attends `min(topk − 1, ·)` full past blocks
 * plus its own block up to t; non-causal: every block scored, `min(topk, blocks)` attended.
 */
export function planCacheAttend(seqs: readonly { readonly length: number; readonly nq: number }[], s: CacheAttendShape): CacheAttendPlan {
  const { Hq, Hkv, D, blockSize: B, topk } = s;
  const causal = s.causal ?? true;
  const eb = dtypeBytes(s.dtype);
  let queries = 0;
  let centroids = 0;
  let selected = 0;
  let scores = 0;
  let keys = 0;
  let dense = 0;
  let denseKeys = 0;
  for (const { length: n, nq } of seqs) {
    queries += nq;
    const complete = Math.floor(n / B);
    centroids += (causal ? complete : Math.ceil(n / B)) * Hkv * D * 4;
    dense += n * Hkv * D * 2 * eb;
    let pages = 0; // pages the rows select, summed over rows (per query head)
    for (let a = 0; a < nq; a++) {
      const t = n - nq + a;
      const cb = Math.floor(t / B);
      const eligible = causal ? cb : Math.ceil(n / B);
      scores += eligible;
      const k = causal ? Math.min(topk - 1, cb) * B + (t - cb * B + 1) : Math.min(n, topk * B);
      keys += k;
      denseKeys += causal ? t + 1 : n;
      pages += causal ? Math.min(topk - 1, cb) + 1 : Math.min(topk, eligible);
    }
    // a query head reads each distinct page once: at most every page of the sequence (chunked prefill)
    selected += Math.min(pages, Math.ceil(n / B)) * B * D * 2 * eb * Hq;
  }
  const q = queries * Hq * D * eb;
  const out = queries * Hq * (D * eb + 4);
  return {
    queries,
    bytes: { centroids, selected, q, out, total: centroids + selected + q + out },
    denseBytes: dense + q + out,
    flops: { route: 2 * scores * Hq * D, attend: 4 * keys * Hq * D, dense: 4 * denseKeys * Hq * D },
    attendedKeys: keys * Hq,
  };
}
