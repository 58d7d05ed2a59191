// Context parallelism on CPU ranks (issue 15): shard layouts, the exchange plan against a brute-force
// oracle, and the executor against the single-rank float64 reference.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { MobaError, Rng, distBackward, distForward, exchangePlan, plan, shardLayout, sequences } from '../src/index.js';
import { referenceBackward, referenceForward, referenceRoute } from '../src/reference/index.js';
import { cuOf, distCase, selectedRemote } from './dist-helpers.js';

const rand = (rng: Rng, n: number): Float64Array => Float64Array.from(rng.normals(n));

describe('shardLayout', () => {
  it('names G and mode in its errors', () => {
    const l = { cuSeqlens: Int32Array.of(0, 10) };
    for (const G of [0, 1025, 1.5]) expect(() => shardLayout(l, G, 'zigzag', 4)).toThrow(expect.objectContaining({ param: 'G' }));
    expect(() => shardLayout(l, 2, 'ring' as never, 4)).toThrow(MobaError);
    expect(() => shardLayout(l, 2, 'ring' as never, 4)).toThrow(expect.objectContaining({ param: 'mode' }));
  });
  it('zigzag gives rank r chunks r and 2G-1-r of whole blocks; a partial last block stays with its chunk', () => {
    const s = shardLayout({ cuSeqlens: Int32Array.of(0, 30) }, 2, 'zigzag', 4); // 8 blocks, last has 2 tokens
    expect(Array.from(s.blockOwner)).toEqual([0, 0, 1, 1, 1, 1, 0, 0]);
    expect(s.rowsOf[0]!.length + s.rowsOf[1]!.length).toBe(30);
  });
  it('every block and row has one owner, rows follow their block', () => {
    fc.assert(fc.property(distCase(), (c) => {
      const cu = cuOf(c.lens);
      const s = shardLayout({ cuSeqlens: cu }, c.G, c.mode, c.B);
      const seqs = sequences({ cuSeqlens: cu }, c.B);
      expect(s.blocksOf.reduce((a, b) => a + b.length, 0)).toBe(seqs.totalBlocks);
      for (let t = 0; t < seqs.seqOf.length; t++) {
        const q = seqs.seqs[seqs.seqOf[t]!]!;
        expect(s.rowOwner[t]).toBe(s.blockOwner[q.blockBase + Math.floor((t - q.start) / c.B)]);
      }
    }), { numRuns: 60 });
  });
});

describe('exchangePlan', () => {
  const routings = (T: number, Hq: number, cu: Int32Array, B: number, topk: number, kind: string, rng: Rng): Int32Array => {
    const seqs = sequences({ cuSeqlens: cu }, B);
    const idx = new Int32Array(T * Hq * topk).fill(-1);
    for (let t = 0; t < T; t++) {
      const s = seqs.seqs[seqs.seqOf[t]!]!;
      const cb = Math.floor((t - s.start) / B);
      for (let h = 0; h < Hq; h++) {
        const pick = kind === 'rank0' ? [0] : kind === 'own' ? [cb] : Array.from({ length: topk }, () => rng.int(0, s.nBlocks - 1));
        [...new Set(pick)].sort((a, b) => a - b).forEach((j, i) => (idx[(t * Hq + h) * topk + i] = j));
      }
    }
    return idx;
  };
  it('requests exactly the selected remote blocks, deduped and sorted; sends and returns mirror them', () => {
    fc.assert(fc.property(distCase(), fc.constantFrom('random', 'rank0', 'own'), (c, kind) => {
      const cu = cuOf(c.lens);
      const T = cu[cu.length - 1]!;
      const Hq = c.Hkv * c.group;
      const s = shardLayout({ cuSeqlens: cu }, c.G, c.mode, c.B);
      const idx = routings(T, Hq, cu, c.B, c.topk, kind, new Rng(c.seed));
      const p = exchangePlan(idx, { cuSeqlens: cu }, s, { Hq, Hkv: c.Hkv, D: c.D, topk: c.topk, dtypeBytes: 2 });
      const oracle = selectedRemote(idx, cu, c.B, s, Hq, c.Hkv, c.topk);
      p.ranks.forEach((r, me) => {
        const keys = r.requests.map((q) => q.block * c.Hkv + q.kvHead);
        expect(new Set(keys).size).toBe(keys.length);
        expect(keys.slice().sort((a, b) => a - b)).toEqual([...oracle[me]!].sort((a, b) => a - b));
        expect(r.requests.every((q) => q.owner !== me && s.blockOwner[q.block] === q.owner)).toBe(true);
        const volume = oracle[me]!.size * c.B * c.D * 2 * 2;
        expect(r.kvBytes).toBe(volume); // exactly 1x the selected-remote volume (<= 1.2x, the target)
        expect(r.gradBytes).toBe(oracle[me]!.size * c.B * c.D * 4 * 2);
        for (let o = 0; o < c.G; o++) {
          expect(p.ranks[o]!.sends[me]).toEqual(r.requests.filter((q) => q.owner === o));
          expect(r.gradReturns[o]).toEqual(r.requests.filter((q) => q.owner === o));
        }
        if (kind === 'own' || c.G === 1) expect(r.requests).toEqual([]);
      });
    }), { numRuns: 80 });
  });
  it('with every block selected, K/V bytes are (G-1) times plan()\'s K+V bytes (T a multiple of B)', () => {
    const T = 64, B = 8, G = 4, Hkv = 2, Hq = 4, D = 4, nb = 8;
    const cu = Int32Array.of(0, T);
    const idx = new Int32Array(T * Hq * nb);
    for (let i = 0; i < idx.length; i++) idx[i] = i % nb;
    const s = shardLayout({ cuSeqlens: cu }, G, 'zigzag', B);
    const p = exchangePlan(idx, { cuSeqlens: cu }, s, { Hq, Hkv, D, topk: nb, dtypeBytes: 2 });
    const pl = plan({ T, Hq, Hkv, D, dtype: 'bf16' }, { cuSeqlens: cu }, { blockSize: B, topk: nb, causal: false, scale: 1 });
    // plan()'s forward bytes: q + K + V + out + lse (f32) + indices; K + V is what a rank may fetch
    const kvPlan = pl.bytes.forward - 2 * T * Hq * D * 2 - T * Hq * 4 - T * Hq * nb * 4;
    expect(kvPlan).toBe(2 * T * Hkv * D * 2);
    expect(p.ranks.reduce((a, r) => a + r.kvBytes, 0)).toBe((G - 1) * kvPlan);
    expect(p.ranks.every((r) => r.centroidBytes === (nb - 2) * Hkv * D * 2)).toBe(true);
  });
});

