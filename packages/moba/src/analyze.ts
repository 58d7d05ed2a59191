/**
 * `analyzeRouting`: how well MoBA's routing approximates dense causal attention on given q, k (and v), for a grid of
 * block sizes, topk values and key convolutions. Per grid point: the recall of the dense softmax mass (mean, p10, p1
 * over rows × heads), the hit rate of the dense top-1 key (sampled rows), the attended fraction of causal pairs and
 * the FLOP and byte savings from `plan()`, and the relative RMS error of out against dense attention.
 *
 * Recall without a T × T buffer. For query row t and head h, with scaled scores s_p = scale · q_t · k_p over the
 * causal keys C(t) (p <= t in t's sequence) and the MoBA selection S(t) ⊆ C(t) (the keys of the selected blocks,
 * the own block causally masked), the dense softmax mass inside the selection is
 *   recall(t) = Σ_{p∈S} exp(s_p) / Σ_{p∈C} exp(s_p).
 * The backends' forward returns lse_moba = log Σ_{p∈S} exp(s_p) and a dense forward lse_dense = log Σ_{p∈C} exp(s_p),
 * so recall(t) = exp(lse_moba − lse_dense): two forwards that each hold O(T·H) statistics, never the T × T scores.
 * (Both lse are f32 on the backends; a ratio that rounds slightly above 1 is clamped to 1.)
 */
import {
  type Backend, type DeviceTensor, type HostTensor, type Layout, MobaError, checkInt, fromFloat, plan, resolveConfig,
  sequences, toFloat64, validateKconvWeight, validateLayout, validateQk, validateQkv,
} from '@moba/core';
import { referenceKconv } from '@moba/core/reference';
import { type DenseMethod, type DenseShape, denseAttention, denseTop1, pickDense, sampleRowsEvenly, top1HitRate } from './analyze-dense.js';

export type { DenseMethod } from './analyze-dense.js';

export interface AnalyzeInputs {
  /** `[T, Hq, D]`. */
  readonly q: HostTensor;
  /** `[T, Hkv, D]`, Hq a multiple of Hkv. */
  readonly k: HostTensor;
  /** `[T, Hkv, D]`; absent: v = k (the raw keys), and the report says so. */
  readonly v?: HostTensor;
  /** Packed sequences (SPEC §1); default one sequence of T tokens. */
  readonly cuSeqlens?: Int32Array;
}

export interface AnalyzeGrid {
  readonly blockSizes: readonly number[];
  readonly topks: readonly number[];
  /** Key-convolution weights `[Hkv·D, W]` to try, null for none (default `[null]`). */
  readonly kconv?: readonly (HostTensor | null)[];
}

export interface AnalyzeOptions {
  /** Query rows (spread evenly, all heads) whose dense top-1 key is found exactly in JS (default 1024; 0: no hit rate). */
  readonly sampleRows?: number;
  /** Called when a phase starts (a dense pass, a grid point), with its index and the phase count. */
  readonly onProgress?: (label: string, index: number, total: number) => void;
  /** How the dense pass is computed (default 'auto': denseForward, else forward over every block, else the reference). */
  readonly dense?: 'auto' | DenseMethod;
}

export interface Quantiles {
  readonly mean: number;
  readonly p10: number;
  readonly p1: number;
}

export interface AnalyzeRow {
  readonly blockSize: number;
  readonly topk: number;
  /** kconv width W (0: no key convolution). */
  readonly kconv: number;
  /** Index of the weight in `grid.kconv`. */
  readonly kconvIndex: number;
  /** Dense softmax mass inside the MoBA selection, over all rows × heads. */
  readonly recall: Quantiles;
  /** Fraction of sampled (row, head) pairs whose dense top-1 key is in a selected block; null without samples. */
  readonly top1HitRate: number | null;
  /** plan(): attendedPairs / causalPairs. */
  readonly attendedFraction: number;
  /** plan() FLOPs: MoBA forward (route + attend) and dense forward; savings = dense / MoBA. */
  readonly flops: { readonly moba: number; readonly dense: number; readonly savings: number };
  /** Compulsory bytes: plan().bytes.forward (MoBA, routing included) and a dense forward's (q, k, v read; out, lse written). */
  readonly bytes: { readonly moba: number; readonly dense: number; readonly savings: number };
  /** ‖out_moba − out_dense‖ / ‖out_dense‖ over all rows, heads, dims. */
  readonly outRelRms: number;
}

