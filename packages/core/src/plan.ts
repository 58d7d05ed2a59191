/**
 * Work and memory of one MoBA problem: FLOPs per phase, compulsory bytes moved, and the workspace a
 * backend needs (O(T·H·(D + topk)), never T×T or T×NB). Used by benchmarks, the demo report, and the
 * E_MEMORY check that runs before any allocation.
 */
import type { ProblemShape, ResolvedConfig } from './config.js';
import { type AttentionLayout, isQKLayout } from './layout.js';
import { dtypeBytes } from './dtype.js';
import { MobaError } from './errors.js';

/**
 * Largest routing every backend can hold: its entries (`T·Hq·topk`, one per routing slot) and the collected
 * offsets (`Hq·blocks + 1`) are int32 on every device (CPU `Int32Array`s, WGSL `i32`/`u32`, CUDA `int`), so each
 * count must stay at most 2^31 − 1.
 */
export const MAX_ROUTING_ENTRIES = 2 ** 31 - 1;

/**
 * E_MEMORY, before anything is allocated, when a routing of `T` tokens, `Hq` query heads and `topk` slots over
 * `totalBlocks` key blocks (all sequences) would overflow the int32 offsets of MAX_ROUTING_ENTRIES.
 */
export function checkIndexLimits(d: { readonly T: number; readonly Hq: number; readonly topk: number; readonly totalBlocks: number }): void {
  const entries = d.T * d.Hq * d.topk;
  const offsets = d.Hq * d.totalBlocks + 1;
  const fix = 'split the batch or the heads over several calls, or lower topk';
  if (entries > MAX_ROUTING_ENTRIES) {
    throw new MobaError('E_MEMORY', `T·Hq·topk = ${d.T}·${d.Hq}·${d.topk} = ${entries} routing entries exceed the int32 routing offsets of every backend (at most 2^31 − 1 = ${MAX_ROUTING_ENTRIES}): ${fix}`, 'T');
  }
  if (offsets > MAX_ROUTING_ENTRIES) {
    throw new MobaError('E_MEMORY', `Hq·blocks + 1 = ${d.Hq}·${d.totalBlocks} + 1 = ${offsets} collected offsets exceed the int32 routing offsets of every backend (at most 2^31 − 1 = ${MAX_ROUTING_ENTRIES}): ${fix}`, 'T');
  }
}

export interface Plan {
  /** Query-key pairs attended, summed over query heads (exact for causal routing). */
  readonly attendedPairs: number;
  /** Query-key pairs of dense causal attention (same layout), summed over query heads. */
  readonly causalPairs: number;
  /** Centroid scores computed by the router, summed over query heads. */
  readonly routedScores: number;
  readonly flops: { readonly kconv: number; readonly route: number; readonly forward: number; readonly backward: number; readonly denseForward: number; readonly denseBackward: number };
  /** Compulsory traffic: each input read once, each output written once. */
  readonly bytes: { readonly forward: number; readonly backward: number };
  /** Bytes a backend holds besides inputs and outputs (f32 working copies, routing, centroids, stats). */
  readonly workspaceBytes: number;
}

/**
 * Plans a problem. `kconvWidth` adds the key convolution's cost. With a `QKLayout` (SPEC §8) the query rows of
 * each sequence are its last `nq` positions: pairs, scores and query-side bytes count those rows only.
 */
export function plan(shape: ProblemShape, layout: AttentionLayout, cfg: ResolvedConfig, opts: { kconvWidth?: number } = {}): Plan {
  const { T, Hq, Hkv, D, dtype } = shape;
  const Tk = shape.Tk ?? T;
  const B = cfg.blockSize;
  const k = cfg.topk;
  const ck = isQKLayout(layout) ? layout.cuSeqlensK : layout.cuSeqlens;
  const cq = isQKLayout(layout) ? layout.cuSeqlensQ : layout.cuSeqlens;
  let pairs = 0; // per query head
  let causal = 0;
  let scores = 0;
  let totalBlocks = 0;
  for (let b = 0; b + 1 < ck.length; b++) {
    const len = ck[b + 1]! - ck[b]!;
    const nq = cq[b + 1]! - cq[b]!;
    const first = len - nq; // key position of the first query row (bottom-right aligned)
    const nb = Math.ceil(len / B);
    totalBlocks += nb;
    causal += ((first + 1 + len) * nq) / 2; // query at position t sees t + 1 keys
    if (!cfg.causal) {
      pairs += nq * Math.min(len, k * B);
      scores += nq * nb;
      continue;
    }
    for (let cb = Math.floor(first / B); cb < nb; cb++) {
      const lo = Math.max(first, cb * B); // query positions of block cb: [lo, hi)
      const hi = Math.min(len, (cb + 1) * B);
      if (hi <= lo) continue;
      const rows = hi - lo;
      const past = Math.min(k - 1, cb) * B;
      const own = ((lo - cb * B + 1 + hi - cb * B) * rows) / 2; // position t sees t − cb·B + 1 keys of its block
      pairs += rows * past + own;
      scores += rows * cb;
    }
  }
  const eb = dtypeBytes(dtype);
  const qBytes = T * Hq * D * eb;
  const kvBytes = Tk * Hkv * D * eb;
  const W = opts.kconvWidth ?? 0;
  const f32 = 4;
  const workspace =
    3 * Math.max(T * Hq, Tk * Hkv) * D * f32 + // f32 working copies of q, k, v (or out / dOut) when the dtype is 16-bit
    2 * T * Hq * k * 4 + // routing indices + collected rows
    (Hq * totalBlocks + 1) * 4 + // collected offsets
    totalBlocks * Hkv * D * f32 + // centroids
    2 * T * Hq * f32 + // lse and delta
    T * Hq * D * f32 + // f32 accumulator (out or dq)
    2 * Tk * Hkv * D * f32; // f32 dk, dv
  return {
    attendedPairs: pairs * Hq,
    causalPairs: causal * Hq,
    routedScores: scores * Hq,
    flops: {
      kconv: W > 0 ? Tk * Hkv * D * (2 * W + 6) : 0,
      route: 2 * scores * Hq * D + Tk * Hkv * D,
      forward: 4 * pairs * Hq * D,
      backward: 10 * pairs * Hq * D,
      denseForward: 4 * causal * Hq * D,
      denseBackward: 10 * causal * Hq * D,
    },
    bytes: {
      forward: qBytes + 2 * kvBytes + qBytes + T * Hq * f32 + T * Hq * k * 4,
      backward: 3 * qBytes + 2 * kvBytes + T * Hq * f32 + T * Hq * k * 4 + qBytes + 2 * kvBytes,
    },
    workspaceBytes: workspace,
  };
}
