/**
 * MoBA backward (SPEC §5; FA2's recompute-from-lse scheme, no atomics): Δ = rowsum(dO ⊙ O); dK, dV
 * per (kv head, key tile) over the key tile's query lists of every query head of the group (one owner
 * per output row); dQ in a second, query-major pass over each tile's selected blocks. P is
 * recomputed as exp(scale·S − lse). Out: dq `[T, Hq, D]` (query rows), dk, dv `[Tk, Hkv, D]` (every key row;
 * zero for keys no query sees, SPEC §8).
 */
import { type AttentionArgs, type Claim, type RoutingArgs, TileState, selectedKeyTiles } from './forward.js';
import type { BackwardInputs, CheckedProblem, ProblemShape } from '@moba/core';
import type { CpuRouting } from './collect.js';
import { type Cpu, type Geometry, KEY_TILE, TILE_ROWS, geometry, headMajor, headMajorQkv, storeRow } from './tensor.js';
import { axpyTile, dotTile, fastExp } from './tile.js';

export interface BackwardArgs extends AttentionArgs {
  readonly out: Float32Array; // [T, Hq, D]
  readonly dOut: Float32Array; // [Hq, T, D], head-major like q
  readonly lse: Float32Array; // [T, Hq]
  readonly delta: Float64Array; // [T, Hq], written by deltaKernel
  readonly dq: Float32Array;
  readonly dk: Float32Array;
  readonly dv: Float32Array;
}

/** Tile scratch plus the backward's second score tile, its transposes and the dK/dV accumulators. */
export class GradState extends TileState {
  readonly dp = new Float64Array(TILE_ROWS * KEY_TILE); // [rows, KEY_TILE]
  readonly pT = new Float64Array(KEY_TILE * TILE_ROWS); // [KEY_TILE, rows]
  readonly dsT = new Float64Array(KEY_TILE * TILE_ROWS); // [KEY_TILE, rows]
  readonly tlo = new Int32Array(KEY_TILE);
  readonly thi = new Int32Array(KEY_TILE);
  readonly keyAcc = new Int32Array(KEY_TILE);
  readonly dkAcc: Float64Array; // [KEY_TILE, D]
  readonly dvAcc: Float64Array; // [KEY_TILE, D]
  constructor(D: number, maxBlocks: number) {
    super(D, maxBlocks);
    this.dkAcc = new Float64Array(KEY_TILE * D);
    this.dvAcc = new Float64Array(KEY_TILE * D);
    for (let j = 0; j < KEY_TILE; j++) this.keyAcc[j] = j * D;
  }
}

/** Kernel: Δ = rowsum(dO ⊙ O) `[T, Hq]`; items are query tiles. */
export function deltaKernel(a: BackwardArgs, claim: Claim): void {
  const { T, Hq, D, tiles } = a.geo;
  for (let tile = claim(); tile >= 0; tile = claim()) {
    for (let t = tiles[tile * 3]; t < tiles[tile * 3 + 1]; t++) {
      for (let h = 0; h < Hq; h++) {
        const o = (t * Hq + h) * D;
        const g = (h * T + t) * D;
        let s = 0;
        for (let d = 0; d < D; d++) s += a.dOut[g + d] * a.out[o + d];
        a.delta[t * Hq + h] = s;
      }
    }
  }
}

/**
 * For the m gathered rows of `st` and keys [c0, c1): S = Q Kᵀ and dP = dO Vᵀ, then in place
 * S ← dS = P ⊙ (dP − Δ) with P = exp(scale·S − lse); masked entries are never formed.
 */