export interface AnalyzeResult {
  readonly backend: string;
  readonly shape: { readonly T: number; readonly Hq: number; readonly Hkv: number; readonly D: number; readonly dtype: string; readonly sequences: number };
  /** True when no v was given and the values are the keys. */
  readonly vFromK: boolean;
  /** Rows whose dense top-1 key was found (hit rate is over these rows × all heads). */
  readonly sampledRows: number;
  /** The dense method used. */
  readonly dense: DenseMethod;
  readonly rows: readonly AnalyzeRow[];
}

/** Nearest-rank lower quantile of sorted values: `sorted[floor(p · (n − 1))]`. */
export function quantile(sorted: Float64Array, p: number): number {
  return sorted[Math.floor(p * (sorted.length - 1))]!;
}

function checkFinite(name: string, t: HostTensor): void {
  const x = toFloat64(t);
  for (let i = 0; i < x.length; i++) {
    if (!Number.isFinite(x[i]!)) throw new MobaError('E_RANGE', `${name}[${i}] = ${x[i]} is not finite: analyze needs finite inputs`, name);
  }
}

function checkList(name: string, xs: unknown): readonly number[] {
  if (!Array.isArray(xs) || xs.length === 0) throw new MobaError('E_RANGE', `${name} must be a non-empty array of integers >= 1`, name);
  return xs.map((x, i) => checkInt(`${name}[${i}]`, x, 1));
}

