/**
 * The KV cache's attend stage (SPEC §9 on §8): queries are the last `nq` tokens of their sequences, query
 * `a` at position `t = length − nq + a`. Per (sequence, kv head, run of query rows) a work item
 *   1. scores the eligible blocks' f32 centroids (raw q·c, no scale) for every query head of the group: each
 *      centroid is read once for all of them (GQA),
 *   2. keeps an exact top-k per (row, head) (SPEC §3: ties to the higher block, NaN / −inf never win; causal:
 *      own block forced and inside k, only earlier blocks eligible; non-causal: every block, the open one by
 *      its sum / count),
 *   3. runs one softmax over the selected pages only (own block masked at t when causal).
 * Nothing else of the past is read. Each (row, head) is computed by the same operations whatever the batch
 * or the item it falls in, so results are bitwise batch-invariant. Out `[Tq, Hq, D]` (the dtype), lse `[Tq, Hq]`.
 */
import { type AttendPlan, type DType, roundTo } from '@moba/core';
import type { CachePool } from './cache-append.js';
import type { Claim } from './forward.js';
import type { Cpu } from './tensor.js';
import { axpyTile, dotTile, fastExp } from './tile.js';

/** Most query rows per work item: enough to share a centroid read between rows, few enough to balance items. */
export const ATTEND_ROWS = 16;
/** Most centroid scores one item holds (rows · heads of the group · blocks): bounds the scratch to 8 MiB. */
const SCORE_SLOTS = 1 << 20;

export interface CacheAttendArgs {
  readonly keys: Float32Array; // [pages, Hkv, B, D]
  readonly values: Float32Array; // [pages, Hkv, B, D]
  readonly sums: Float32Array; // [pages, Hkv, D]
  readonly centroids: Float32Array; // [pages, Hkv, D]
  readonly q: Float32Array; // [Tq, Hq, D]
  readonly out: Float32Array; // [Tq, Hq, D]
  readonly lse: Float32Array; // [Tq, Hq]
  /** Per entry (length, qRow, nq, page-table offset) `[E, 4]`, and the page tables concatenated. */
  readonly seqs: Int32Array;
  readonly pageTable: Int32Array;
  /** Per item (entry, kv head, first row, end row) `[items, 4]`; rows are query indices a within the entry. */
  readonly items: Int32Array;
  readonly Hq: number;
  readonly Hkv: number;
  readonly D: number;
  readonly B: number;
  readonly topk: number;
  readonly causal: boolean;
  readonly scale: number;
  readonly dtype: DType;
  /** Most blocks of any entry and query rows per item (they size the score scratch). */
  readonly maxBlocks: number;
  readonly rows: number;
}

/** Per-worker scratch, allocated once per kernel run. */
class Scratch {
  readonly scores: Float64Array; // [rows · G, maxBlocks]
  readonly qOff: Int32Array; // [rows · G] query offsets of the item's (row, head) pairs
  readonly lo: Int32Array; // [rows · G] zeros: every column range starts at 0
  readonly hi: Int32Array; // [rows · G] eligible centroids per (row, head); [0] also the key count
  readonly cOff: Int32Array; // [maxBlocks] centroid offsets
  readonly kOff: Int32Array; // [min(topk, maxBlocks) · B] offsets of the selected keys (and values: same layout)
  readonly one: Int32Array; // [1] the attended row's q offset / acc offset 0
  readonly val: Float64Array; // [slots] running top-k scores, descending
  readonly idx: Int32Array; // [slots] their blocks
  readonly sel: Int32Array; // [topk] the selection, ascending
  readonly s: Float64Array; // [min(topk, maxBlocks) · B] attention scores of one row
  readonly acc: Float64Array; // [D]
  readonly open: Float32Array; // [D] the open block's centroid (non-causal)
  constructor(a: CacheAttendArgs) {
    const G = a.Hq / a.Hkv;
    this.scores = new Float64Array(a.rows * G * Math.max(a.maxBlocks, 1));
    this.qOff = new Int32Array(a.rows * G);
    this.lo = new Int32Array(a.rows * G);
    this.hi = new Int32Array(a.rows * G);
    this.cOff = new Int32Array(Math.max(a.maxBlocks, 1));
    const keys = Math.min(a.topk, Math.max(a.maxBlocks, 1)) * a.B; // a row attends at most this many keys
    this.kOff = new Int32Array(keys);
    this.one = new Int32Array(1);
    const picks = Math.min(a.topk, a.maxBlocks) + 1; // a selection never holds more than the blocks
    this.val = new Float64Array(picks);
    this.idx = new Int32Array(picks);
    this.sel = new Int32Array(picks);
    this.s = new Float64Array(keys);
    this.acc = new Float64Array(a.D);
    this.open = new Float32Array(a.D);
  }
}

