/**
 * Attention backward (backward.cu): Δ = rowsum(dO ∘ O) (delta), then either the tensor-core path
 * (dkdv_meta gathers each list entry's row values once; dkdv_tc/dkdv_tc8 write dK, dV and per-(row, slot,
 * key tile) dQ partials; dq_merge sums them per row in a fixed order) or the generic kernels (dkdv, dq).
 * Fewer queries than keys (SPEC §8) run on the generic kernels: dq for the T query rows, dk and dv for all
 * Tk key rows.
 */
import { type BackwardInputs, type CheckedProblem, type Layout, dtypeBytes } from '@moba/core';
import type { Buf } from './allocator.js';
import * as geo from './geometry.js';
import { DT } from './kernels.js';
import { opBytes } from './memory.js';
import { f32, i32, i64, ptr } from './params.js';
import { type Cuda, type RoutingStore, cudaProblem, deviceLayout, usesTensorCores } from './shared.js';

export function backward(c: Cuda, p: CheckedProblem, t: BackwardInputs<Buf>, rs: RoutingStore, layout: Layout): { dq: Buf; dk: Buf; dv: Buf } {
  const { shape, cfg: rc, seqs } = p;
  const cp = cudaProblem(shape, rc, seqs, layout);
  const { T, Tk, Hq, Hkv, D } = shape;
  const fast = usesTensorCores(c, shape.dtype, D) && p.queries.selfAttention;
  const tcL = fast ? geo.dkdvTcLaunch(seqs.totalBlocks, rc.blockSize, Hkv, D, c.sharedOptIn) : null;
  const plan = tcL ? geo.dqPartPlan(T, Hq, Hkv, D, rc.topk, tcL.nsub, seqs.totalBlocks, c.sms, c.kvHeadsPerLaunch) : { kvPerLaunch: Hkv, bytes: 0 };
  const metaBytes = tcL ? rs.rows.bytes * 4 : 0; // dkdv_meta: 16 bytes per list entry
  c.mem.fits('backward()', opBytes(cp).backward + plan.bytes + metaBytes);
  const lay = deviceLayout(c, layout, rc.blockSize, p.queries);
  const eb = dtypeBytes(shape.dtype);
  const delta = c.mem.slot('delta', T * Hq * 4);
  const sfx = DT[shape.dtype].suffix;
  const dq = c.mem.alloc(T * Hq * D * eb);
  const dk = c.mem.alloc(Tk * Hkv * D * eb);
  const dv = c.mem.alloc(Tk * Hkv * D * eb);
  const scratch: Buf[] = []; // released (to the buffer cache) when the op ends
  const qkv = { q: ptr(t.q.ptr), k: ptr(t.k.ptr), v: ptr(t.v.ptr), dout: ptr(t.dOut.ptr) };
  try {
    c.prog.launch('backward.cu', `delta_${sfx}`, geo.deltaLaunch(T, Hq), { out: ptr(t.out.ptr), dout: ptr(t.dOut.ptr), dlt: ptr(delta.ptr), nrows: i64(T * Hq), D: i32(D) });
    if (tcL) {
      // the list entries' rows, slots, lse and Δ gathered once (dkdv_meta); dK, dV and per-(row, slot, key
      // tile) dQ partials per key block (dkdv_tc), then a fixed-order sum per row (dq_merge); kv heads in
      // groups so that the partials fit their budget (geometry.dqPartPlan)
      const L = tcL;
      const meta = c.mem.scratch(scratch, metaBytes);
      c.prog.launch('backward.cu', 'dkdv_meta', geo.sortLaunch(Hq * seqs.totalBlocks), {
        offsets: ptr(rs.offsets.ptr), rows: ptr(rs.rows.ptr), slots: ptr(rs.slotOf.ptr), lse: ptr(t.lse.ptr), dlt: ptr(delta.ptr), Hq: i32(Hq),
        NB: i32(seqs.totalBlocks), meta: ptr(meta.ptr),
      });
      const part = c.mem.scratch(scratch, plan.bytes);
      const G = Hq / Hkv;
      for (let kv0 = 0; kv0 < Hkv; kv0 += plan.kvPerLaunch) {
        const m = Math.min(plan.kvPerLaunch, Hkv - kv0);
        c.prog.launch('backward.cu', `${L.kernel}_d${D}_${sfx}`, { ...L, grid: [L.grid[0], m, 1] }, {
          ...qkv, meta: ptr(meta.ptr), offsets: ptr(rs.offsets.ptr), dko: ptr(dk.ptr), dvo: ptr(dv.ptr), part: ptr(part.ptr),
          cu: ptr(lay.cu), block_base: ptr(lay.blockBase), nseq: i32(lay.nseq), Hq: i32(Hq), Hkv: i32(Hkv), B: i32(rc.blockSize), NB: i32(seqs.totalBlocks),
          topk: i32(rc.topk), causal: i32(rc.causal ? 1 : 0), scale: f32(rc.scale), nsub: i32(L.nsub), kv0: i32(kv0),
        });
        c.prog.launch('backward.cu', `dq_merge_${sfx}`, geo.elementwiseLaunch('dq_merge', T * m * G * (D / 4)), {
          part: ptr(part.ptr), indices: ptr(rs.indices.ptr), dqo: ptr(dq.ptr), cu: ptr(lay.cu), nseq: i32(lay.nseq), T_: i64(T), Hq: i32(Hq),
          h0: i32(kv0 * G), Hs: i32(m * G), D: i32(D), B: i32(rc.blockSize), topk: i32(rc.topk), nsub: i32(L.nsub), kvt: i32(L.kvTile), scale: f32(rc.scale),
        });
      }
    } else {
      const L = geo.dkdvLaunch(Hkv, seqs.totalBlocks, rc.blockSize, D);
      c.prog.launch('backward.cu', `dkdv_${sfx}`, L, {
        ...qkv, lse: ptr(t.lse.ptr), dlt: ptr(delta.ptr), offsets: ptr(rs.offsets.ptr), rows: ptr(rs.rows.ptr), dk: ptr(dk.ptr), dv: ptr(dv.ptr),
        cuq: ptr(lay.cuq), cu: ptr(lay.cu), block_base: ptr(lay.blockBase), nseq: i32(lay.nseq), Hq: i32(Hq), Hkv: i32(Hkv), D: i32(D), B: i32(rc.blockSize),
        NB: i32(seqs.totalBlocks), causal: i32(rc.causal ? 1 : 0), scale: f32(rc.scale), kc: i32(L.kc),
      });
      c.prog.launch('backward.cu', `dq_${sfx}`, geo.dqLaunch(T, Hq, D), {
        ...qkv, lse: ptr(t.lse.ptr), dlt: ptr(delta.ptr), indices: ptr(rs.indices.ptr), dqo: ptr(dq.ptr), cuq: ptr(lay.cuq), cu: ptr(lay.cu),
        nseq: i32(lay.nseq),
        T_: i32(T), Hq: i32(Hq), Hkv: i32(Hkv), D: i32(D), B: i32(rc.blockSize), topk: i32(rc.topk), causal: i32(rc.causal ? 1 : 0), scale: f32(rc.scale),
      });
    }
    c.drv.synchronize();
  } catch (e) {
    for (const b of [dq, dk, dv]) c.mem.release(b);
    throw e;
  } finally {
    for (const b of scratch) c.mem.release(b);
  }
  return { dq, dk, dv };
}
