/**
 * Spot check of a backend's results against the float64 reference on sampled query rows, in memory that
 * does not grow with T: each row is rebuilt as a small packed problem of exactly the key blocks it
 * attends to (its own block cut at the row). Routing is checked against f64 centroids, tie-robustly.
 */
import { type ErrorStats, type HostTensor, type Layout, type ProblemShape, type ResolvedConfig, type Sequences, bf16ToF32, dtypeEps, errorStats, f16ToF32 } from '@moba/core';
import { referenceBackward, referenceCentroids, referenceForward, referenceKconv } from '@moba/core/reference';

/** Everything the check reads: the host inputs and the backend's outputs. */
export interface SpotCheckInput {
  readonly shape: ProblemShape;
  readonly layout: Layout;
  readonly seqs: Sequences;
  readonly cfg: ResolvedConfig;
  /** Host inputs as given to the backend (already in the problem's dtype). */
  readonly q: HostTensor;
  readonly k: HostTensor;
  readonly v: HostTensor;
  readonly dOut: HostTensor;
  /** kconv weight `[Hkv·D, W]`, when kconv is on. */
  readonly w?: HostTensor;
  /** The backend's routing `[T, Hq, topk]`. */
  readonly indices: Int32Array;
  /** The backend's results. */
  readonly out: HostTensor;
  readonly lse: HostTensor;
  readonly dq: HostTensor;
}

/** Result of the routing comparison over the sampled (row, head) pairs. */
export interface RoutingCheck {
  /** (row, head) pairs compared. */
  readonly checked: number;
  /** Pairs whose selection equals the f64 router's exactly. */
  readonly identical: number;
  /** Pairs whose selection is valid: own block, right count, every past block within `eps` of the k-th best score. */
  readonly valid: number;
  /** The near-tie tolerance used, relative to |q|·max|c|. */
  readonly relEps: number;
}

/** Errors of the sampled rows (`out`, `lse`, `dq`: backend vs f64 reference) and the routing comparison. */
export interface SpotCheck {
  /** Sampled query rows (global token indices). */
  readonly rows: readonly number[];
  readonly out: ErrorStats;
  readonly lse: ErrorStats;
  readonly dq: ErrorStats;
  readonly routing: RoutingCheck;
}

/** Decodes rows `[r0, r1)` of the leading dimension of `t` to f64. */
function rowsF64(t: HostTensor, r0: number, r1: number): Float64Array {
  const width = t.data.length / t.shape[0]!;
  const src = t.data.subarray(r0 * width, r1 * width);
  if (t.dtype === 'f32') return Float64Array.from(src);
  const dec = t.dtype === 'f16' ? f16ToF32 : bf16ToF32;
  const out = new Float64Array(src.length);
  for (let i = 0; i < src.length; i++) out[i] = dec(src[i]!);
  return out;
}

/** Checks `input` on `rows` (global token indices) against the f64 reference. Causal routing only. */
export function spotCheck(input: SpotCheckInput, rows: readonly number[]): SpotCheck {
  const { Hq, Hkv, D } = input.shape;
  const C = Hkv * D;
  const W = input.w ? input.w.shape[1]! : 0;
  const w64 = input.w ? rowsF64(input.w, 0, C) : undefined;

  /** Keys used by attention for tokens `[r0, r1)` of the sequence starting at `start`: f64 kconv when on. */
  const keys = (start: number, r0: number, r1: number): Float64Array => {
    if (!w64) return rowsF64(input.k, r0, r1);
    const lead = Math.min(W - 1, r0 - start); // conv taps reach W−1 tokens back, never before the sequence start
    const raw = rowsF64(input.k, r0 - lead, r1);
    return referenceKconv(raw, w64, C, W, { cuSeqlens: Int32Array.of(0, r1 - r0 + lead) }).subarray(lead * C);
  };

  const n = rows.length;
  const got = { out: new Float64Array(n * Hq * D), lse: new Float64Array(n * Hq), dq: new Float64Array(n * Hq * D) };
  const ref = { out: new Float64Array(n * Hq * D), lse: new Float64Array(n * Hq), dq: new Float64Array(n * Hq * D) };
  rows.forEach((t, i) => {
    const r = referenceRow(input, t, keys);
    got.out.set(rowsF64(input.out, t, t + 1), i * Hq * D);
    got.lse.set(rowsF64(input.lse, t, t + 1), i * Hq);
    got.dq.set(rowsF64(input.dq, t, t + 1), i * Hq * D);
    ref.out.set(r.out, i * Hq * D);
    ref.lse.set(r.lse, i * Hq);
    ref.dq.set(r.dq, i * Hq * D);
  });
  return {
    rows,
    out: errorStats(got.out, ref.out),
    lse: errorStats(got.lse, ref.lse),
    dq: errorStats(got.dq, ref.dq),
    routing: checkRouting(input, rows, keys),
  };
}