export function gradScores(a: BackwardArgs, st: GradState, h: number, m: number, c0: number, c1: number): void {
  const { Tk, Hq, Hkv, D } = a.geo;
  const kvh = Math.floor(h / (Hq / Hkv));
  const nc = c1 - c0;
  for (let j = 0; j < nc; j++) st.kOff[j] = (kvh * Tk + c0 + j) * D; // k, v are head-major
  for (let i = 0; i < m; i++) {
    st.lo[i] = 0;
    st.hi[i] = a.causal ? Math.max(0, Math.min(nc, st.pos[i] + 1 - c0)) : nc;
  }
  // -- S = Q Kᵀ, dP = dO Vᵀ (dO shares q's head-major layout, so the same row offsets) --
  dotTile(a.q, st.aOff, a.k, st.kOff, m, st.lo, st.hi, st.s, KEY_TILE, D);
  dotTile(a.dOut, st.aOff, a.v, st.kOff, m, st.lo, st.hi, st.dp, KEY_TILE, D);
  // -- P = exp(scale·S − lse), dS = P ⊙ (dP − Δ); S keeps dS, dP keeps P --
  for (let i = 0; i < m; i++) {
    const row = st.row[i] * Hq + h;
    const lse = a.lse[row];
    const delta = a.delta[row];
    for (let j = 0, so = i * KEY_TILE, n = st.hi[i]; j < n; j++) {
      const p = fastExp(a.scale * st.s[so + j] - lse);
      st.s[so + j] = p * (st.dp[so + j] - delta);
      st.dp[so + j] = p;
    }
  }
}

/** Kernel: dQ = scale · dS K per (tile, head); item = tile·Hq + h. */
export function dqKernel(a: BackwardArgs & RoutingArgs, claim: Claim): void {
  const g = a.geo;
  const st = new GradState(g.D, g.maxBlocks);
  for (let it = claim(); it >= 0; it = claim()) {
    const tile = Math.floor(it / g.Hq);
    const h = it % g.Hq;
    const r0 = g.tiles[tile * 3], r1 = g.tiles[tile * 3 + 1];
    st.acc.fill(0, 0, (r1 - r0) * g.D);
    selectedKeyTiles(a, st, tile, h, it + 1, dqKeys);
    storeDq(a, st, h, r0, r1);
  }
}

/** acc (tile dQ, unscaled) += dS K over one key tile for the gathered rows. */
export function dqKeys(a: BackwardArgs, st: GradState, h: number, m: number, c0: number, c1: number): void {
  gradScores(a, st, h, m, c0, c1);
  axpyTile(st.s, KEY_TILE, a.k, st.kOff, m, st.lo, st.hi, st.acc, st.accOff, a.geo.D);
}

/** Epilogue of the dQ pass: dq = scale · acc, rounded to the dtype. */
export function storeDq(a: BackwardArgs, st: GradState, h: number, r0: number, r1: number): void {
  const { Hq, D } = a.geo;
  for (let t = r0; t < r1; t++) storeRow(a.dq, (t * Hq + h) * D, st.acc, (t - r0) * D, D, a.scale, a.dtype);
}

/** Kernel: dK, dV of one (kv head, key tile), item = keyTile·Hkv + kvh, over the collected query lists. */
export function dkdvKernel(a: BackwardArgs & RoutingArgs, claim: Claim): void {
  const g = a.geo;
  const st = new GradState(g.D, g.maxBlocks);
  const group = g.Hq / g.Hkv;
  for (let it = claim(); it >= 0; it = claim()) {
    const ci = Math.floor(it / g.Hkv);
    const kvh = it % g.Hkv;
    const c0 = g.keyTiles[ci * 4], c1 = g.keyTiles[ci * 4 + 1], seq = g.keyTiles[ci * 4 + 2];
    const gb = g.blockBase[seq] + g.keyTiles[ci * 4 + 3];
    const shift = g.qShift[seq];
    beginKeys(st, c1 - c0, g.D);
    for (let h = kvh * group; h < (kvh + 1) * group; h++) {
      const key = h * g.totalBlocks + gb;
      for (let p = a.offsets[key], end = a.offsets[key + 1]; p < end; p += TILE_ROWS) {
        const m = Math.min(TILE_ROWS, end - p);
        for (let i = 0; i < m; i++) {
          st.row[i] = a.rows[p + i];
          st.pos[i] = a.rows[p + i] + shift;
          st.aOff[i] = (h * g.T + a.rows[p + i]) * g.D; // q, dOut are head-major
        }
        dkdvRows(a, st, h, m, c0, c1);
      }
    }
    storeKeys(a, st, kvh, c0, c1);
  }
}

