/**
 * Dense causal attention on the MoBA kernels' machinery (the benchmark baseline, not the reference):
 * the same tiles, online softmax and register-blocked inner loops, over every causal key of the
 * sequence instead of the routed blocks. Forward and dQ items are (tile, head), longest tiles first;
 * dK/dV items are (key chunk, kv head) over all later query rows of the group.
 */
import { type BackwardArgs, GradState, beginKeys, dkdvRows, dqChunk, storeDq, storeKeys } from './backward.js';
import { type AttentionArgs, type Claim, type ForwardArgs, TileState, attendChunk, beginTile, finishTile } from './forward.js';
import { KEY_CHUNK, TILE_ROWS, type Geometry } from './tensor.js';

export type DenseForwardArgs = Omit<ForwardArgs, 'topk' | 'indices' | 'offsets' | 'rows'>;

/** Item → (tile, head), walking tiles from the last (the most keys) to the first, for load balance. */
function tileOf(g: Geometry, it: number): [tile: number, h: number] {
  return [g.nTiles - 1 - Math.floor(it / g.Hq), it % g.Hq];
}

/** Puts all rows [r0, r1) of head h into the gathered-row slots of `st`. */
function allRows(a: AttentionArgs, st: TileState, h: number, r0: number, r1: number): number {
  const { T, D } = a.geo;
  for (let t = r0; t < r1; t++) {
    const i = t - r0;
    st.row[i] = t;
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
    const r0 = g.tiles[tile * 3], r1 = g.tiles[tile * 3 + 1];
    beginTile(st, r1 - r0, g.D);
    const m = allRows(a, st, h, r0, r1);
    for (let c0 = g.seqStart[g.tiles[tile * 3 + 2]]; c0 < r1; c0 += KEY_CHUNK) attendChunk(a, st, h, m, c0, Math.min(c0 + KEY_CHUNK, r1));
    finishTile(a as ForwardArgs, st, h, r0, r1);
  }
}

/** Kernel: dense dQ. */
export function denseDqKernel(a: BackwardArgs, claim: Claim): void {
  const g = a.geo;
  const st = new GradState(g.D, 1);
  for (let it = claim(); it >= 0; it = claim()) {
    const [tile, h] = tileOf(g, it);
    const r0 = g.tiles[tile * 3], r1 = g.tiles[tile * 3 + 1];
    st.acc.fill(0, 0, (r1 - r0) * g.D);
    const m = allRows(a, st, h, r0, r1);
    for (let c0 = g.seqStart[g.tiles[tile * 3 + 2]]; c0 < r1; c0 += KEY_CHUNK) dqChunk(a, st, h, m, c0, Math.min(c0 + KEY_CHUNK, r1));
    storeDq(a, st, h, r0, r1);
  }
}

/** Kernel: dense dK, dV; item = chunk·Hkv + kvh, chunks first to last; rows from c0 to the sequence end. */
export function denseDkdvKernel(a: BackwardArgs, claim: Claim): void {
  const g = a.geo;
  const st = new GradState(g.D, 1);
  const group = g.Hq / g.Hkv;
  for (let it = claim(); it >= 0; it = claim()) {
    const ci = Math.floor(it / g.Hkv);
    const kvh = it % g.Hkv;
    const c0 = g.chunks[ci * 4], c1 = g.chunks[ci * 4 + 1], seq = g.chunks[ci * 4 + 2];
    const sEnd = g.seqStart[seq] + g.seqLen[seq];
    beginKeys(st, c1 - c0, g.D);
    for (let h = kvh * group; h < (kvh + 1) * group; h++) {
      for (let r0 = c0; r0 < sEnd; r0 += TILE_ROWS) dkdvRows(a, st, h, allRows(a, st, h, r0, Math.min(r0 + TILE_ROWS, sEnd)), c0, c1);
    }
    storeKeys(a, st, kvh, c0, c1);
  }
}
