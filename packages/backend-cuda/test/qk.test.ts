/**
 * Fewer queries than keys (SPEC §8) on the CUDA backend, without a GPU: memory planning from Tq and Tk, the
 * routers' row tiles over the query boundaries, and the kernels that read query rows taking the query
 * boundaries (`cuq`) beside the key ones (`cu`). The kernels themselves run in the GPU check (gpu-check-qk.ts).
 */
import { queryRows, sequences } from '@moba/core';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import * as geo from '../src/geometry.js';
import { KERNEL_PARAMS } from '../src/kernels.js';
import { opBytes } from '../src/memory.js';

describe('memory planning with fewer queries than keys', () => {
  it('query-row outputs scale with Tq, dk and dv with Tk, centroids with the key blocks', () => {
    const base = { Hq: 16, Hkv: 4, D: 128, dtype: 'bf16' as const, topk: 8, nseq: 2 };
    const cu = Int32Array.from([0, 5000, 8192]);
    const totalBlocks = sequences({ cuSeqlens: cu }, 128).totalBlocks;
    const self = opBytes({ ...base, T: 8192, Tk: 8192, totalBlocks });
    const decode = opBytes({ ...base, T: 2, Tk: 8192, totalBlocks });
    const small = 4 * 3 * 4;
    expect(decode.forward).toBe(small + 2 * 16 * 128 * 2 + 2 * 16 * 4);
    expect(decode.backward).toBe(small + 2 * 16 * 4 + 2 * 16 * 128 * 2 + 2 * 8192 * 4 * 128 * 2);
    expect(self.route - decode.route).toBe((8192 - 2) * 16 * 8 * 12); // indices, rows and slots per query row
    fc.assert(fc.property(fc.integer({ min: 1, max: 4096 }), fc.integer({ min: 0, max: 4096 }), (tq, extra) => {
      const p = { ...base, T: tq, Tk: tq + extra, totalBlocks };
      const grown = opBytes({ ...p, Tk: p.Tk + 1 });
      // one more key row: only the backward's dk and dv grow (one row of each)
      return grown.forward === opBytes(p).forward && grown.route === opBytes(p).route && grown.backward - opBytes(p).backward === 2 * 4 * 128 * 2;
    }));
  });
});

describe('router tiles over the query rows', () => {
  it('a decode step has one tile per sequence with a query; tiles cover every query row once', () => {
    const cuk = Int32Array.from([0, 3000, 3000, 4100]);
    const cuq = Int32Array.from([0, 1, 1, 2]);
    expect(Array.from(geo.routeTileBase(cuq))).toEqual([0, 1, 1, 2]);
    expect(Array.from(geo.routeTileBase(cuq, geo.K.routeTcRows))).toEqual([0, 1, 1, 2]);
    expect(Array.from(geo.routeTileBase(cuk))).toEqual([0, 188, 188, 257]); // self-attention over the keys
    fc.assert(fc.property(fc.array(fc.tuple(fc.integer({ min: 0, max: 300 }), fc.integer({ min: 0, max: 300 })), { minLength: 1, maxLength: 6 }), (seqs) => {
      const cq = new Int32Array(seqs.length + 1);
      const ck = new Int32Array(seqs.length + 1);
      seqs.forEach(([nq, more], i) => { cq[i + 1] = cq[i]! + nq; ck[i + 1] = ck[i]! + nq + more; });
      const q = queryRows({ cuSeqlensQ: cq, cuSeqlensK: ck });
      for (const rows of [geo.K.routeRows, geo.K.routeTcRows]) {
        const tb = geo.routeTileBase(cq, rows);
        // every query row t lies in exactly one tile, of its own sequence, as the kernels locate it
        for (let t = 0; t < q.Tq; t++) {
          const s = q.seqOf[t]!;
          const tile = tb[s]! + Math.floor((t - cq[s]!) / rows);
          if (!(tile >= tb[s]! && tile < tb[s + 1]!)) return false;
          // the row's key position as route.cu computes it: t − (cuq[s + 1] − nk), plus the sequence's first key
          if (t - (cq[s + 1]! - (ck[s + 1]! - ck[s]!)) + ck[s]! !== q.pos[t]) return false;
        }
      }
      return true;
    }));
  });
});

describe('kernels that read query rows take the query boundaries', () => {
  it('route, route_tc(s), collect_count/fill/sort, forward, dq and dkdv take cuq; the key-only kernels do not', () => {
    for (const name of ['route', 'route_tc', 'route_tcs', 'collect_count', 'collect_fill', 'collect_sort', 'forward', 'dq', 'dkdv']) {
      expect(KERNEL_PARAMS[name]!.params, name).toContain('cuq');
    }
    for (const name of ['centroids', 'kconv_forward', 'kconv_dz', 'kconv_dk', 'kconv_dw']) expect(KERNEL_PARAMS[name]!.params, name).not.toContain('cuq');
  });
});
