/**
 * The two-launch collect's chunk plan (collect-plan.ts), checked by replaying collect.cu's two launches on the
 * host over the plan's table (histograms per chunk and head, the per-head scan over the chunks of each
 * sequence, the offsets scan, the warp placement in lane order) against core's collectRouting, plus the
 * MOBA_CUDA_COLLECT switch. The CUDA code itself is compared with the legacy path by gpu-check-collect.ts.
 */
import { MobaError, Rng, collectRouting, sequences } from '@moba/core';
import { describe, expect, it } from 'vitest';
import { collectMode, collectPlan } from '../src/collect-plan.js';

/** collect.cu's algorithm over the plan, in JS. */
function replay(ix: Int32Array, T: number, Hq: number, topk: number, cuq: Int32Array, bb: Int32Array, sms: number): { offsets: Int32Array; rows: Int32Array; slots: Int32Array } {
  const pl = collectPlan(T, Hq, topk, cuq, bb, sms);
  const nseq = cuq.length - 1, NB = bb[nseq]!;
  const seqOf = (t: number): number => { let s = 0; while (s + 1 < nseq && cuq[s + 1]! <= t) s++; return s; };
  const part = new Int32Array(Hq * pl.S).fill(-7); // garbage: launch 1 must write every entry it reads
  const tab = (c: number, k: number): number => pl.table[4 * c + k]!;
  for (let c = 0; c < pl.chunks; c++) {
    for (let h = 0; h < Hq; h++) {
      const base = h * pl.S + tab(c, 0), gb = tab(c, 1);
      part.fill(0, base, base + tab(c, 2) - gb);
      for (let t = c * pl.R; t < Math.min(T, (c + 1) * pl.R); t++) {
        for (let i = 0; i < topk; i++) {
          const j = ix[(t * Hq + h) * topk + i]!;
          if (j < 0) continue;
          const x = bb[tab(c, 3) >= 0 ? tab(c, 3) : seqOf(t)]! + j - gb;
          expect(x >= 0 && x < tab(c, 2) - gb).toBe(true);
          part[base + x]!++;
        }
      }
    }
  }
  const offsets = new Int32Array(Hq * NB + 1);
  for (let h = 0; h < Hq; h++) {
    for (let g = 0; g < NB; g++) {
      let s = 0;
      while (s + 1 < nseq && bb[s + 1]! <= g) s++;
      let run = 0;
      if (cuq[s + 1]! > cuq[s]!) {
        for (let c = Math.floor(cuq[s]! / pl.R); c <= Math.floor((cuq[s + 1]! - 1) / pl.R); c++) {
          const p = h * pl.S + tab(c, 0) + g - tab(c, 1);
          const v = part[p]!;
          part[p] = run;
          run += v;
        }
      }
      offsets[h * NB + g] = run;
    }
  }
  for (let i = 0, acc = 0; i < offsets.length; i++) { const v = offsets[i]!; offsets[i] = acc; acc += v; }
  const rows = new Int32Array(offsets[Hq * NB]!).fill(-1), slots = new Int32Array(rows.length).fill(-1);
  for (let c = 0; c < pl.chunks; c++) {
    for (let h = 0; h < Hq; h++) {
      const base = h * pl.S + tab(c, 0), gb = tab(c, 1);
      const cur = Array.from({ length: tab(c, 2) - gb }, (_, x) => part[base + x]! + offsets[h * NB + gb + x]!);
      for (let t = c * pl.R; t < Math.min(T, (c + 1) * pl.R); t++) {
        for (let i = 0; i < topk; i++) {
          const j = ix[(t * Hq + h) * topk + i]!;
          if (j < 0) continue;
          const pos = cur[bb[seqOf(t)]! + j - gb]!++;
          expect(rows[pos]).toBe(-1);
          rows[pos] = t;
          slots[pos] = i;
        }
      }
    }
  }
  return { offsets, rows, slots };
}

