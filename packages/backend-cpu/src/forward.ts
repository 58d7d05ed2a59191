/**
 * MoBA forward, collect-and-densify (SPEC §4; FA2-style online softmax): a work item owns one query
 * head and one tile of ≤ 64 query rows, walks the union of the tile's selected key blocks, gathers
 * the rows that chose each block (from the collected routing), and updates per-row rowMax, rowSum,
 * acc. Out: `out [T, Hq, D]` (input dtype), `lse [T, Hq]` (f32, -Infinity for empty rows). Rows are query
 * rows; the causal mask of a row is at the key position it sits at (SPEC §8: `t + qShift[seq]`).
 */
import type { CheckedProblem, DType, Qkv } from '@moba/core';
import type { CpuRouting } from './collect.js';
import { type Cpu, KEY_TILE, TILE_ROWS, type Geometry, geometry, headMajorQkv, storeRow } from './tensor.js';
import { axpyTile, dotTile, fastExp } from './tile.js';

/** Claims the next work item, or returns -1 when none is left. */
export type Claim = () => number;

/**
 * What every attention kernel reads: f32 q `[Hq, T, D]`, k and v `[Hkv, Tk, D]` (head-major working
 * copies, so one head's rows are contiguous), and the geometry.
 */
export interface AttentionArgs {
  readonly geo: Geometry;
  readonly q: Float32Array;
  readonly k: Float32Array;
  readonly v: Float32Array;
  readonly scale: number;
  readonly causal: boolean;
  readonly dtype: DType;
}

/** The routing in both forms: `indices [T, Hq, topk]` and collected `offsets [Hq·NB + 1]`, `rows`. */
export interface RoutingArgs {
  readonly topk: number;
  readonly indices: Int32Array;
  readonly offsets: Int32Array;
  readonly rows: Int32Array;
}

export interface ForwardArgs extends AttentionArgs, RoutingArgs {
  readonly out: Float32Array;
  readonly lse: Float32Array;
}

/** Per-worker scratch for one tile, allocated once per kernel run. */
export class TileState {
  /** Gathered rows: global query row, its key position, q offset, tile-local row (× D into acc), valid key range per key tile. */
  readonly row = new Int32Array(TILE_ROWS);
  readonly pos = new Int32Array(TILE_ROWS);
  readonly aOff = new Int32Array(TILE_ROWS);
  readonly accOff = new Int32Array(TILE_ROWS);
  readonly local = new Int32Array(TILE_ROWS);
  readonly lo = new Int32Array(TILE_ROWS);
  readonly hi = new Int32Array(TILE_ROWS);
  /** Key (and value) row offsets of the current key tile. */
  readonly kOff = new Int32Array(KEY_TILE);
  readonly s = new Float64Array(TILE_ROWS * KEY_TILE); // [rows, KEY_TILE]
  readonly acc: Float64Array; // [TILE_ROWS, D]
  readonly rowMax = new Float64Array(TILE_ROWS);
  readonly rowSum = new Float64Array(TILE_ROWS);
  /** Blocks of the tile (ascending) and a per-block stamp that dedups them. */
  readonly blocks: Int32Array;
  readonly stamp: Int32Array;
  constructor(D: number, maxBlocks: number) {
    this.acc = new Float64Array(TILE_ROWS * D);
    this.blocks = new Int32Array(maxBlocks);
    this.stamp = new Int32Array(maxBlocks);
  }
}

/** Kernel: items are (tile, head), item = tile·Hq + h. */
export function forwardKernel(a: ForwardArgs, claim: Claim): void {
  const g = a.geo;
  const st = new TileState(g.D, g.maxBlocks);
  for (let it = claim(); it >= 0; it = claim()) {
    const tile = Math.floor(it / g.Hq);
    const h = it % g.Hq;
    const r0 = g.tiles[tile * 3], r1 = g.tiles[tile * 3 + 1];
    beginTile(st, r1 - r0, g.D);
    selectedKeyTiles(a, st, tile, h, it + 1, attendKeys);
    finishTile(a, st, h, r0, r1);
  }
}

