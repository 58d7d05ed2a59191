/**
 * Routing (SPEC §2–3). Centroids: per (block, kv head) the f32 mean of the block's actual keys,
 * `[totalBlocks, Hkv, D]`. Fused top-k: a work item scores a tile of query rows against runs of
 * centroids and keeps a running top-k per row (insertion into k slots), so the `[T, NB]` score
 * matrix never exists. Out: `indices [T, Hq, topk]`, rows ascending, -1 padded. A query row routes as the
 * key position it sits at (SPEC §8): own block and eligible blocks come from `t + qShift[seq]`.
 */
import type { CheckedProblem } from '@moba/core';
import type { Claim } from './forward.js';
import { type Cpu, KEY_TILE, TILE_ROWS, type Geometry, geometry } from './tensor.js';
import { dotTile } from './tile.js';

export interface CentroidArgs {
  readonly geo: Geometry;
  readonly k: Float32Array; // [Tk, Hkv, D]
  readonly centroids: Float32Array; // [totalBlocks, Hkv, D]
}

/** Kernel: items are global blocks. */
export function centroidKernel(a: CentroidArgs, claim: Claim): void {
  const g = a.geo;
  const C = g.Hkv * g.D;
  const sum = new Float64Array(C);
  for (let gb = claim(); gb >= 0; gb = claim()) {
    const seq = seqOfBlock(g, gb);
    const s0 = g.seqStart[seq];
    const p0 = s0 + (gb - g.blockBase[seq]) * g.blockSize;
    const p1 = Math.min(p0 + g.blockSize, s0 + g.seqLen[seq]);
    sum.fill(0);
    for (let p = p0; p < p1; p++) {
      const o = p * C;
      for (let c = 0; c < C; c++) sum[c] += a.k[o + c];
    }
    const inv = 1 / (p1 - p0); // mean over the block's actual tokens (the last block may be partial)
    for (let c = 0; c < C; c++) a.centroids[gb * C + c] = sum[c] * inv;
  }
}