/**
 * The reference out, lse and dq of row `t` under the backend's routing, on a compact problem: the
 * row's selected blocks (union over heads, ascending) packed into one sequence, the own block last and
 * cut after `t`, so block numbering and the causal mask carry over unchanged.
 */
function referenceRow(input: SpotCheckInput, t: number, keys: (start: number, r0: number, r1: number) => Float64Array): { out: Float64Array; lse: Float64Array; dq: Float64Array } {
  const { shape, cfg, seqs, indices } = input;
  const { Hq, Hkv, D } = shape;
  const B = cfg.blockSize;
  const K = cfg.topk;
  const s = seqs.seqs[seqs.seqOf[t]!]!;
  const cb = Math.floor((t - s.start) / B);
  const union = new Set<number>([cb]);
  for (let i = 0; i < Hq * K; i++) {
    const j = indices[t * Hq * K + i]!;
    if (j >= 0 && j < cb) union.add(j); // a (wrong) future block is left out: the reference then disagrees, visibly
  }
  const blocks = [...union].sort((a, b) => a - b); // cb last
  const L = (blocks.length - 1) * B + (t - s.start - cb * B + 1);
  const C = Hkv * D;
  const kc = new Float64Array(L * C); // [L, Hkv, D]
  const vc = new Float64Array(L * C); // [L, Hkv, D]
  const slot = new Map<number, number>();
  blocks.forEach((j, i) => {
    slot.set(j, i);
    const p0 = s.start + j * B;
    const p1 = j === cb ? t + 1 : p0 + B; // past blocks are full: only a sequence's last block is partial
    kc.set(keys(s.start, p0, p1), i * B * C);
    vc.set(rowsF64(input.v, p0, p1), i * B * C);
  });
  const qc = new Float64Array(L * Hq * D); // [L, Hq, D], only the last row is used
  const dOc = new Float64Array(L * Hq * D);
  qc.set(rowsF64(input.q, t, t + 1), (L - 1) * Hq * D);
  dOc.set(rowsF64(input.dOut, t, t + 1), (L - 1) * Hq * D);
  const idx = new Int32Array(L * Hq * K).fill(-1); // [L, Hq, topk]
  for (let i = 0; i < Hq * K; i++) {
    const j = slot.get(indices[t * Hq * K + i]!);
    if (j !== undefined) idx[(L - 1) * Hq * K + i] = j;
  }
  const cShape: ProblemShape = { ...shape, T: L };
  const cLayout: Layout = { cuSeqlens: Int32Array.of(0, L) };
  const last = [L - 1];
  const fwd = referenceForward(qc, kc, vc, idx, cShape, cLayout, cfg, undefined, last);
  const bwd = referenceBackward(qc, kc, vc, fwd.out, fwd.lse, dOc, idx, cShape, cLayout, cfg, undefined, last);
  return {
    out: fwd.out.subarray((L - 1) * Hq * D),
    lse: fwd.lse.subarray((L - 1) * Hq),
    dq: bwd.dq.subarray((L - 1) * Hq * D),
  };
}

/**
 * Compares the backend's selection for each sampled (row, head) with the f64 router (SPEC §3) on f64
 * centroids of the (f64-kconv'd) keys. "Identical" is exact index equality; "valid" is the testkit's
 * tie-robust rule: own block present, count `min(topk, cb + 1)`, every past block's score ≥ the
 * (topk−1)-th best past score − eps.
 */
