/**
 * Routing (route.cu): per-block key centroids, then each query row's top-k blocks, on tensor cores
 * (f16/bf16, D 64/128: centroids split into 16-bit hi + lo, then the fused router route_tc/route_tcs) or
 * the generic CUDA-core router. Returns the indices `[T, Hq, topk]` (T query rows: fewer than the keys under
 * SPEC §8, both routers take the query boundaries beside the key ones); collect.ts builds the lists.
 */
import type { CheckedProblem, Layout } from '@moba/core';
import type { Buf } from './allocator.js';
import * as geo from './geometry.js';
import { DT } from './kernels.js';
import { opBytes } from './memory.js';
import { i32, i64, ptr } from './params.js';
import { type Cuda, type DeviceLayout, cudaProblem, deviceLayout } from './shared.js';

/** The routing indices of q against k's block centroids and the layout's device tables. */
export function route(c: Cuda, p: CheckedProblem, q: Buf, k: Buf, layout: Layout): { indices: Buf; lay: DeviceLayout } {
  const { shape, cfg: rc, seqs } = p;
  c.mem.fits('route()', opBytes(cudaProblem(shape, rc, seqs, layout)).route);
  const { T, Hq, Hkv, D } = shape;
  const lay = deviceLayout(c, layout, rc.blockSize, p.queries);
  const cent = c.mem.slot('centroids', Math.max(4, seqs.totalBlocks * Hkv * D * 4));
  c.prog.launch('route.cu', 'centroids', geo.centroidsLaunch(seqs.totalBlocks, Hkv * D), {
    kraw: ptr(k.ptr), dtype: i32(DT[shape.dtype].code), cent: ptr(cent.ptr), cu: ptr(lay.cu), block_base: ptr(lay.blockBase), nseq: i32(lay.nseq),
    B: i32(rc.blockSize), C: i32(Hkv * D), total_blocks: i32(seqs.totalBlocks),
  });
  const indices = c.mem.alloc(T * Hq * rc.topk * 4);
  try {
    const sfx = DT[shape.dtype].suffix;
    const tcTiles = geo.routeTileBase(p.queries.cuSeqlensQ, geo.K.routeTcRows);
    const tc = c.fast ? geo.routeTcLaunch(tcTiles[tcTiles.length - 1]!, Hq, shape.dtype, D, rc.topk, rc.causal, c.sharedOptIn) : null;
    if (tc) {
      // tensor cores: each f32 centroid as a 16-bit hi + lo pair (centroid_split), then the fused router
      const n = seqs.totalBlocks * Hkv * D;
      const split = c.mem.slot('centroidSplit', Math.max(4, n * 4));
      const lo = split.ptr + BigInt(n * 2);
      c.prog.launch('route.cu', `centroid_split_${sfx}`, geo.elementwiseLaunch('centroid_split', n), { cent: ptr(cent.ptr), hi: ptr(split.ptr), lo: ptr(lo), n: i64(n) });
      c.prog.launch('route.cu', `${tc.kernel}_d${D}_${sfx}`, tc, {
        q: ptr(q.ptr), chi: ptr(split.ptr), clo: ptr(lo), indices: ptr(indices.ptr), cuq: ptr(lay.cuq), cu: ptr(lay.cu), block_base: ptr(lay.blockBase),
        tile_base: ptr(c.mem.small('tcTileBase', tcTiles)),
        nseq: i32(lay.nseq), Hq: i32(Hq), Hkv: i32(Hkv), B: i32(rc.blockSize), topk: i32(rc.topk), causal: i32(rc.causal ? 1 : 0),
      });
    } else {
      const L = geo.routeLaunch(lay.nTiles, Hq, D, rc.topk);
      c.prog.launch('route.cu', `route_${sfx}`, L, {
        q: ptr(q.ptr), cent: ptr(cent.ptr), indices: ptr(indices.ptr), cuq: ptr(lay.cuq), cu: ptr(lay.cu), block_base: ptr(lay.blockBase),
        tile_base: ptr(lay.tileBase),
        nseq: i32(lay.nseq), Hq: i32(Hq), Hkv: i32(Hkv), D: i32(D), B: i32(rc.blockSize), topk: i32(rc.topk), causal: i32(rc.causal ? 1 : 0), ct: i32(L.ct),
      });
    }
  } catch (e) {
    c.mem.release(indices);
    throw e;
  }
  return { indices, lay };
}
