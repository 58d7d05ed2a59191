/**
 * Dense causal attention on the MoBA kernels' machinery (the benchmark baseline, not the reference):
 * the same tiles, online softmax and register-blocked inner loops, over every causal key of the
 * sequence instead of the routed blocks. Forward and dQ items are (tile, head), longest tiles first;
 * dK/dV items are (key tile, kv head) over all later query rows of the group. With fewer queries than keys
 * (SPEC §8) query row t sits at key position `t + qShift[seq]` (bottom-right aligned) and attends every key of
 * its sequence up to there.
 */
import type { BackwardInputs, CheckedProblem, Qkv } from '@moba/core';
import { type BackwardArgs, GradState, beginKeys, dkdvRows, dqKeys, gradArgs, storeDq, storeKeys } from './backward.js';
import { type AttentionArgs, type Claim, type ForwardArgs, TileState, attendKeys, beginTile, finishTile } from './forward.js';
import { type Cpu, KEY_TILE, TILE_ROWS, type Geometry, geometry, headMajorQkv } from './tensor.js';

export type DenseForwardArgs = Omit<ForwardArgs, 'topk' | 'indices' | 'offsets' | 'rows'>;

/** Item → (tile, head), walking tiles from the last (the most keys) to the first, for load balance. */
function tileOf(g: Geometry, it: number): [tile: number, h: number] {
  return [g.nTiles - 1 - Math.floor(it / g.Hq), it % g.Hq];
}

/** Puts all query rows [r0, r1) of head h (at key positions row + `shift`) into the gathered-row slots of `st`. */
function allRows(a: AttentionArgs, st: TileState, h: number, r0: number, r1: number, shift: number): number {
  const { T, D } = a.geo;
  for (let t = r0; t < r1; t++) {
    const i = t - r0;
    st.row[i] = t;
    st.pos[i] = t + shift;
    st.aOff[i] = (h * T + t) * D; // q, dOut are head-major
    st.local[i] = i;
    st.accOff[i] = i * D;
  }
  return r1 - r0;
}

/** Kernel: dense causal forward; out and lse as the MoBA forward's. */
export function denseForwardKernel(a: DenseForwardArgs, claim: Claim): void {
  const g = a.geo;
  const st = new TileState(g.D, 1);
  for (let it = claim(); it >= 0; it = claim()) {
    const [tile, h] = tileOf(g, it);
    const r0 = g.tiles[tile * 3], r1 = g.tiles[tile * 3 + 1], seq = g.tiles[tile * 3 + 2];
    const end = r1 + g.qShift[seq]; // one past the last row's key position
    beginTile(st, r1 - r0, g.D);
    const m = allRows(a, st, h, r0, r1, g.qShift[seq]);
    for (let c0 = g.seqStart[seq]; c0 < end; c0 += KEY_TILE) attendKeys(a, st, h, m, c0, Math.min(c0 + KEY_TILE, end));
    finishTile(a as ForwardArgs, st, h, r0, r1);
  }
}

/** Kernel: dense dQ. */
export function denseDqKernel(a: BackwardArgs, claim: Claim): void {
  const g = a.geo;
  const st = new GradState(g.D, 1);
  for (let it = claim(); it >= 0; it = claim()) {
    const [tile, h] = tileOf(g, it);
    const r0 = g.tiles[tile * 3], r1 = g.tiles[tile * 3 + 1], seq = g.tiles[tile * 3 + 2];
    const end = r1 + g.qShift[seq];
    st.acc.fill(0, 0, (r1 - r0) * g.D);
    const m = allRows(a, st, h, r0, r1, g.qShift[seq]);
    for (let c0 = g.seqStart[seq]; c0 < end; c0 += KEY_TILE) dqKeys(a, st, h, m, c0, Math.min(c0 + KEY_TILE, end));
    storeDq(a, st, h, r0, r1);
  }
}

/** Kernel: dense dK, dV; item = keyTile·Hkv + kvh, key tiles first to last; query rows from key position c0 to the sequence end. */
export function denseDkdvKernel(a: BackwardArgs, claim: Claim): void {
  const g = a.geo;
  const st = new GradState(g.D, 1);
  const group = g.Hq / g.Hkv;
  for (let it = claim(); it >= 0; it = claim()) {
    const ci = Math.floor(it / g.Hkv);
    const kvh = it % g.Hkv;
    const c0 = g.keyTiles[ci * 4], c1 = g.keyTiles[ci * 4 + 1], seq = g.keyTiles[ci * 4 + 2];
    const shift = g.qShift[seq];
    const qEnd = g.qStart[seq] + g.qLen[seq];
    const first = Math.max(g.qStart[seq], c0 - shift); // the first query row at or after key position c0
    beginKeys(st, c1 - c0, g.D);
    for (let h = kvh * group; h < (kvh + 1) * group; h++) {
      for (let r0 = first; r0 < qEnd; r0 += TILE_ROWS) dkdvRows(a, st, h, allRows(a, st, h, r0, Math.min(r0 + TILE_ROWS, qEnd), shift), c0, c1);
    }
    storeKeys(a, st, kvh, c0, c1);
  }
}

/** Dense causal attention per sequence: out `[T, Hq, D]`, lse `[T, Hq]`; `p` checked with blockSize KEY_TILE, topk 1 (any layout). */
export async function denseForward(cpu: Cpu, p: CheckedProblem, t: Qkv<Float32Array>): Promise<{ out: Float32Array; lse: Float32Array }> {
  const { T, Hq, D } = p.shape;
  const geo = geometry(p.shape, p.seqs, KEY_TILE, p.queries);
  const out = cpu.mem.f32(T * Hq * D); // [T, Hq, D]
  const lse = cpu.mem.f32(T * Hq); // [T, Hq]
  const args = { geo, ...headMajorQkv(cpu.mem, p.shape, t), scale: p.cfg.scale, causal: true, dtype: p.shape.dtype, out, lse };
  await cpu.pool.run('denseForward', args, geo.nTiles * Hq, p.plan.flops.denseForward);
  return { out, lse };
}

/** Gradient of dense causal attention, recomputing P from lse. */
export async function denseBackward(cpu: Cpu, p: CheckedProblem, t: BackwardInputs<Float32Array>): Promise<{ dq: Float32Array; dk: Float32Array; dv: Float32Array }> {
  const { T, Hq, Hkv, D } = p.shape;
  const geo = geometry(p.shape, p.seqs, KEY_TILE, p.queries);
  const args = gradArgs(cpu, p.shape, geo, p.cfg.scale, true, t);
  await cpu.pool.run('delta', args, geo.nTiles, 2 * T * Hq * D);
  await cpu.pool.run('denseDkdv', args, geo.nKeyTiles * Hkv, p.plan.flops.denseBackward);
  await cpu.pool.run('denseDq', args, geo.nTiles * Hq, p.plan.flops.denseBackward);
  return { dq: args.dq, dk: args.dk, dv: args.dv };
}