function checkRouting(input: SpotCheckInput, rows: readonly number[], keys: (start: number, r0: number, r1: number) => Float64Array): RoutingCheck {
  const { shape, cfg, seqs, indices } = input;
  const { Hq, Hkv, D } = shape;
  const B = cfg.blockSize;
  const K = cfg.topk;
  const relEps = input.q.dtype === 'f32' ? 1e-5 : 2 * dtypeEps(input.q.dtype);
  // -- centroids of the past blocks each sampled sequence needs, in chunks of whole blocks --
  const cents = new Map<number, Float64Array>(); // sequence → [blocks, Hkv, D]
  for (const t of rows) {
    const b = seqs.seqOf[t]!;
    const s = seqs.seqs[b]!;
    const need = Math.floor((t - s.start) / B);
    if ((cents.get(b)?.length ?? 0) >= need * Hkv * D) continue;
    const c = new Float64Array(need * Hkv * D);
    const CHUNK = 64;
    for (let j0 = 0; j0 < need; j0 += CHUNK) {
      const j1 = Math.min(need, j0 + CHUNK);
      const len = (j1 - j0) * B;
      const kk = keys(s.start, s.start + j0 * B, s.start + j1 * B);
      c.set(referenceCentroids(kk, { ...shape, T: len }, { cuSeqlens: Int32Array.of(0, len) }, B), j0 * Hkv * D);
    }
    cents.set(b, c);
  }
  let checked = 0;
  let identical = 0;
  let valid = 0;
  for (const t of rows) {
    const b = seqs.seqOf[t]!;
    const s = seqs.seqs[b]!;
    const cb = Math.floor((t - s.start) / B);
    const c = cents.get(b)!;
    const q = rowsF64(input.q, t, t + 1);
    for (let h = 0; h < Hq; h++) {
      const kvh = Math.floor(h / (Hq / Hkv));
      // -- f64 scores of the eligible (fully past) blocks: raw q·c, no softmax scale --
      const scores = new Float64Array(cb);
      let qNorm = 0;
      let cMax = 0;
      for (let d = 0; d < D; d++) qNorm += q[h * D + d]! ** 2;
      for (let j = 0; j < cb; j++) {
        let dot = 0;
        let cn = 0;
        for (let d = 0; d < D; d++) {
          const cv = c[(j * Hkv + kvh) * D + d]!;
          dot += q[h * D + d]! * cv;
          cn += cv * cv;
        }
        scores[j] = dot;
        cMax = Math.max(cMax, cn);
      }
      const eps = relEps * Math.sqrt(qNorm * cMax);
      // -- the f64 router's choice: top k−1 by score (ties to the higher index), plus the own block --
      const order = Array.from({ length: cb }, (_, j) => j).filter((j) => scores[j]! > -Infinity);
      order.sort((x, y) => scores[y]! - scores[x]! || y - x);
      const want = [...order.slice(0, K - 1), cb].sort((x, y) => x - y);
      const sel: number[] = [];
      for (let i = 0; i < K; i++) {
        const j = indices[(t * Hq + h) * K + i]!;
        if (j >= 0) sel.push(j);
      }
      checked++;
      if (sel.length === want.length && sel.every((j, i) => j === want[i])) identical++;
      const kth = order.length >= K - 1 && K > 1 ? scores[order[K - 2]!]! : -Infinity;
      const ascending = sel.every((j, i) => i === 0 || j > sel[i - 1]!);
      const ok = ascending && sel.includes(cb) && sel.length === Math.min(K, cb + 1) &&
        sel.every((j) => j === cb || (j >= 0 && j < cb && scores[j]! >= kth - eps));
      if (ok) valid++;
    }
  }
  return { checked, identical, valid, relEps };
}

/** `n` distinct query rows of `[0, T)` drawn with `next()` (uniform in [0, 1)), ascending; all rows if n ≥ T. */
export function sampleRows(T: number, n: number, next: () => number): number[] {
  if (n >= T) return Array.from({ length: T }, (_, i) => i);
  const picked = new Set<number>();
  while (picked.size < n) picked.add(Math.floor(next() * T));
  return [...picked].sort((a, b) => a - b);
}