/** The work of one key tile [c0, c1) for the m rows gathered into `st` (attendKeys, the backward's dqKeys). */
export type KeyTileStep<A, S> = (a: A, st: S, h: number, m: number, c0: number, c1: number) => void;

/**
 * Walks the key blocks that query tile `tile` selects for head h (the union over its rows, ascending; `stamp`
 * unique per item): per block, gathers the rows that chose it and runs `step` on each of its key tiles.
 */
export function selectedKeyTiles<A extends AttentionArgs & RoutingArgs, S extends TileState>(
  a: A, st: S, tile: number, h: number, stamp: number, step: KeyTileStep<A, S>,
): void {
  const g = a.geo;
  const r0 = g.tiles[tile * 3], r1 = g.tiles[tile * 3 + 1], seq = g.tiles[tile * 3 + 2];
  const nb = tileBlocks(a, st, h, r0, r1, stamp);
  const s0 = g.seqStart[seq];
  const sEnd = s0 + g.seqLen[seq];
  for (let b = 0; b < nb; b++) {
    const j = st.blocks[b];
    const m = gatherRows(a, st, h, g.blockBase[seq] + j, r0, r1, g.qShift[seq]);
    const kb0 = s0 + j * g.blockSize;
    const kb1 = Math.min(kb0 + g.blockSize, sEnd);
    for (let c0 = kb0; c0 < kb1; c0 += KEY_TILE) step(a, st, h, m, c0, Math.min(c0 + KEY_TILE, kb1));
  }
}

/** Resets the online-softmax state of an n-row tile. */
export function beginTile(st: TileState, n: number, D: number): void {
  st.rowMax.fill(-Infinity, 0, n);
  st.rowSum.fill(0, 0, n);
  st.acc.fill(0, 0, n * D);
}

/** The union of the blocks selected by rows [r0, r1) for head h, ascending, into `st.blocks`. */
export function tileBlocks(a: RoutingArgs & { readonly geo: Geometry }, st: TileState, h: number, r0: number, r1: number, stamp: number): number {
  const { topk, indices } = a;
  const Hq = a.geo.Hq;
  let nb = 0;
  for (let t = r0; t < r1; t++) {
    const base = (t * Hq + h) * topk;
    for (let i = 0; i < topk; i++) {
      const j = indices[base + i];
      if (j < 0) break; // -1 padding is at the end of a row
      if (st.stamp[j] !== stamp) {
        st.stamp[j] = stamp;
        st.blocks[nb++] = j;
      }
    }
  }
  st.blocks.subarray(0, nb).sort();
  return nb;
}

/**
 * Gathers the rows of [r0, r1) that chose global block `gb` for head h (a binary search into the
 * block's ascending row list): key positions (row + `shift`) into `pos`, q offsets into `aOff`,
 * tile-local rows into `local`/`accOff`.
 */
export function gatherRows(a: AttentionArgs & RoutingArgs, st: TileState, h: number, gb: number, r0: number, r1: number, shift: number): number {
  const { offsets, rows } = a;
  const { T, D } = a.geo;
  const key = h * a.geo.totalBlocks + gb;
  let lo = offsets[key];
  let hi = offsets[key + 1];
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (rows[mid] < r0) lo = mid + 1;
    else hi = mid;
  }
  let m = 0;
  for (let p = lo, end = offsets[key + 1]; p < end && rows[p] < r1; p++, m++) {
    st.row[m] = rows[p];
    st.pos[m] = rows[p] + shift;
    st.aOff[m] = (h * T + rows[p]) * D; // q is head-major
    st.local[m] = rows[p] - r0;
    st.accOff[m] = (rows[p] - r0) * D;
  }
  return m;
}

