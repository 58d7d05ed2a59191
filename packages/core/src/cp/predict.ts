/**
 * A predictor for context-parallel MoBA (issue 15): bytes per GPU and time for one causal sequence of `N`
 * tokens on `G` GPUs in the zigzag layout, from a link bandwidth (measured, an input) and a FLOP rate. Pure.
 * Assumptions (docs/multi-gpu.md):
 * - Compute: plan()'s forward + backward (+ route) FLOPs of the whole problem, split evenly over G (zigzag
 *   balances causal work), at `tflops` sustained.
 * - Centroids: an all-gather; each GPU receives (nBlocks − nBlocks/G) · Hkv · D · dtypeBytes.
 * - K/V: per kv head, the worst-loaded rank (rank 0: chunks 0 and 2G−1) may select any block before its last
 *   chunk that is not its own: nBlocks·(1 − 1/G) blocks. After dedupe it fetches `remoteFraction` of those
 *   (1 = every one: the worst case; a measured fraction from `exchangePlan` on real routing is the honest
 *   input), capped by its selections: (its rows)·(Hq/Hkv)·(topk − 1). Each block is B·D·dtypeBytes·2 (K and V).
 * - dK/dV back: the same blocks in f32 (4 bytes), twice.
 * - Time: compute and transfers do not overlap (an upper bound) unless `overlap` (then their max).
 */
import type { ResolvedConfig } from '../config.js';
import { MobaError } from '../errors.js';
import { plan } from '../plan.js';

export interface ContextParallelInput {
  readonly N: number;
  readonly G: number;
  readonly Hq: number;
  readonly Hkv: number;
  readonly D: number;
  readonly B: number;
  readonly topk: number;
  /** Link bandwidth per GPU, GB/s (1e9 bytes), measured. */
  readonly linkGBps: number;
  /** Sustained attention rate per GPU, TFLOP/s. */
  readonly tflops: number;
  /** 2 (f16/bf16) by default. */
  readonly dtypeBytes?: number;
  /** Fraction (0..1] of the possible remote blocks that are actually selected after dedupe; 1 by default. */
  readonly remoteFraction?: number;
  readonly overlap?: boolean;
}

export interface ContextParallelPrediction {
  readonly centroidBytes: number;
  readonly kvBytes: number;
  readonly gradBytes: number;
  /** centroid + K/V + dK/dV bytes received or sent by the worst GPU, one forward + backward. */
  readonly bytesPerGpu: number;
  readonly flopsPerGpu: number;
  readonly commSeconds: number;
  readonly computeSeconds: number;
  readonly seconds: number;
}

function positive(name: string, x: number, integer: boolean): void {
  if (typeof x !== 'number' || !(x > 0) || !Number.isFinite(x) || (integer && !Number.isInteger(x))) {
    throw new MobaError('E_RANGE', `${name} = ${x} is invalid: must be a positive ${integer ? 'integer' : 'finite number'}`, name);
  }
}

export function predictContextParallel(p: ContextParallelInput): ContextParallelPrediction {
  for (const n of ['N', 'G', 'Hq', 'Hkv', 'D', 'B', 'topk'] as const) positive(n, p[n], true);
  positive('linkGBps', p.linkGBps, false);
  positive('tflops', p.tflops, false);
  if (p.G > 1024) throw new MobaError('E_RANGE', `G = ${p.G} is invalid: must be in 1..1024`, 'G');
  if (p.Hq % p.Hkv !== 0) throw new MobaError('E_SHAPE', `Hq = ${p.Hq} must be a multiple of Hkv = ${p.Hkv}`, 'Hq');
  const eb = p.dtypeBytes ?? 2;
  if (!(eb === 2 || eb === 4)) throw new MobaError('E_RANGE', `dtypeBytes = ${eb} is invalid: must be 2 or 4`, 'dtypeBytes');
  const frac = p.remoteFraction ?? 1;
  if (!(frac > 0 && frac <= 1)) throw new MobaError('E_RANGE', `remoteFraction = ${frac} is invalid: must be in (0, 1]`, 'remoteFraction');
  const { N, G, Hq, Hkv, D, B, topk } = p;
  const nb = Math.ceil(N / B);
  const cfg: ResolvedConfig = { blockSize: B, topk, causal: true, scale: 1 / Math.sqrt(D) };
  const pl = plan({ T: N, Hq, Hkv, D, dtype: eb === 2 ? 'bf16' : 'f32' }, { cuSeqlens: Int32Array.of(0, N) }, cfg);
  const flopsPerGpu = (pl.flops.route + pl.flops.forward + pl.flops.backward) / G;
  const centroidBytes = (nb - nb / G) * Hkv * D * eb;
  const selections = (N / G) * (Hq / Hkv) * Math.max(0, topk - 1);
  const blocksPerHead = Math.min(frac * nb * (1 - 1 / G), selections);
  const kvBytes = blocksPerHead * Hkv * B * D * eb * 2;
  const gradBytes = blocksPerHead * Hkv * B * D * 4 * 2;
  const bytesPerGpu = centroidBytes + kvBytes + gradBytes;
  const commSeconds = bytesPerGpu / (p.linkGBps * 1e9);
  const computeSeconds = flopsPerGpu / (p.tflops * 1e12);
  const seconds = p.overlap ? Math.max(commSeconds, computeSeconds) : commSeconds + computeSeconds;
  return { centroidBytes, kvBytes, gradBytes, bytesPerGpu, flopsPerGpu, commSeconds, computeSeconds, seconds };
}
