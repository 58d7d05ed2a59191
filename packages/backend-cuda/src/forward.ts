/**
 * Attention forward (forward.cu). Three paths: key-major on tensor cores when a whole key block fits in
 * shared memory (forward_kv writes per-(row, slot) partials, forward_merge merges them per row in slot
 * order); query windows on tensor cores (forward_tc); the generic warp-per-row kernel (forward). Fewer
 * queries than keys (SPEC §8) run on the generic kernel, which takes the query boundaries beside the keys'.
 */
import { type CheckedProblem, type Layout, type Qkv, dtypeBytes } from '@moba/core';
import type { Buf } from './allocator.js';
import * as geo from './geometry.js';
import { DT } from './kernels.js';
import { opBytes } from './memory.js';
import { f32, i32, i64, ptr } from './params.js';
import { type Cuda, type RoutingStore, cudaProblem, deviceLayout, usesTensorCores, windows } from './shared.js';

export function forward(c: Cuda, p: CheckedProblem, t: Qkv<Buf>, rs: RoutingStore, layout: Layout): { out: Buf; lse: Buf } {
  const { shape, cfg: rc, seqs } = p;
  const cp = cudaProblem(shape, rc, seqs, layout);
  const { T, Hq, Hkv, D } = shape;
  const fast = usesTensorCores(c, shape.dtype, D) && p.queries.selfAttention;
  const kvL = fast ? geo.forwardKvLaunch(seqs.totalBlocks, rc.blockSize, Hkv, D, c.sharedOptIn) : null;
  const plan = geo.fwdPartPlan(T, Hq, Hkv, D, rc.topk, seqs.totalBlocks, c.sms, c.kvHeadsPerLaunch);
  c.mem.fits('forward()', opBytes(cp).forward + (kvL ? plan.bytes : fast ? T * Hq * D * 4 : 0));
  const lay = deviceLayout(c, layout, rc.blockSize, p.queries);
  const out = c.mem.alloc(T * Hq * D * dtypeBytes(shape.dtype));
  const lse = c.mem.alloc(T * Hq * 4);
  const scratch: Buf[] = []; // released (to the buffer cache) when the op ends: not live during other ops
  const sfx = DT[shape.dtype].suffix;
  const common = { q: ptr(t.q.ptr), k: ptr(t.k.ptr), v: ptr(t.v.ptr) };
  try {
    if (kvL) {
      // key-major: per key block, partial O, m, l of every row that selected it (forward_kv), then a fixed-order
      // merge per row (forward_merge); kv heads in groups so that the partials fit their budget
      const part = c.mem.scratch(scratch, plan.bytes);
      const ml = part.ptr + BigInt(plan.mlOffset);
      const G = Hq / Hkv;
      for (let kv0 = 0; kv0 < Hkv; kv0 += plan.kvPerLaunch) {
        const m = Math.min(plan.kvPerLaunch, Hkv - kv0);
        c.prog.launch('forward.cu', `forward_kv_d${D}_${sfx}`, { ...kvL, grid: [kvL.grid[0], m, 1] }, {
          ...common, slots: ptr(rs.slotOf.ptr), offsets: ptr(rs.offsets.ptr), rows: ptr(rs.rows.ptr), part: ptr(part.ptr), part_ml: ptr(ml),
          cu: ptr(lay.cu), block_base: ptr(lay.blockBase), nseq: i32(lay.nseq), Hq: i32(Hq), Hkv: i32(Hkv), B: i32(rc.blockSize),
          NB: i32(seqs.totalBlocks), topk: i32(rc.topk), causal: i32(rc.causal ? 1 : 0), scale: f32(rc.scale), kv0: i32(kv0),
        });
        c.prog.launch('forward.cu', `forward_merge_${sfx}`, geo.elementwiseLaunch('forward_merge', T * m * G * (D / 4)), {
          part: ptr(part.ptr), part_ml: ptr(ml), indices: ptr(rs.indices.ptr), out: ptr(out.ptr), lse: ptr(lse.ptr), T_: i64(T), Hq: i32(Hq),
          h0: i32(kv0 * G), Hs: i32(m * G), D: i32(D), topk: i32(rc.topk),
        });
      }
    } else if (fast) {
      const w = windows(c, layout, rc.topk, Hq);
      const acc = c.mem.scratch(scratch, T * Hq * D * 4);
      c.prog.launch('forward.cu', `forward_tc_d${D}_${sfx}`, geo.windowLaunch('forward_tc', w.count, Hq, geo.forwardTcShared(D, w.rows), c.sharedOptIn), {
        ...common, indices: ptr(rs.indices.ptr), out: ptr(out.ptr), lse: ptr(lse.ptr), acc: ptr(acc.ptr), cu: ptr(lay.cu), win_base: ptr(w.base),
        nseq: i32(lay.nseq), Hq: i32(Hq), Hkv: i32(Hkv), B: i32(rc.blockSize), topk: i32(rc.topk), causal: i32(rc.causal ? 1 : 0), scale: f32(rc.scale),
        BQ: i32(w.rows),
      });
    } else {
      c.prog.launch('forward.cu', `forward_${sfx}`, geo.forwardLaunch(T, Hq, D), {
        ...common, indices: ptr(rs.indices.ptr), out: ptr(out.ptr), lse: ptr(lse.ptr), cuq: ptr(lay.cuq), cu: ptr(lay.cu), nseq: i32(lay.nseq),
        T_: i32(T), Hq: i32(Hq), Hkv: i32(Hkv), D: i32(D), B: i32(rc.blockSize), topk: i32(rc.topk), causal: i32(rc.causal ? 1 : 0), scale: f32(rc.scale),
      });
    }
    c.drv.synchronize();
  } catch (e) {
    c.mem.release(out);
    c.mem.release(lse);
    throw e;
  } finally {
    for (const b of scratch) c.mem.release(b);
  }
  return { out, lse };
}