/** One key tile [c0, c1) for the m gathered rows: scores, online-softmax update, acc += P V. */
export function attendKeys(a: AttentionArgs, st: TileState, h: number, m: number, c0: number, c1: number): void {
  const { Tk, Hq, Hkv, D } = a.geo;
  const kvh = Math.floor(h / (Hq / Hkv));
  const nc = c1 - c0;
  for (let j = 0; j < nc; j++) st.kOff[j] = (kvh * Tk + c0 + j) * D;
  // -- valid keys per row: the own block is causal-masked (p ≤ the row's position), older blocks never are --
  for (let i = 0; i < m; i++) {
    st.lo[i] = 0;
    st.hi[i] = a.causal ? Math.max(0, Math.min(nc, st.pos[i] + 1 - c0)) : nc;
  }
  // -- S = Q Kᵀ --
  dotTile(a.q, st.aOff, a.k, st.kOff, m, st.lo, st.hi, st.s, KEY_TILE, D);
  softmaxUpdate(st, m, a.scale, D);
  // -- acc += P V --
  axpyTile(st.s, KEY_TILE, a.v, st.kOff, m, st.lo, st.hi, st.acc, st.accOff, D);
}

/** Online softmax over one key tile: rescales acc and rowSum by exp(oldMax − newMax), turns S into P. */
function softmaxUpdate(st: TileState, m: number, scale: number, D: number): void {
  const { s, rowMax, rowSum, acc } = st;
  for (let i = 0; i < m; i++) {
    const n = st.hi[i];
    const so = i * KEY_TILE;
    const r = st.local[i];
    let mx = -Infinity;
    let bad = false;
    for (let j = so; j < so + n; j++) {
      s[j] *= scale;
      bad ||= s[j] - s[j] !== 0; // NaN or ±Infinity (only from a non-finite q or k: f32 inputs cannot overflow f64)
      mx = Math.max(mx, s[j]); // Math.max keeps a NaN score NaN
    }
    // a non-finite score poisons the row (docs/api.md, "Non-finite values"): a NaN max makes out and lse NaN
    const mNew = bad ? NaN : Math.max(rowMax[r], mx);
    // all keys -inf (or none): skip, since exp(-inf − -inf) would be NaN
    if (mNew === -Infinity) {
      st.hi[i] = 0;
      continue;
    }
    let sum = 0;
    for (let j = 0; j < n; j++) {
      const p = fastExp(s[so + j] - mNew);
      s[so + j] = p;
      sum += p;
    }
    const alpha = fastExp(rowMax[r] - mNew); // 0 on the first key tile (rowMax = -inf)
    rowSum[r] = rowSum[r] * alpha + sum;
    rowMax[r] = mNew;
    if (alpha !== 1) {
      const ao = r * D;
      for (let d = 0; d < D; d++) acc[ao + d] *= alpha;
    }
  }
}

/** Epilogue: out = acc / rowSum rounded to the dtype, lse = rowMax + ln rowSum; empty rows give 0 and -inf. */
export function finishTile(a: ForwardArgs, st: TileState, h: number, r0: number, r1: number): void {
  const { Hq, D } = a.geo;
  for (let t = r0; t < r1; t++) {
    const r = t - r0;
    const row = t * Hq + h;
    const sum = st.rowSum[r];
    if (sum === 0) {
      a.out.fill(0, row * D, row * D + D);
      a.lse[row] = -Infinity;
      continue;
    }
    storeRow(a.out, row * D, st.acc, r * D, D, 1 / sum, a.dtype);
    a.lse[row] = st.rowMax[r] + Math.log(sum);
  }
}

/** The forward stage: out `[T, Hq, D]` and lse `[T, Hq]`; items are (query tile, head). */
export async function forward(cpu: Cpu, p: CheckedProblem, t: Qkv<Float32Array>, r: CpuRouting): Promise<{ out: Float32Array; lse: Float32Array }> {
  const { T, Hq, D } = p.shape;
  const geo = geometry(p.shape, p.seqs, p.cfg.blockSize, p.queries);
  const out = cpu.mem.f32(T * Hq * D); // [T, Hq, D]
  const lse = cpu.mem.f32(T * Hq); // [T, Hq]
  const args = { geo, ...headMajorQkv(cpu.mem, p.shape, t), scale: p.cfg.scale, causal: p.cfg.causal, dtype: p.shape.dtype, topk: p.cfg.topk, ...r, out, lse };
  await cpu.pool.run('forward', args, geo.nTiles * Hq, p.plan.flops.forward);
  return { out, lse };
}