describe('two-launch collect plan', () => {
  it('replayed over the plan, it equals core collectRouting (varlen, empty query sequences, nq < nk, splits)', () => {
    const rng = new Rng(13);
    for (let trial = 0; trial < 40; trial++) {
      const nseq = rng.int(1, 4), B = [4, 16, 64][rng.int(0, 2)]!, Hq = rng.int(1, 3), topk = rng.int(1, 5);
      const kl = Array.from({ length: nseq }, () => rng.int(1, 300));
      const ql = kl.map((k) => (rng.int(0, 3) === 0 ? rng.int(0, k) : k));
      const cu = Int32Array.from([0, ...kl.map((_, i) => kl.slice(0, i + 1).reduce((a, x) => a + x, 0))]);
      const cuq = Int32Array.from([0, ...ql.map((_, i) => ql.slice(0, i + 1).reduce((a, x) => a + x, 0))]);
      const T = cuq[nseq]!;
      if (T === 0) continue;
      const seqs = sequences({ cuSeqlens: cu }, B);
      const bb = Int32Array.from([...seqs.seqs.map((s) => s.blockBase), seqs.totalBlocks]);
      const qSeqOf = new Int32Array(T);
      for (let s = 0; s < nseq; s++) qSeqOf.fill(s, cuq[s]!, cuq[s + 1]!);
      const ix = new Int32Array(T * Hq * topk).fill(-1);
      for (let t = 0; t < T; t++) {
        for (let h = 0; h < Hq; h++) {
          const nb = seqs.seqs[qSeqOf[t]!]!.nBlocks;
          const pick = [...new Set(Array.from({ length: rng.int(0, topk) }, () => rng.int(0, nb - 1)))].sort((a, b) => a - b);
          pick.forEach((j, i) => (ix[(t * Hq + h) * topk + i] = j));
        }
      }
      const want = collectRouting(ix, T, Hq, topk, seqs, { Tq: T, cuSeqlensQ: cuq, seqOf: qSeqOf, pos: qSeqOf, selfAttention: false });
      const got = replay(ix, T, Hq, topk, cuq, bb, 1);
      expect(Array.from(got.offsets)).toEqual(Array.from(want.offsets));
      expect(Array.from(got.rows)).toEqual(Array.from(want.rows));
      for (let h = 0; h < Hq; h++) {
        for (let g = 0; g < seqs.totalBlocks; g++) {
          for (let e = want.offsets[h * seqs.totalBlocks + g]!; e < want.offsets[h * seqs.totalBlocks + g + 1]!; e++) {
            const s = got.slots[e]!, t = got.rows[e]!;
            expect(bb[qSeqOf[t]!]! + ix[(t * Hq + h) * topk + s]!).toBe(g);
          }
        }
      }
    }
  });
  it('chunk sizes, budget and launch geometry', () => {
    const cuq = Int32Array.from([0, 131072, 262144]), bb = Int32Array.from([0, 1024, 2048]);
    const p = collectPlan(262144, 16, 8, cuq, bb, 132);
    expect(p.R).toBe(1024);
    expect(p.count.grid).toEqual([256, 16, 1]);
    expect(p.place.block).toEqual([32, 1, 1]);
    expect(p.S).toBe(256 * 1024);
    expect(p.smemInts).toBe(1024);
    const one = collectPlan(5, 2, 8, Int32Array.from([0, 5]), Int32Array.from([0, 20000]), 132);
    expect(one.chunks).toBe(1);
    expect(one.smemInts).toBe(0); // 20000 blocks do not fit in shared memory: the global fallback
    expect(() => collectPlan(0, 2, 8, Int32Array.from([0, 0]), Int32Array.from([0, 0]), 1)).toThrow(MobaError);
  });
  it('MOBA_CUDA_COLLECT', () => {
    expect(collectMode(undefined)).toBe('legacy');
    expect(collectMode('')).toBe('legacy');
    expect(collectMode('legacy')).toBe('legacy');
    expect(collectMode('chunked')).toBe('chunked');
    expect(() => collectMode('fast')).toThrow(/MOBA_CUDA_COLLECT/);
  });
});