/** The sequence holding global block gb: the last one whose blockBase ≤ gb (empty sequences own no block). */
function seqOfBlock(g: Geometry, gb: number): number {
  let lo = 0;
  let hi = g.blockBase.length - 1;
  while (lo < hi) {
    const mid = (lo + hi + 1) >>> 1;
    if (g.blockBase[mid] <= gb) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

export interface RouteArgs {
  readonly geo: Geometry;
  readonly q: Float32Array; // [T, Hq, D]
  readonly centroids: Float32Array; // [totalBlocks, Hkv, D]
  readonly topk: number;
  readonly causal: boolean;
  readonly indices: Int32Array; // [T, Hq, topk], output
}

/** Running top-k of a tile: per row, slots sorted by score descending (ties: higher block first). */
class TopK {
  readonly aOff = new Int32Array(TILE_ROWS);
  readonly lo = new Int32Array(TILE_ROWS);
  readonly hi = new Int32Array(TILE_ROWS);
  readonly bOff = new Int32Array(KEY_TILE);
  readonly s = new Float64Array(TILE_ROWS * KEY_TILE); // [rows, KEY_TILE]
  readonly val: Float64Array; // [rows, slots]
  readonly idx: Int32Array; // [rows, slots]
  readonly count = new Int32Array(TILE_ROWS);
  constructor(readonly slots: number) {
    this.val = new Float64Array(TILE_ROWS * Math.max(slots, 1));
    this.idx = new Int32Array(TILE_ROWS * Math.max(slots, 1));
  }

  /** Offers block j with score x to row i; blocks arrive in ascending order, so a tie goes to j. */
  offer(i: number, x: number, j: number): void {
    if (!(x > -Infinity)) return; // NaN and -inf never win
    const base = i * this.slots;
    let n = this.count[i];
    if (n === this.slots) {
      if (!(x >= this.val[base + n - 1])) return;
      n--;
    } else {
      this.count[i] = n + 1;
    }
    let p = base + n;
    for (; p > base && this.val[p - 1] <= x; p--) {
      this.val[p] = this.val[p - 1];
      this.idx[p] = this.idx[p - 1];
    }
    this.val[p] = x;
    this.idx[p] = j;
  }
}

/** Kernel: items are (tile, head), item = tile·Hq + h. */
export function routeKernel(a: RouteArgs, claim: Claim): void {
  const g = a.geo;
  // causal: the own block is forced and counts inside k, so k − 1 slots compete
  const top = new TopK(a.causal ? a.topk - 1 : a.topk);
  for (let it = claim(); it >= 0; it = claim()) {
    const tile = Math.floor(it / g.Hq);
    const h = it % g.Hq;
    const r0 = g.tiles[tile * 3], r1 = g.tiles[tile * 3 + 1], seq = g.tiles[tile * 3 + 2];
    top.count.fill(0);
    if (top.slots > 0) scoreTile(a, top, h, r0, r1, seq);
    writeRows(a, top, h, r0, r1, seq);
  }
}

/** Scores rows [r0, r1) against their eligible centroids, key tile by key tile, feeding the top-k. */
function scoreTile(a: RouteArgs, top: TopK, h: number, r0: number, r1: number, seq: number): void {
  const g = a.geo;
  const { Hq, Hkv, D, blockSize: B } = g;
  const kvh = Math.floor(h / (Hq / Hkv));
  const s0 = g.seqStart[seq] - g.qShift[seq]; // query row of key position seqStart (SPEC §8; s0 = seqStart for self-attention)
  const nBlocks = Math.ceil(g.seqLen[seq] / B);
  const m = r1 - r0;
  // eligible blocks: causal, those fully before the row's own block; else all of the sequence
  const eligible = (t: number): number => (a.causal ? Math.floor((t - s0) / B) : nBlocks);
  const maxEligible = eligible(r1 - 1);
  for (let i = 0; i < m; i++) top.aOff[i] = ((r0 + i) * Hq + h) * D;
  for (let c0 = 0; c0 < maxEligible; c0 += KEY_TILE) {
    const nc = Math.min(KEY_TILE, maxEligible - c0);
    for (let j = 0; j < nc; j++) top.bOff[j] = ((g.blockBase[seq] + c0 + j) * Hkv + kvh) * D;
    for (let i = 0; i < m; i++) top.hi[i] = Math.max(0, Math.min(nc, eligible(r0 + i) - c0));
    dotTile(a.q, top.aOff, a.centroids, top.bOff, m, top.lo, top.hi, top.s, KEY_TILE, D);
    for (let i = 0; i < m; i++) {
      for (let j = 0, n = top.hi[i]; j < n; j++) top.offer(i, top.s[i * KEY_TILE + j], c0 + j);
    }
  }
}

/** Writes each row's selection ascending (own block added when causal), then -1 padding. */
function writeRows(a: RouteArgs, top: TopK, h: number, r0: number, r1: number, seq: number): void {
  const { Hq, blockSize: B } = a.geo;
  const K = a.topk;
  const s0 = a.geo.seqStart[seq] - a.geo.qShift[seq];
  for (let t = r0; t < r1; t++) {
    const i = t - r0;
    const o = (t * Hq + h) * K;
    let n = top.count[i];
    for (let p = 0; p < n; p++) a.indices[o + p] = top.idx[i * top.slots + p];
    if (a.causal) a.indices[o + n++] = Math.floor((t - s0) / B);
    a.indices.subarray(o, o + n).sort();
    a.indices.fill(-1, o + n, o + K);
  }
}

/** The route stage: centroids (items: global blocks), then the fused top-k (items: tile·Hq + h). */
export async function route(cpu: Cpu, p: CheckedProblem, q: Float32Array, k: Float32Array): Promise<Int32Array> {
  const { T, Tk, Hq, Hkv, D } = p.shape;
  const geo = geometry(p.shape, p.seqs, p.cfg.blockSize, p.queries);
  const centroids = cpu.mem.f32(p.seqs.totalBlocks * Hkv * D); // [totalBlocks, Hkv, D]
  await cpu.pool.run('centroids', { geo, k, centroids }, p.seqs.totalBlocks, Tk * Hkv * D);
  const indices = cpu.mem.i32(T * Hq * p.cfg.topk); // [T, Hq, topk]
  await cpu.pool.run('route', { geo, q, centroids, topk: p.cfg.topk, causal: p.cfg.causal, indices }, geo.nTiles * Hq, p.plan.flops.route);
  return indices;
}