/** Kernel: items are (entry, kv head, run of ≤ `rows` query rows). */
export function cacheAttendKernel(a: CacheAttendArgs, claim: Claim): void {
  const sc = new Scratch(a);
  for (let it = claim(); it >= 0; it = claim()) {
    const e = a.items[it * 4]!, kvh = a.items[it * 4 + 1]!, a0 = a.items[it * 4 + 2]!, a1 = a.items[it * 4 + 3]!;
    const length = a.seqs[e * 4]!, qRow = a.seqs[e * 4 + 1]!, nq = a.seqs[e * 4 + 2]!, pt = a.seqs[e * 4 + 3]!;
    const t0 = length - nq; // position of query 0
    scoreBlocks(a, sc, kvh, qRow, t0, a0, a1, length, pt);
    const G = a.Hq / a.Hkv;
    for (let r = a0; r < a1; r++) {
      const t = t0 + r;
      for (let g = 0; g < G; g++) {
        const h = kvh * G + g;
        const n = select(a, sc, ((r - a0) * G + g) * a.maxBlocks, t, length);
        attendRow(a, sc, n, (qRow + r) * a.Hq + h, kvh, t, length, pt);
      }
    }
  }
}

/** Blocks a query at position t may pick: causal, those fully before its own; else all of the sequence. */
function eligible(a: CacheAttendArgs, t: number, length: number): number {
  return a.causal ? Math.floor(t / a.B) : Math.ceil(length / a.B);
}

/**
 * scores[(r − a0)·G + g, j] = q_{r, kvh·G + g} · c_j for the eligible blocks j of each row: one register-blocked
 * tile (tile.ts) over the group's heads and the item's rows, so each centroid is read once for all of them.
 * Each score is one f64 sum over d ascending, whatever the tile it falls in.
 */
function scoreBlocks(a: CacheAttendArgs, sc: Scratch, kvh: number, qRow: number, t0: number, a0: number, a1: number, length: number, pt: number): void {
  const { D, Hq, Hkv, B } = a;
  const G = Hq / Hkv;
  const full = Math.floor(length / B);
  const nb = Math.min(eligible(a, t0 + a1 - 1, length), full); // the last row sees the most
  for (let j = 0; j < nb; j++) sc.cOff[j] = (a.pageTable[pt + j]! * Hkv + kvh) * D;
  const m = (a1 - a0) * G;
  for (let r = a0; r < a1; r++) {
    for (let g = 0; g < G; g++) {
      const i = (r - a0) * G + g;
      sc.qOff[i] = ((qRow + r) * Hq + kvh * G + g) * D;
      sc.hi[i] = Math.min(eligible(a, t0 + r, length), full);
    }
  }
  dotTile(a.q, sc.qOff, a.centroids, sc.cOff, m, sc.lo, sc.hi, sc.scores, a.maxBlocks, D);
  if (a.causal || full * B === length) return;
  // non-causal: the open block competes with the centroid sum / count, in f32
  const so = (a.pageTable[pt + full]! * Hkv + kvh) * D;
  for (let d = 0; d < D; d++) sc.open[d] = a.sums[so + d]! / (length - full * B);
  for (let i = 0; i < m; i++) {
    let dot = 0;
    for (let d = 0; d < D; d++) dot += a.q[sc.qOff[i]! + d]! * sc.open[d]!;
    sc.scores[i * a.maxBlocks + full] = dot;
  }
}

/** The selection of one (row, head) into sc.sel, ascending; returns its size. */
function select(a: CacheAttendArgs, sc: Scratch, so: number, t: number, length: number): number {
  const slots = a.causal ? a.topk - 1 : a.topk; // causal: the own block is forced and counts inside k
  const nb = eligible(a, t, length);
  let n = 0;
  if (slots >= nb) { // every eligible block fits (dense decode): no ranking needed
    for (let j = 0; j < nb; j++) if (sc.scores[so + j]! > -Infinity) sc.idx[n++] = j; // NaN and -inf never win
  }
  for (let j = 0; j < nb && slots > 0 && slots < nb; j++) {
    const x = sc.scores[so + j]!;
    if (!(x > -Infinity)) continue; // NaN and -inf never win
    if (n === slots) {
      if (!(x >= sc.val[n - 1]!)) continue; // blocks come ascending: a tie goes to the later (higher) one
      n--;
    }
    let p = n++;
    for (; p > 0 && sc.val[p - 1]! <= x; p--) {
      sc.val[p] = sc.val[p - 1]!;
      sc.idx[p] = sc.idx[p - 1]!;
    }
    sc.val[p] = x;
    sc.idx[p] = j;
  }
  for (let i = 0; i < n; i++) sc.sel[i] = sc.idx[i]!;
  if (a.causal) sc.sel[n++] = Math.floor(t / a.B);
  sc.sel.subarray(0, n).sort();
  return n;
}

