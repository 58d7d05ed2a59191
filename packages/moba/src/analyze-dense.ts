/**
 * The dense side of `analyzeRouting` (analyze.ts): dense causal attention over the keys the MoBA side uses, by the
 * backend's `denseForward` extra, by its `forward` with a topk covering every block, or by a blockwise float64 pass
 * over tiles of query rows in JS; and the dense top-1 key of sampled rows. None of them holds a T × T buffer.
 */
import { type Backend, type DeviceTensor, type Layout, type ResolvedConfig, type SeqInfo, MobaError, toFloat64 } from '@moba/core';

/** How the dense pass was computed. */
export type DenseMethod = 'denseForward' | 'forward' | 'reference';

/** Sizes of the analysed problem (self-attention: T query and key rows). */
export interface DenseShape {
  readonly T: number;
  readonly Hq: number;
  readonly Hkv: number;
  readonly D: number;
}

export interface DenseResult {
  /** `[T, Hq]`, natural log of the causal softmax denominator (scaled scores). */
  readonly lse: Float64Array;
  /** `[T, Hq, D]`. */
  readonly out: Float64Array;
  readonly method: DenseMethod;
}

interface WithDense {
  denseForward(q: DeviceTensor, k: DeviceTensor, v: DeviceTensor, layout: Layout): Promise<{ out: DeviceTensor; lse: DeviceTensor }>;
}

const hasDense = (b: Backend): b is Backend & WithDense => typeof (b as Partial<WithDense>).denseForward === 'function';

/** Tokens per block and topk of a MoBA forward that selects every block of the longest sequence, or null if caps forbid it. */
export function denseViaForward(b: Backend, maxLen: number, blockSizes: readonly number[]): { blockSize: number; topk: number } | null {
  const blockSize = Math.max(1, Math.min(b.caps.maxBlockSize, maxLen, Math.max(...blockSizes)));
  const topk = Math.ceil(maxLen / blockSize);
  return topk <= b.caps.maxTopk ? { blockSize, topk } : null;
}

/** The method `'auto'` picks on backend `b`: its `denseForward`, else `forward` when caps allow, else the reference. */
export function pickDense(b: Backend, maxLen: number, blockSizes: readonly number[]): DenseMethod {
  if (hasDense(b)) return 'denseForward';
  return denseViaForward(b, maxLen, blockSizes) ? 'forward' : 'reference';
}

/**
 * Dense causal attention of `q` over `k` (the keys MoBA attends: convolved when kconv is on) and `v`. The host copies
 * `qh`, `kh`, `vh` (f64) serve the reference method only.
 */
export async function denseAttention(
  b: Backend, method: DenseMethod, dev: { q: DeviceTensor; k: DeviceTensor; v: DeviceTensor }, host: () => { q: Float64Array; k: Float64Array; v: Float64Array },
  layout: Layout, seqs: readonly SeqInfo[], shape: DenseShape, scale: number, blockSizes: readonly number[], tick?: (label: string) => void,
): Promise<DenseResult> {
  const maxLen = Math.max(...seqs.map((s) => s.len));
  if (method === 'denseForward') {
    if (!hasDense(b)) throw new MobaError('E_UNSUPPORTED', `backend ${b.name} has no denseForward extra: use dense 'forward' or 'reference'`, 'dense');
    const r = await b.denseForward(dev.q, dev.k, dev.v, layout);
    return await collect(b, r, method);
  }
  if (method === 'forward') {
    const c = denseViaForward(b, maxLen, blockSizes);
    if (!c) throw new MobaError('E_UNSUPPORTED', `a forward over every block needs topk ${Math.ceil(maxLen / b.caps.maxBlockSize)} > caps.maxTopk ${b.caps.maxTopk} on backend ${b.name}`, 'dense');
    const cfg = { blockSize: c.blockSize, topk: c.topk, scale };
    const routing = await b.route(dev.q, dev.k, layout, cfg); // topk >= every sequence's blocks: all eligible blocks selected
    try {
      return await collect(b, await b.forward(dev.q, dev.k, dev.v, routing, layout, cfg), method);
    } finally {
      b.dispose(routing);
    }
  }
  const h = host();
  return { ...referenceDense(h.q, h.k, h.v, seqs, shape, scale, tick), method };
}

async function collect(b: Backend, r: { out: DeviceTensor; lse: DeviceTensor }, method: DenseMethod): Promise<DenseResult> {
  try {
    return { lse: toFloat64(await b.download(r.lse)), out: toFloat64(await b.download(r.out)), method };
  } finally {
    b.dispose(r.out, r.lse);
  }
}