/** Zeroes the dK/dV accumulators of an nc-key tile. */
export function beginKeys(st: GradState, nc: number, D: number): void {
  st.dkAcc.fill(0, 0, nc * D);
  st.dvAcc.fill(0, 0, nc * D);
}

/** dV += Pᵀ dO and dK += scale · dSᵀ Q for the m (ascending) gathered rows of `st` and keys [c0, c1). */
export function dkdvRows(a: BackwardArgs, st: GradState, h: number, m: number, c0: number, c1: number): void {
  const nc = c1 - c0;
  gradScores(a, st, h, m, c0, c1);
  // -- transpose into key-major tiles; key j is seen by the rows i with hi[i] > j (a suffix: rows ascend) --
  let first = 0;
  for (let j = 0; j < nc; j++) {
    while (first < m && st.hi[first] <= j) first++;
    st.tlo[j] = first;
    st.thi[j] = m;
    for (let i = first, o = j * TILE_ROWS; i < m; i++) {
      st.pT[o + i] = st.dp[i * KEY_TILE + j];
      st.dsT[o + i] = a.scale * st.s[i * KEY_TILE + j];
    }
  }
  axpyTile(st.pT, TILE_ROWS, a.dOut, st.aOff, nc, st.tlo, st.thi, st.dvAcc, st.keyAcc, a.geo.D);
  axpyTile(st.dsT, TILE_ROWS, a.q, st.aOff, nc, st.tlo, st.thi, st.dkAcc, st.keyAcc, a.geo.D);
}

/** Writes the key tile's dK, dV rows (every key row is owned by exactly one item), rounded to the dtype. */
export function storeKeys(a: BackwardArgs, st: GradState, kvh: number, c0: number, c1: number): void {
  const { Hkv, D } = a.geo;
  for (let p = c0; p < c1; p++) {
    const o = (p * Hkv + kvh) * D;
    storeRow(a.dk, o, st.dkAcc, (p - c0) * D, D, 1, a.dtype);
    storeRow(a.dv, o, st.dvAcc, (p - c0) * D, D, 1, a.dtype);
  }
}

/** The backward's arguments: head-major q, k, v, dOut, the Δ workspace and zeroed dq, dk, dv. */
export function gradArgs(cpu: Cpu, shape: ProblemShape, geo: Geometry, scale: number, causal: boolean, t: BackwardInputs<Float32Array>): BackwardArgs {
  const { T, Hq, Hkv, D } = shape;
  const Tk = shape.Tk ?? T;
  return {
    geo, scale, causal, dtype: shape.dtype, ...headMajorQkv(cpu.mem, shape, t),
    out: t.out, lse: t.lse, dOut: headMajor(cpu.mem, t.dOut, T, Hq, D),
    delta: cpu.mem.f64(T * Hq), // [T, Hq]
    dq: cpu.mem.f32(T * Hq * D), dk: cpu.mem.f32(Tk * Hkv * D), dv: cpu.mem.f32(Tk * Hkv * D),
  };
}

/** The backward stage: Δ, then dK/dV per (key tile, kv head) over the lists, then dQ per (query tile, head). */
export async function backward(cpu: Cpu, p: CheckedProblem, t: BackwardInputs<Float32Array>, r: CpuRouting): Promise<{ dq: Float32Array; dk: Float32Array; dv: Float32Array }> {
  const geo = geometry(p.shape, p.seqs, p.cfg.blockSize, p.queries);
  const args = { ...gradArgs(cpu, p.shape, geo, p.cfg.scale, p.cfg.causal, t), topk: p.cfg.topk, ...r };
  const { T, Hq, Hkv, D } = p.shape;
  await cpu.pool.run('delta', args, geo.nTiles, 2 * T * Hq * D);
  await cpu.pool.run('dkdv', args, geo.nKeyTiles * Hkv, p.plan.flops.backward);
  await cpu.pool.run('dq', args, geo.nTiles * Hq, p.plan.flops.backward);
  return { dq: args.dq, dk: args.dk, dv: args.dv };
}