/** Runs the analysis on `backend` (see the module doc). The backend is not destroyed. */
export async function analyzeRouting(backend: Backend, inputs: AnalyzeInputs, grid: AnalyzeGrid, opts: AnalyzeOptions = {}): Promise<AnalyzeResult> {
  const vFromK = inputs.v === undefined;
  const shape = vFromK ? validateQk(inputs.q, inputs.k) : validateQkv(inputs.q, inputs.k, inputs.v!);
  const { T, Hq, Hkv, D, dtype } = shape;
  const layout: Layout = { cuSeqlens: inputs.cuSeqlens ?? Int32Array.from([0, T]) };
  validateLayout(layout, T);
  const blockSizes = checkList('blockSizes', grid.blockSizes);
  const topks = checkList('topks', grid.topks);
  const weights = grid.kconv ?? [null];
  if (!Array.isArray(weights) || weights.length === 0) throw new MobaError('E_RANGE', 'kconv must be a non-empty array of weights [Hkv·D, W] or null', 'kconv');
  weights.forEach((w) => w && validateKconvWeight(w, Hkv, D));
  const sampleN = checkInt('sampleRows', opts.sampleRows ?? 1024, 0);
  checkFinite('q', inputs.q);
  checkFinite('k', inputs.k);
  if (inputs.v) checkFinite('v', inputs.v);
  const seqs = sequences(layout, 1);
  const maxLen = Math.max(...seqs.seqs.map((s) => s.len));
  const method = opts.dense === undefined || opts.dense === 'auto' ? pickDense(backend, maxLen, blockSizes) : opts.dense;
  const scale = resolveConfig({ blockSize: 1, topk: 1 }, D).scale;
  const dshape: DenseShape = { T, Hq, Hkv, D };
  const total = weights.length * (1 + blockSizes.length * topks.length);
  let phase = 0;
  const tick = (label: string): void => opts.onProgress?.(label, phase, total);
  const qh = toFloat64(inputs.q);
  const rows = sampleRowsEvenly(T, sampleN);
  const owned: DeviceTensor[] = [];
  const up = async (t: HostTensor): Promise<DeviceTensor> => {
    const d = await backend.upload(t);
    owned.push(d);
    return d;
  };
  const out: AnalyzeRow[] = [];
  try {
    const q = await up(inputs.q);
    const k = await up(inputs.k);
    const v = inputs.v ? await up(inputs.v) : k;
    for (const [wi, w] of weights.entries()) {
      const W = w ? w.shape[1]! : 0;
      // the keys MoBA attends and routes over: k' = kconv(k, w) (SPEC §6); the dense side attends over the same k'
      let kUsed = k;
      if (w && backend.caps.kconv) {
        kUsed = await backend.kconv(k, await up(w), layout);
        owned.push(kUsed);
      } else if (w) {
        const kc = referenceKconv(toFloat64(inputs.k), toFloat64(w), Hkv * D, W, layout);
        kUsed = await up(fromFloat(kc, dtype, inputs.k.shape));
      }
      const kh = kUsed === k ? toFloat64(inputs.k) : toFloat64(await backend.download(kUsed));
      tick(`dense pass${W ? ` (kconv ${W})` : ''} by ${method}`);
      const dense = await denseAttention(backend, method, { q, k: kUsed, v }, () => ({ q: qh, k: kh, v: inputs.v ? toFloat64(inputs.v) : toFloat64(inputs.k) }), layout, seqs.seqs, dshape, scale, blockSizes, tick);
      phase++;
      if (rows.length) tick(`dense top-1 keys of ${rows.length} sampled rows${W ? ` (kconv ${W})` : ''}`);
      const top = rows.length ? denseTop1(qh, kh, rows, seqs.seqOf, seqs.seqs, dshape) : new Int32Array(0);
      for (const B of blockSizes) {
        for (const K of topks) {
          tick(`block ${B}, topk ${K}${W ? `, kconv ${W}` : ''}`);
          const cfg = resolveConfig({ blockSize: B, topk: K }, D);
          const routing = await backend.route(q, kUsed, layout, cfg);
          let lse: Float64Array, o: Float64Array, idx: Int32Array | null = null;
          try {
            const r = await backend.forward(q, kUsed, v, routing, layout, cfg);
            try {
              lse = toFloat64(await backend.download(r.lse));
              o = toFloat64(await backend.download(r.out));
            } finally {
              backend.dispose(r.out, r.lse);
            }
            if (rows.length) idx = await backend.routingIndices(routing);
          } finally {
            backend.dispose(routing);
          }
          const p = plan(shape, layout, cfg, { kconvWidth: W });
          const eb = inputs.q.dtype === 'f32' ? 4 : 2;
          const denseBytes = 2 * T * Hq * D * eb + 2 * T * Hkv * D * eb + T * Hq * 4;
          const mobaFlops = p.flops.route + p.flops.forward;
          out.push({
            blockSize: B, topk: K, kconv: W, kconvIndex: wi,
            recall: recallStats(lse, dense.lse),
            top1HitRate: idx ? top1HitRate(top, rows, idx, seqs.seqOf, seqs.seqs, Hq, cfg) : null,
            attendedFraction: p.attendedPairs / p.causalPairs,
            flops: { moba: mobaFlops, dense: p.flops.denseForward, savings: p.flops.denseForward / mobaFlops },
            bytes: { moba: p.bytes.forward, dense: denseBytes, savings: denseBytes / p.bytes.forward },
            outRelRms: relRms(o, dense.out),
          });
          phase++;
        }
      }
    }
  } finally {
    backend.dispose(...new Set(owned));
  }
  return { backend: backend.name, shape: { T, Hq, Hkv, D, dtype, sequences: seqs.seqs.length }, vFromK, sampledRows: rows.length, dense: method, rows: out };
}

/** recall = exp(lse_moba − lse_dense) per row and head (module doc), clamped to [0, 1]: mean, p10, p1. */
function recallStats(lseMoba: Float64Array, lseDense: Float64Array): Quantiles {
  const r = new Float64Array(lseMoba.length);
  let sum = 0;
  for (let i = 0; i < r.length; i++) {
    const x = Math.min(1, Math.exp(lseMoba[i]! - lseDense[i]!));
    if (!(x >= 0)) throw new MobaError('E_DEVICE', `recall of row·head ${i} is ${x} (lse ${lseMoba[i]} vs dense ${lseDense[i]}): not a number`, 'lse');
    r[i] = x;
    sum += x;
  }
  r.sort();
  return { mean: sum / r.length, p10: quantile(r, 0.1), p1: quantile(r, 0.01) };
}

function relRms(a: Float64Array, ref: Float64Array): number {
  let num = 0, den = 0;
  for (let i = 0; i < a.length; i++) {
    num += (a[i]! - ref[i]!) ** 2;
    den += ref[i]! ** 2;
  }
  return den === 0 ? (num === 0 ? 0 : Infinity) : Math.sqrt(num / den);
}
