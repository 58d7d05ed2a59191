/**
 * Collection (collect.cu): routing indices → block-major lists: count → scan → scatter (collect_fill) →
 * sort each list ascending (collect_sort) → the routing slot of every entry (collect_slot_of). Rows are query
 * rows (`lay.cuq`), blocks key blocks (SPEC §8).
 */
import type { ResolvedConfig, Sequences } from '@moba/core';
import type { Buf } from './allocator.js';
import * as geo from './geometry.js';
import { i32, i64, ptr } from './params.js';
import type { Cuda, DeviceLayout, RoutingStore } from './shared.js';

/** The routing of `indices` (kept by the store; the caller releases it when this throws). */
export function collect(c: Cuda, indices: Buf, T: number, Hq: number, rc: ResolvedConfig, seqs: Sequences, lay: DeviceLayout): RoutingStore {
  const NB = seqs.totalBlocks;
  const n = Hq * NB + 1;
  const offsets = c.mem.alloc(n * 4);
  let rows: Buf | null = null;
  let slotOf: Buf | null = null;
  try {
    c.drv.memsetD8(offsets.ptr, 0, n * 4);
    c.prog.launch('collect.cu', 'collect_count', geo.elementwiseLaunch('collect_count', T * Hq * rc.topk), {
      indices: ptr(indices.ptr), counts: ptr(offsets.ptr), cuq: ptr(lay.cuq), block_base: ptr(lay.blockBase), nseq: i32(lay.nseq), T_: i64(T), Hq: i32(Hq),
      topk: i32(rc.topk), NB: i32(NB),
    });
    c.prog.launch('collect.cu', 'collect_scan', geo.scanLaunch(), { a: ptr(offsets.ptr), n: i32(n) });
    const total = new Int32Array(1);
    c.drv.copyDtoH(total, offsets.ptr + BigInt((n - 1) * 4), 4);
    rows = c.mem.alloc(Math.max(1, total[0]!) * 4);
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
    slotOf = c.mem.alloc(rows.bytes);
    c.prog.launch('collect.cu', 'collect_slot_of', geo.sortLaunch(Hq * NB), {
      indices: ptr(indices.ptr), offsets: ptr(offsets.ptr), rows: ptr(rows.ptr), slots: ptr(slotOf.ptr), block_base: ptr(lay.blockBase), nseq: i32(lay.nseq),
      Hq: i32(Hq), topk: i32(rc.topk), NB: i32(NB),
    });
    c.drv.synchronize();
  } catch (e) {
    c.mem.release(offsets);
    if (rows) c.mem.release(rows);
    if (slotOf) c.mem.release(slotOf);
    throw e;
  }
  return { indices, offsets, rows, slotOf };
}