/** One softmax over the selected pages' keys for output row `row` (= query row · Hq + h). */
function attendRow(a: CacheAttendArgs, sc: Scratch, n: number, row: number, kvh: number, t: number, length: number, pt: number): void {
  const { D, B, Hkv } = a;
  const qo = row * D;
  const own = Math.floor(t / B);
  // -- gather the selected keys (own block up to t when causal) --
  let nk = 0;
  for (let i = 0; i < n; i++) {
    const j = sc.sel[i]!;
    const count = a.causal && j === own ? t - j * B + 1 : Math.min(B, length - j * B);
    const base = (a.pageTable[pt + j]! * Hkv + kvh) * B * D;
    for (let p = 0; p < count; p++) sc.kOff[nk++] = base + p * D;
  }
  if (nk === 0) { // no keys (all scores NaN, non-causal): out 0, lse -inf
    a.out.fill(0, qo, qo + D);
    a.lse[row] = -Infinity;
    return;
  }
  // -- scores --
  sc.one[0] = qo;
  sc.hi[0] = nk;
  dotTile(a.q, sc.one, a.keys, sc.kOff, 1, sc.lo, sc.hi, sc.s, 0, D);
  let m = -Infinity;
  let finite = true;
  for (let i = 0; i < nk; i++) {
    const x = sc.s[i]! * a.scale;
    if (!Number.isFinite(x)) finite = false;
    if (x > m) m = x;
    sc.s[i] = x;
  }
  if (!finite) { // a non-finite score poisons the row (NaN in gives NaN out, SPEC §7)
    a.out.fill(NaN, qo, qo + D);
    a.lse[row] = NaN;
    return;
  }
  // -- softmax and P V --
  let l = 0;
  for (let i = 0; i < nk; i++) {
    const w = fastExp(sc.s[i]! - m); // ≤ 1: the max is subtracted first
    sc.s[i] = w;
    l += w;
  }
  const acc = sc.acc.fill(0);
  sc.one[0] = 0;
  axpyTile(sc.s, 0, a.values, sc.kOff, 1, sc.lo, sc.hi, acc, sc.one, D);
  // -- epilogue: l ≥ 1 (the max term is exp(0)) --
  const inv = 1 / l;
  if (a.dtype === 'f32') for (let d = 0; d < D; d++) a.out[qo + d] = acc[d]! * inv;
  else for (let d = 0; d < D; d++) a.out[qo + d] = roundTo(a.dtype, acc[d]! * inv);
  a.lse[row] = m + Math.log(l);
}

/** The attend stage: one item per (entry, kv head, run of query rows); workers when the work is large. */
export async function cacheAttend(cpu: Cpu, c: CachePool, plan: AttendPlan, q: Float32Array): Promise<{ out: Float32Array; lse: Float32Array }> {
  const { Tq, Hq, topk, causal, scale, entries } = plan;
  const { Hkv, D, B } = c;
  const seqs = new Int32Array(entries.length * 4);
  const pageTable = new Int32Array(entries.reduce((n, e) => n + e.pages.length, 0));
  const items: number[] = [];
  let maxBlocks = 0;
  let work = 0;
  let off = 0;
  for (const e of entries) maxBlocks = Math.max(maxBlocks, e.pages.length);
  const rows = Math.max(1, Math.min(ATTEND_ROWS, Math.floor(SCORE_SLOTS / ((Hq / Hkv) * Math.max(maxBlocks, 1)))));
  entries.forEach((e, i) => {
    seqs.set([e.length, e.qRow, e.nq, off], i * 4);
    pageTable.set(e.pages, off);
    off += e.pages.length;
    for (let a0 = 0; a0 < e.nq; a0 += rows) {
      for (let h = 0; h < Hkv; h++) items.push(i, h, a0, Math.min(a0 + rows, e.nq));
    }
    work += e.nq * Hq * (e.pages.length * 2 * D + topk * B * 4 * D); // centroid scores + QK and PV of k pages
  });
  const out = cpu.mem.f32(Tq * Hq * D); // [Tq, Hq, D]
  const lse = cpu.mem.f32(Tq * Hq); // [Tq, Hq]
  const args: CacheAttendArgs = {
    keys: c.keys, values: c.values, sums: c.sums, centroids: c.centroids, q, out, lse,
    seqs, pageTable, items: Int32Array.from(items), Hq, Hkv, D, B, topk, causal, scale, dtype: c.dtype, maxBlocks, rows,
  };
  await cpu.pool.run('cacheAttend', args, items.length / 4, work);
  return { out, lse };
}
