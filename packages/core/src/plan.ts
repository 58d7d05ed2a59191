/**
 * Work and memory of one MoBA problem: FLOPs per phase, compulsory bytes moved, and the workspace a
 * backend needs (O(T·H·(D + topk)), never T×T or T×NB). Used by benchmarks, the demo report, and the
 * E_MEMORY check that runs before any allocation.
 */
import type { Layout, ProblemShape, ResolvedConfig } from './config.js';
import { dtypeBytes } from './dtype.js';

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

/** Plans a problem. `kconvWidth` adds the key convolution's cost. */
export function plan(shape: ProblemShape, layout: Layout, cfg: ResolvedConfig, opts: { kconvWidth?: number } = {}): Plan {
  const { T, Hq, Hkv, D, dtype } = shape;
  const B = cfg.blockSize;
  const k = cfg.topk;
  const cu = layout.cuSeqlens;
  let pairs = 0; // per query head
  let causal = 0;
  let scores = 0;
  let totalBlocks = 0;
  for (let b = 0; b + 1 < cu.length; b++) {
    const len = cu[b + 1]! - cu[b]!;
    const nb = Math.ceil(len / B);
    totalBlocks += nb;
    causal += (len * (len + 1)) / 2;
    if (!cfg.causal) {
      pairs += len * Math.min(len, k * B);
      scores += len * nb;
      continue;
    }
    for (let cb = 0; cb < nb; cb++) {
      const rows = Math.min(B, len - cb * B);
      const past = Math.min(k - 1, cb) * B;
      pairs += rows * past + (rows * (rows + 1)) / 2; // past blocks full, own block causal
      scores += rows * cb;
    }
  }
  const eb = dtypeBytes(dtype);
  const qBytes = T * Hq * D * eb;
  const kvBytes = T * Hkv * D * eb;
  const W = opts.kconvWidth ?? 0;
  const f32 = 4;
  const workspace =
    3 * T * Math.max(Hq, Hkv) * D * f32 + // f32 working copies of q, k, v (or out / dOut) when the dtype is 16-bit
    2 * T * Hq * k * 4 + // routing indices + collected rows
    (Hq * totalBlocks + 1) * 4 + // collected offsets
    totalBlocks * Hkv * D * f32 + // centroids
    2 * T * Hq * f32 + // lse and delta
    T * Hq * D * f32 + // f32 accumulator (out or dq)
    2 * T * Hkv * D * f32; // f32 dk, dv
  return {
    attendedPairs: pairs * Hq,
    causalPairs: causal * Hq,
    routedScores: scores * Hq,
    flops: {
      kconv: W > 0 ? T * Hkv * D * (2 * W + 6) : 0,
      route: 2 * scores * Hq * D + T * Hkv * D,
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