const ROW_TILE = 256;

/**
 * Float64 dense causal attention, one tile of query rows at a time: for each row and head an online softmax over
 * its sequence's keys up to itself (running max m, denominator l, accumulator of D values), so the memory is
 * O(T·H·D) for the result plus O(D) per row: never a T × T buffer.
 */
export function referenceDense(
  q: Float64Array, k: Float64Array, v: Float64Array, seqs: readonly SeqInfo[], shape: DenseShape, scale: number, tick?: (label: string) => void,
): { lse: Float64Array; out: Float64Array } {
  const { T, Hq, Hkv, D } = shape;
  const group = Hq / Hkv;
  const lse = new Float64Array(T * Hq);
  const out = new Float64Array(T * Hq * D);
  const acc = new Float64Array(D);
  for (const s of seqs) {
    for (let t0 = s.start; t0 < s.start + s.len; t0 += ROW_TILE) {
      tick?.(`dense float64 reference: rows ${t0}..${Math.min(t0 + ROW_TILE, s.start + s.len)} of ${T}`);
      for (let t = t0; t < Math.min(t0 + ROW_TILE, s.start + s.len); t++) {
        for (let h = 0; h < Hq; h++) {
          const qo = (t * Hq + h) * D;
          const kvh = Math.floor(h / group);
          let m = -Infinity;
          let l = 0;
          acc.fill(0);
          for (let p = s.start; p <= t; p++) {
            const ko = (p * Hkv + kvh) * D;
            let dot = 0;
            for (let d = 0; d < D; d++) dot += q[qo + d]! * k[ko + d]!;
            const x = dot * scale;
            if (x > m) { // rescale what was summed to the new max
              const c = Math.exp(m - x);
              l *= c;
              for (let d = 0; d < D; d++) acc[d]! *= c;
              m = x;
            }
            const w = Math.exp(x - m);
            l += w;
            for (let d = 0; d < D; d++) acc[d]! += w * v[ko + d]!;
          }
          lse[t * Hq + h] = m + Math.log(l);
          for (let d = 0; d < D; d++) out[qo + d] = acc[d]! / l;
        }
      }
    }
  }
  return { lse, out };
}

/** `n` distinct query rows spread evenly over `[0, T)`, the last row included (all rows when n >= T). */
export function sampleRowsEvenly(T: number, n: number): Int32Array {
  const m = Math.min(n, T);
  return Int32Array.from({ length: m }, (_, i) => Math.floor(((i + 1) * T) / m) - 1);
}

/**
 * The dense top-1 key of each sampled row and head: the causal key position p (global row) with the largest
 * q_t · k_p (float64, the first on ties), `[rows.length, Hq]`. One pass over each row's keys, no T × T buffer.
 */
export function denseTop1(q: Float64Array, k: Float64Array, rows: Int32Array, seqOf: Int32Array, seqs: readonly SeqInfo[], shape: DenseShape): Int32Array {
  const { Hq, Hkv, D } = shape;
  const group = Hq / Hkv;
  const top = new Int32Array(rows.length * Hq);
  rows.forEach((t, i) => {
    const s = seqs[seqOf[t]!]!;
    for (let h = 0; h < Hq; h++) {
      const qo = (t * Hq + h) * D;
      const kvh = Math.floor(h / group);
      let best = -Infinity;
      let arg = t;
      for (let p = s.start; p <= t; p++) {
        const ko = (p * Hkv + kvh) * D;
        let dot = 0;
        for (let d = 0; d < D; d++) dot += q[qo + d]! * k[ko + d]!;
        if (dot > best) { best = dot; arg = p; }
      }
      top[i * Hq + h] = arg;
    }
  });
  return top;
}

/** Fraction of sampled (row, head) pairs whose dense top-1 key lies in a block the routing selected. */
export function top1HitRate(top: Int32Array, rows: Int32Array, indices: Int32Array, seqOf: Int32Array, seqs: readonly SeqInfo[], Hq: number, cfg: ResolvedConfig): number {
  let hits = 0;
  rows.forEach((t, i) => {
    const s = seqs[seqOf[t]!]!;
    for (let h = 0; h < Hq; h++) {
      const block = Math.floor((top[i * Hq + h]! - s.start) / cfg.blockSize);
      const o = (t * Hq + h) * cfg.topk;
      for (let j = 0; j < cfg.topk; j++) {
        if (indices[o + j] === block) { hits++; break; }
      }
    }
  });
  return rows.length === 0 ? NaN : hits / (rows.length * Hq);
}
