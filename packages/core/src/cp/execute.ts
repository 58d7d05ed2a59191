/**
 * Context-parallel MoBA over G in-process CPU ranks (issue 15), with the float64 reference kernels per rank.
 * Each rank holds only its own rows of q, k, v (and dOut); everything else it sees arrives by a copy that
 * stands for a collective: the centroid all-gather, the all-to-all of the selected remote K/V blocks (per the
 * exchange plan, only those), and the all-to-all that returns dK/dV partials to their owners. The transport
 * is plain array copies inside one process; NCCL is the GPU transport (docs/multi-gpu.md), not this.
 */
import type { Layout, ProblemShape, ResolvedConfig } from '../config.js';
import { sequences } from '../config.js';
import { referenceBackward } from '../reference/backward.js';
import { referenceForward } from '../reference/forward.js';
import { referenceCentroids, routeFromCentroids } from '../reference/route.js';
import { type ExchangePlan, exchangePlan } from './exchange.js';
import type { ShardLayout } from './shard.js';

export interface DistForward {
  /** Routing `[T, Hq, topk]`, each rank's rows written by that rank. */
  readonly indices: Int32Array;
  readonly out: Float64Array;
  readonly lse: Float64Array;
  readonly plan: ExchangePlan;
}

export interface DistBackward {
  readonly dq: Float64Array;
  readonly dk: Float64Array;
  readonly dv: Float64Array;
  /** Per owner rank: the ranks whose dK/dV partials it summed, in that order (itself first, then ascending). */
  readonly sumOrder: readonly (readonly number[])[];
}

/** Copies rows `rows` of a `[T, W]` array into a zero array of the same size (a rank's local view). */
function localView(a: Float64Array, rows: Int32Array, W: number): Float64Array {
  const out = new Float64Array(a.length);
  for (const p of rows) out.set(a.subarray(p * W, (p + 1) * W), p * W);
  return out;
}

interface BlockRange { readonly p0: number; readonly p1: number }

function blockRows(layout: Layout, B: number): (g: number) => BlockRange {
  const seqs = sequences(layout, B);
  const first = new Int32Array(seqs.totalBlocks);
  const last = new Int32Array(seqs.totalBlocks);
  for (const s of seqs.seqs) for (let j = 0; j < s.nBlocks; j++) {
    first[s.blockBase + j] = s.start + j * B;
    last[s.blockBase + j] = Math.min(s.start + (j + 1) * B, s.start + s.len);
  }
  return (g) => ({ p0: first[g]!, p1: last[g]! });
}

/** Copies one kv head of one block of `src` into `dst` (a transfer; `add` sums instead). */
function copyBlock(src: Float64Array, dst: Float64Array, r: BlockRange, kvh: number, Hkv: number, D: number, add = false): void {
  for (let p = r.p0; p < r.p1; p++) {
    const o = (p * Hkv + kvh) * D;
    for (let d = 0; d < D; d++) dst[o + d] = add ? dst[o + d]! + src[o + d]! : src[o + d]!;
  }
}

/** A rank's local view of `[T, W]` data: its own rows, zeros elsewhere. */
const views = (a: Float64Array, shard: ShardLayout, W: number): Float64Array[] => shard.rowsOf.map((rows) => localView(a, rows, W));

/** Each rank's K or V after the exchange: its own rows plus exactly the requested remote blocks. */
function exchange(kvLocal: Float64Array[], plan: ExchangePlan, rowsOfBlock: (g: number) => BlockRange, Hkv: number, D: number): Float64Array[] {
  return plan.ranks.map((rank, r) => {
    const buf = Float64Array.from(kvLocal[r]!);
    for (const q of rank.requests) copyBlock(kvLocal[q.owner]!, buf, rowsOfBlock(q.block), q.kvHead, Hkv, D);
    return buf;
  });
}

/** Keeps rows `rows` of `src` in `dst` (gathering the ranks' outputs into one global array). */
function collect(dst: Float64Array, src: Float64Array, rows: Int32Array, W: number): void {
  for (const p of rows) dst.set(src.subarray(p * W, (p + 1) * W), p * W);
}

/** The state a forward leaves for the backward (each rank's received K/V). */
export interface DistState { readonly kRecv: Float64Array[]; readonly vRecv: Float64Array[] }

/**
 * Forward: per rank, centroids of its own blocks → all-gather → routing of its rows → the K/V exchange →
 * attention of its rows. Self-attention layouts (one `cuSeqlens`) only. `dtypeBytes` only sizes the plan.
 */