describe('distForward / distBackward on CPU ranks', () => {
  it('equal the single-rank reference: route, out, lse, dq bitwise; dk/dv bitwise vs the canonical order, 1e-12 vs row order', () => {
    fc.assert(fc.property(distCase(90), (c) => {
      const cu = cuOf(c.lens);
      const layout = { cuSeqlens: cu };
      const T = cu[cu.length - 1]!;
      const Hq = c.Hkv * c.group;
      const shape = { T, Hq, Hkv: c.Hkv, D: c.D, dtype: 'f32' as const };
      const cfg = { blockSize: c.B, topk: c.topk, causal: c.causal, scale: 1 / Math.sqrt(c.D) };
      const rng = new Rng(c.seed);
      const q = rand(rng, T * Hq * c.D), k = rand(rng, T * c.Hkv * c.D), v = rand(rng, T * c.Hkv * c.D), dO = rand(rng, T * Hq * c.D);
      const s = shardLayout(layout, c.G, c.mode, c.B);
      const f = distForward(q, k, v, shape, layout, cfg, s);
      const idx = referenceRoute(q, k, shape, layout, cfg);
      expect(f.indices).toEqual(idx);
      const ref = referenceForward(q, k, v, idx, shape, layout, cfg);
      expect(f.out).toEqual(ref.out);
      expect(f.lse).toEqual(ref.lse);
      // each rank holds its own rows plus exactly the requested blocks, zeros elsewhere
      const W = c.Hkv * c.D;
      f.state.kRecv.forEach((buf, r) => {
        const have = new Set<number>();
        for (const p of s.rowsOf[r]!) for (let h = 0; h < c.Hkv; h++) have.add(p * c.Hkv + h);
        const seqs = sequences(layout, c.B);
        for (const rq of f.plan.ranks[r]!.requests) {
          const sq = seqs.seqs[rq.seq]!;
          for (let p = sq.start + rq.index * c.B; p < Math.min(sq.start + (rq.index + 1) * c.B, sq.start + sq.len); p++) have.add(p * c.Hkv + rq.kvHead);
        }
        for (let i = 0; i < T * c.Hkv; i++) for (let d = 0; d < c.D; d++) expect(buf[i * c.D + d]).toBe(have.has(i) ? k[i * c.D + d] : 0);
      });
      const b = distBackward(q, f.out, f.lse, dO, f, shape, layout, cfg, s);
      const rb = referenceBackward(q, k, v, ref.out, ref.lse, dO, idx, shape, layout, cfg);
      expect(b.dq).toEqual(rb.dq);
      // canonical order: per key row, the owner's rows' contribution first, then the other ranks ascending
      const parts = s.rowsOf.map((rows) => referenceBackward(q, k, v, ref.out, ref.lse, dO, idx, shape, layout, cfg, undefined, Array.from(rows)));
      const canon = (key: 'dk' | 'dv'): Float64Array => {
        const out = new Float64Array(T * W);
        for (let p = 0; p < T; p++) {
          const o = s.rowOwner[p]!;
          for (let i = 0; i < W; i++) {
            let acc = parts[o]![key][p * W + i]!;
            for (let r = 0; r < c.G; r++) if (r !== o) acc += parts[r]![key][p * W + i]!;
            out[p * W + i] = acc;
          }
        }
        return out;
      };
      expect(b.dk).toEqual(canon('dk'));
      expect(b.dv).toEqual(canon('dv'));
      for (const key of ['dk', 'dv'] as const) {
        const scale = 1 + rb[key].reduce((a, x) => Math.max(a, Math.abs(x)), 0);
        rb[key].forEach((x, i) => expect(Math.abs(b[key][i]! - x)).toBeLessThanOrEqual(1e-12 * scale));
      }
    }), { numRuns: 25 });
  });
});
