/**
 * Collection (collect.cu): routing indices → block-major lists (offsets, ascending rows, slotOf). Rows are
 * query rows (`lay.cuq`), blocks key blocks (SPEC §8).
 * MOBA_CUDA_COLLECT=chunked (opt-in until its H200 check has run): two launches over chunks of R query rows (collect-plan.ts): collect_count_chunks (per-chunk
 * histograms; the last CTA of each head scans them over the chunks in order, the last of those scans the
 * offsets) and collect_place (one warp per chunk and head walks its rows ascending with __match_any_sync
 * ranks: rows come out sorted, slots written alongside). No host round trip: rows / slotOf are sized by the
 * bound T·Hq·topk. Deterministic (integer counts, fixed scan order) and bitwise the legacy result.
 * Default (MOBA_CUDA_COLLECT unset or legacy): count → scan → host read of the total → scatter (collect_fill) → sort each list
 * (collect_sort) → the slot of every entry (collect_slot_of).
 */
import type { ResolvedConfig, Sequences } from '@moba/core';
import type { Buf } from './allocator.js';
import { collectMode, collectPlan } from './collect-plan.js';
import * as geo from './geometry.js';
import { i32, i64, ptr } from './params.js';
import type { Cuda, DeviceLayout, RoutingStore } from './shared.js';

/** The routing of `indices` (kept by the store; the caller releases it when this throws). `cuq`: the query boundaries on the host. */
export function collect(c: Cuda, indices: Buf, T: number, Hq: number, rc: ResolvedConfig, seqs: Sequences, lay: DeviceLayout, cuq: Int32Array): RoutingStore {
  const NB = seqs.totalBlocks;
  const fill = collectMode() === 'legacy' ? fillLegacy : fillChunked;
  return collected(c, indices, Hq * NB + 1, (offsets, out) => fill(c, indices, T, Hq, rc, seqs, lay, cuq, offsets, out));
}

interface Lists { rows: Buf | null; slotOf: Buf | null }

/** The store of `indices`: offsets [n] allocated and zeroed, `fill` allocates rows / slotOf into `out`; all freed when it throws. */
function collected(c: Cuda, indices: Buf, n: number, fill: (offsets: Buf, out: Lists) => void): RoutingStore {
  const offsets = c.mem.alloc(n * 4);
  const out: Lists = { rows: null, slotOf: null };
  try {
    c.drv.memsetD8(offsets.ptr, 0, n * 4);
    fill(offsets, out);
    c.drv.synchronize();
  } catch (e) {
    for (const b of [offsets, out.rows, out.slotOf]) if (b) c.mem.release(b);
    throw e;
  }
  return { indices, offsets, rows: out.rows!, slotOf: out.slotOf! };
}

/** MOBA_CUDA_COLLECT=chunked: two launches, rows / slotOf sized by the bound T·Hq·topk (no host round trip). */
function fillChunked(c: Cuda, indices: Buf, T: number, Hq: number, rc: ResolvedConfig, seqs: Sequences, lay: DeviceLayout, cuq: Int32Array, offsets: Buf, out: Lists): void {
  const NB = seqs.totalBlocks;
  const bound = T * Hq * rc.topk;
  const rows = (out.rows = c.mem.alloc(Math.max(1, bound) * 4));
  const slotOf = (out.slotOf = c.mem.alloc(Math.max(1, bound) * 4));
  if (T === 0) return;
  const bb = Int32Array.from([...seqs.seqs.map((s) => s.blockBase), NB]);
  const pl = collectPlan(T, Hq, rc.topk, cuq, bb, c.sms);
  const part = c.mem.slot('collectPart', Math.max(4, Hq * pl.S * 4));
  const done = c.mem.slot('collectDone', (Hq + 1) * 4);
  c.drv.memsetD8(done.ptr, 0, (Hq + 1) * 4);
  const ctab = ptr(c.mem.small('collectChunks', pl.table));
  const common = { indices: ptr(indices.ptr), ctab, part: ptr(part.ptr), offsets: ptr(offsets.ptr), cuq: ptr(lay.cuq), block_base: ptr(lay.blockBase),
    nseq: i32(lay.nseq), T_: i64(T), Hq: i32(Hq), topk: i32(rc.topk), NB: i32(NB), R: i32(pl.R), S: i64(pl.S), smem_ints: i32(pl.smemInts) };
  c.prog.launch('collect.cu', 'collect_count_chunks', pl.count, { ...common, done: ptr(done.ptr) });
  c.prog.launch('collect.cu', 'collect_place', pl.place, { ...common, rows: ptr(rows.ptr), slots: ptr(slotOf.ptr) });
}

/** The legacy path (the default; MOBA_CUDA_COLLECT=legacy): five launches and a host read of the total. */
function fillLegacy(c: Cuda, indices: Buf, T: number, Hq: number, rc: ResolvedConfig, seqs: Sequences, lay: DeviceLayout, _cuq: Int32Array, offsets: Buf, out: Lists): void {
  const NB = seqs.totalBlocks;
  const n = Hq * NB + 1;
  c.prog.launch('collect.cu', 'collect_count', geo.elementwiseLaunch('collect_count', T * Hq * rc.topk), {
    indices: ptr(indices.ptr), counts: ptr(offsets.ptr), cuq: ptr(lay.cuq), block_base: ptr(lay.blockBase), nseq: i32(lay.nseq), T_: i64(T), Hq: i32(Hq),
    topk: i32(rc.topk), NB: i32(NB),
  });
  c.prog.launch('collect.cu', 'collect_scan', geo.scanLaunch(), { a: ptr(offsets.ptr), n: i32(n) });
  const total = new Int32Array(1);
  c.drv.copyDtoH(total, offsets.ptr + BigInt((n - 1) * 4), 4);
  const rows = (out.rows = c.mem.alloc(Math.max(1, total[0]!) * 4));
  const cursor = c.mem.slot('cursor', Math.max(4, Hq * NB * 4));
  c.drv.memsetD8(cursor.ptr, 0, Hq * NB * 4);
  c.prog.launch('collect.cu', 'collect_fill', geo.elementwiseLaunch('collect_fill', T * Hq * rc.topk), {
    indices: ptr(indices.ptr), offsets: ptr(offsets.ptr), cursor: ptr(cursor.ptr), rows: ptr(rows.ptr), cuq: ptr(lay.cuq), block_base: ptr(lay.blockBase),
    nseq: i32(lay.nseq), T_: i64(T), Hq: i32(Hq), topk: i32(rc.topk), NB: i32(NB),
  });
  c.prog.launch('collect.cu', 'collect_sort', geo.sortLaunch(Hq * NB), {
    indices: ptr(indices.ptr), offsets: ptr(offsets.ptr), rows: ptr(rows.ptr), cuq: ptr(lay.cuq), cu: ptr(lay.cu), block_base: ptr(lay.blockBase),
    nseq: i32(lay.nseq), Hq: i32(Hq), topk: i32(rc.topk), NB: i32(NB), B: i32(rc.blockSize), causal: i32(rc.causal ? 1 : 0),
  });
  const slotOf = (out.slotOf = c.mem.alloc(rows.bytes));
  c.prog.launch('collect.cu', 'collect_slot_of', geo.sortLaunch(Hq * NB), {
    indices: ptr(indices.ptr), offsets: ptr(offsets.ptr), rows: ptr(rows.ptr), slots: ptr(slotOf.ptr), block_base: ptr(lay.blockBase), nseq: i32(lay.nseq),
    Hq: i32(Hq), topk: i32(rc.topk), NB: i32(NB),
  });
}