export function distForward(
  q: Float64Array, k: Float64Array, v: Float64Array, shape: ProblemShape, layout: Layout, cfg: ResolvedConfig, shard: ShardLayout, dtypeBytes = 2,
): DistForward & { readonly state: DistState } {
  const { T, Hq, Hkv, D } = shape;
  const B = cfg.blockSize;
  const qL = views(q, shard, Hq * D);
  const kL = views(k, shard, Hkv * D);
  const vL = views(v, shard, Hkv * D);
  // all-gather of centroids: block g's centroid comes from its owner's computation over its own keys
  const own = kL.map((kr) => referenceCentroids(kr, shape, layout, B));
  const cent = new Float64Array(own[0]!.length);
  shard.blockOwner.forEach((r, g) => cent.set(own[r]!.subarray(g * Hkv * D, (g + 1) * Hkv * D), g * Hkv * D));
  const indices = new Int32Array(T * Hq * cfg.topk).fill(-1);
  shard.rowsOf.forEach((rows, r) => {
    const mine = routeFromCentroids(qL[r]!, cent, shape, layout, cfg, Array.from(rows));
    collect64(indices, mine, rows, Hq * cfg.topk);
  });
  const plan = exchangePlan(indices, layout, shard, { Hq, Hkv, D, topk: cfg.topk, dtypeBytes });
  const rb = blockRows(layout, B);
  const kRecv = exchange(kL, plan, rb, Hkv, D);
  const vRecv = exchange(vL, plan, rb, Hkv, D);
  const out = new Float64Array(T * Hq * D);
  const lse = new Float64Array(T * Hq);
  shard.rowsOf.forEach((rows, r) => {
    const f = referenceForward(qL[r]!, kRecv[r]!, vRecv[r]!, indices, shape, layout, cfg, undefined, Array.from(rows));
    collect(out, f.out, rows, Hq * D);
    collect(lse, f.lse, rows, Hq);
  });
  return { indices, out, lse, plan, state: { kRecv, vRecv } };
}

function collect64(dst: Int32Array, src: Int32Array, rows: Int32Array, W: number): void {
  for (const p of rows) dst.set(src.subarray(p * W, (p + 1) * W), p * W);
}

/**
 * Backward: per rank, dq of its rows and dK/dV partials over the keys it attended (own and fetched); the
 * partials of fetched blocks go back to their owners, which sum them in a fixed order: the owner's own
 * contribution first, then the other ranks ascending.
 */
export function distBackward(
  q: Float64Array, out: Float64Array, lse: Float64Array, dOut: Float64Array, fwd: DistForward & { readonly state: DistState },
  shape: ProblemShape, layout: Layout, cfg: ResolvedConfig, shard: ShardLayout,
): DistBackward {
  const { T, Hq, Hkv, D } = shape;
  const rb = blockRows(layout, cfg.blockSize);
  const dq = new Float64Array(T * Hq * D);
  const parts = shard.rowsOf.map((rows, r) => {
    const b = referenceBackward(localView(q, rows, Hq * D), fwd.state.kRecv[r]!, fwd.state.vRecv[r]!, localView(out, rows, Hq * D),
      localView(lse, rows, Hq), localView(dOut, rows, Hq * D), fwd.indices, shape, layout, cfg, undefined, Array.from(rows));
    collect(dq, b.dq, rows, Hq * D);
    return b;
  });
  const dk = new Float64Array(T * Hkv * D);
  const dv = new Float64Array(T * Hkv * D);
  const sumOrder: number[][] = [];
  for (let o = 0; o < shard.G; o++) {
    collect(dk, parts[o]!.dk, shard.rowsOf[o]!, Hkv * D); // the owner's own contribution first
    collect(dv, parts[o]!.dv, shard.rowsOf[o]!, Hkv * D);
    const order = [o];
    for (let r = 0; r < shard.G; r++) {
      const back = fwd.plan.ranks[r]!.gradReturns[o]!;
      if (r === o || back.length === 0) continue;
      order.push(r);
      for (const req of back) {
        copyBlock(parts[r]!.dk, dk, rb(req.block), req.kvHead, Hkv, D, true);
        copyBlock(parts[r]!.dv, dv, rb(req.block), req.kvHead, Hkv, D, true);
      }
    }
    sumOrder.push(order);
  }
  return { dq, dk, dv, sumOrder };
}
