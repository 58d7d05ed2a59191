/**
 * Host side of the CUDA KV cache, without a GPU: the per-call tables (cache-tables.ts) and what cache.cu's
 * append kernels compute from them, replayed on the host in the kernels' order (chunked appends with the kconv
 * state across chunks against referenceKconv over the whole sequence), storage sizes and launch geometry.
 */
import { type AppendEntry, MobaError, Rng } from '@moba/core';
import { referenceKconv } from '@moba/core/reference';
import { describe, expect, it } from 'vitest';
import {
  CACHE, appendTables, attendBytes, attendTables, attendVec, cacheAttendLaunch, cacheMergeLaunch, cachePageBytes, cacheRouteLaunch, cacheStateBytes,
} from '../src/cache-tables.js';

describe('cache tables', () => {
  it('append: row starts, (slot, pos0, pbase), concatenated page tables and the touched pages', () => {
    const B = 4;
    const entries: AppendEntry[] = [
      { slot: 3, row: 0, count: 6, pos0: 2, pages: Int32Array.from([7, 1]) }, // rows 2..7: page 7 [2, 4), page 1 [0, 4)
      { slot: 0, row: 6, count: 0, pos0: 4, pages: Int32Array.from([5]) }, // nothing new
      { slot: 1, row: 6, count: 1, pos0: 0, pages: Int32Array.from([2]) },
    ];
    const t = appendTables({ T: 7, entries }, B);
    expect([...t.cu]).toEqual([0, 6, 6, 7]);
    expect([...t.ent]).toEqual([3, 2, 0, 0, 4, 2, 1, 0, 3]);
    expect([...t.ptab]).toEqual([7, 1, 5, 2]);
    expect([...t.work]).toEqual([7, 2, 4, 1, 0, 4, 2, 0, 1]);
    expect(t.nwork).toBe(3);
    expect(t.nent).toBe(3);
  });
  it('attend: per query row its position (bottom-right aligned), length and page-table offset', () => {
    const t = attendTables({
      Tq: 4, Hq: 2, topk: 2, causal: true, scale: 0.5,
      entries: [{ slot: 0, length: 9, qRow: 0, nq: 3, pages: Int32Array.from([4, 0, 2]) }, { slot: 1, length: 5, qRow: 3, nq: 1, pages: Int32Array.from([1, 3]) }],
    });
    expect([...t.rows]).toEqual([6, 9, 0, 7, 9, 0, 8, 9, 0, 4, 5, 3]);
    expect([...t.ptab]).toEqual([4, 0, 2, 1, 3]);
  });
  it('sizes: a page is K and V in the dtype plus an f32 sum and centroid; the state and weight are f32', () => {
    expect(cachePageBytes({ Hkv: 8, D: 128, dtype: 'bf16', blockSize: 128 })).toBe(2 * 128 * 1024 * 2 + 2 * 1024 * 4);
    expect(cachePageBytes({ Hkv: 2, D: 16, dtype: 'f32', blockSize: 8 })).toBe(2 * 8 * 32 * 4 + 2 * 32 * 4);
    expect(cacheStateBytes(256, 3, 1024)).toEqual({ state: 256 * 2 * 1024 * 4, weight: 3 * 1024 * 4 });
    expect(cacheStateBytes(4, 0, 64)).toEqual({ state: 0, weight: 0 });
    expect(attendBytes(16, 16, 128, 8, 'bf16', 100)).toBe(16 * 16 * 8 * 4 + 16 * 16 * 8 * 130 * 4 + 16 * 16 * 128 * 2 + 16 * 16 * 4 + 400);
  });
});

describe('cache launch geometry', () => {
  it('route: one CTA per (row, kv head, group of up to 8 query heads), at least 4 warps, shared memory within the default', () => {
    const g = cacheRouteLaunch(16, 32, 8, 128, 8);
    expect(g.grid).toEqual([16, 8, 1]);
    expect(g.block).toEqual([128, 1, 1]);
    expect(g.hpc).toBe(4);
    expect(g.shared).toBe((32 * 129 + 4 * 128 + 2 * 4 * 8) * 4);
    const m = cacheRouteLaunch(3, 64, 1, 256, 64); // MQA, D 256, topk 64: 8 heads per CTA, 8 groups
    expect(m.grid).toEqual([3, 1, 8]);
    expect(m.block[0]).toBe(256);
    expect(m.shared).toBeLessThanOrEqual(48 * 1024);
    expect(cacheRouteLaunch(1, 16, 16, 128, 8).block[0]).toBe(128); // one head per CTA still loads with 4 warps
    expect(() => cacheRouteLaunch(1, 2, 1, 64, CACHE.maxTopk + 1)).toThrow(MobaError);
  });
  it('attend: one CTA of 4 warps per (row, head, slot); merge: one warp per (row, head); vectorised loads by D', () => {
    expect(cacheAttendLaunch(16, 16, 128, 8)).toEqual({ grid: [2048, 1, 1], block: [128, 1, 1], shared: 4 * 128 * 4 });
    expect(cacheMergeLaunch(16, 16)).toEqual({ grid: [64, 1, 1], block: [128, 1, 1], shared: 0 });
    expect([128, 256, 64, 192, 40, 16, 96].map(attendVec)).toEqual([4, 4, 2, 2, 1, 1, 1]);
  });
});

/** cache.cu's append kernels replayed on the host (f32 arithmetic as on the device, f32 storage). */
function replayAppend(pool: { k: Float32Array; sums: Float32Array; cents: Float32Array; state: Float32Array }, entries: AppendEntry[], T: number, k: Float32Array, w: Float32Array, C: number, W: number, B: number): void {
  const t = appendTables({ T, entries }, B);
  const f = Math.fround;
  for (let row = 0; row < T; row++) {
    let b = 0; // the last entry starting at or before the row (upper_index in common.cuh)
    while (b + 1 < t.nent && t.cu[b + 1]! <= row) b++;
    const [slot, pos0, pbase] = [t.ent[b * 3]!, t.ent[b * 3 + 1]!, t.ent[b * 3 + 2]!];
    const pos = pos0 + row - t.cu[b]!;
    for (let c = 0; c < C; c++) {
      let z = 0;
      for (let l = 0; l < W && pos - l >= 0; l++) {
        const p = pos - l;
        const x = p >= pos0 ? k[(t.cu[b]! + p - pos0) * C + c]! : pool.state[(slot * (W - 1) + p - pos0 + W - 1) * C + c]!;
        z = f(z + f(w[c * W + W - 1 - l]! * x));
      }
      pool.k[(t.ptab[pbase + Math.floor(pos / B)]! * B + (pos % B)) * C + c] = f(k[row * C + c]! + f(z / f(1 + f(Math.exp(-z)))));
    }
  }
  for (let i = 0; i < t.nwork; i++) {
    const [page, lo, hi] = [t.work[i * 3]!, t.work[i * 3 + 1]!, t.work[i * 3 + 2]!];
    for (let c = 0; c < C; c++) {
      let s = lo > 0 ? pool.sums[page * C + c]! : 0;
      for (let r = lo; r < hi; r++) s = f(s + pool.k[(page * B + r) * C + c]!);
      pool.sums[page * C + c] = s;
      if (hi === B) pool.cents[page * C + c] = f(s / B);
    }
  }
  for (let b = 0; b < t.nent; b++) {
    const [slot, pos0] = [t.ent[b * 3]!, t.ent[b * 3 + 1]!];
    const count = t.cu[b + 1]! - t.cu[b]!;
    for (let c = 0; c < C; c++) {
      const old = Array.from({ length: W - 1 }, (_, j) => pool.state[(slot * (W - 1) + j) * C + c]!);
      for (let j = 0; j < W - 1; j++) {
        const p = pos0 + count - (W - 1) + j;
        pool.state[(slot * (W - 1) + j) * C + c] = p >= pos0 ? k[(t.cu[b]! + p - pos0) * C + c]! : p >= 0 ? old[j + count]! : 0;
      }
    }
  }
}

describe('append tables drive the kconv state across chunks', () => {
  it('chunked appends of several sequences (pages in any order) equal the whole-sequence kconv, sums and centroids', () => {
    const rng = new Rng(7);
    const C = 3, W = 4, B = 5, S = 3, pages = 40;
    const w = Float32Array.from({ length: C * W }, () => Math.fround(rng.normal() * 0.5));
    const pool = { k: new Float32Array(pages * B * C), sums: new Float32Array(pages * C), cents: new Float32Array(pages * C), state: new Float32Array(S * (W - 1) * C).fill(NaN) };
    const free = Array.from({ length: pages }, (_, i) => (i * 17) % pages);
    const seqs = Array.from({ length: S }, () => ({ len: 0, pages: [] as number[], raw: [] as number[] }));
    for (let step = 0; step < 12; step++) {
      const names = [2, 0, 1].filter(() => rng.next() < 0.7);
      if (names.length === 0) continue;
      const counts = names.map(() => rng.int(0, 9));
      const T = counts.reduce((a, x) => a + x, 0);
      if (T === 0) continue;
      const k = Float32Array.from({ length: T * C }, () => Math.fround(rng.normal()));
      let row = 0;
      const entries = names.map((s, i) => {
        const q = seqs[s]!;
        while (q.pages.length * B < q.len + counts[i]!) q.pages.push(free.pop()!);
        const e = { slot: s, row, count: counts[i]!, pos0: q.len, pages: Int32Array.from(q.pages) };
        q.raw.push(...k.subarray(row * C, (row + counts[i]!) * C));
        row += counts[i]!;
        q.len += counts[i]!;
        return e;
      });
      replayAppend(pool, entries, T, k, w, C, W, B);
    }
    for (const [s, q] of seqs.entries()) {
      const want = referenceKconv(Float64Array.from(q.raw), Float64Array.from(w), C, W, { cuSeqlens: Int32Array.from([0, q.len]) });
      for (let p = 0; p < q.len; p++) {
        for (let c = 0; c < C; c++) {
          const got = pool.k[(q.pages[Math.floor(p / B)]! * B + (p % B)) * C + c]!;
          expect(Math.abs(got - want[p * C + c]!)).toBeLessThan(1e-5);
        }
      }
      for (let j = 0; j < Math.floor(q.len / B); j++) {
        for (let c = 0; c < C; c++) {
          let m = 0;
          for (let p = j * B; p < (j + 1) * B; p++) m += want[p * C + c]!;
          expect(pool.cents[q.pages[j]! * C + c]!).toBeCloseTo(m / B, 4);
        }
      }
      if (q.len >= W - 1) for (let i = 0; i < (W - 1) * C; i++) expect(pool.state[s * (W - 1) * C + i]).toBe(q.raw[(q.len - (W - 1)) * C + i]);
    }
  });
});

/** cache-route.cuh's per-warp list, replayed: tiles of 32 scores, candidates in lane order, insertion as the kernel does. */
function replayRouteList(scores: number[], K: number): number[] {
  const better = (s1: number, j1: number, s2: number, j2: number): boolean => s1 > s2 || (s1 === s2 && j1 > j2);
  const wl: number[] = [], wi: number[] = [];
  let n = 0;
  for (let j0 = 0; K > 0 && j0 < scores.length; j0 += 32) {
    const s = Array.from({ length: 32 }, (_, lane) => (j0 + lane < scores.length ? Math.fround(scores[j0 + lane]!) : -Infinity));
    const cand = s.map((x, lane) => x > -Infinity && (n < K || better(x, j0 + lane, wl[K - 1]!, wi[K - 1]!)));
    for (let src = 0; src < 32; src++) {
      if (!cand[src]) continue;
      const cs = s[src]!, cj = j0 + src;
      if (n === K && !better(cs, cj, wl[K - 1]!, wi[K - 1]!)) continue;
      let pos = 0;
      for (let i = 0; i < n; i++) if (better(wl[i]!, wi[i]!, cs, cj)) pos++;
      const nn = Math.min(n + 1, K);
      const vs: number[] = [], vi: number[] = [];
      for (let i = 0; i < nn; i++) {
        vs[i] = i === pos ? cs : wl[i < pos ? i : i - 1]!;
        vi[i] = i === pos ? cj : wi[i < pos ? i : i - 1]!;
      }
      for (let i = 0; i < nn; i++) { wl[i] = vs[i]!; wi[i] = vi[i]!; }
      n = nn;
    }
  }
  return wi.slice(0, n).sort((a, b) => a - b);
}

describe('cache router list', () => {
  it('is the exact top-k: ties to the higher block, NaN and -inf never win, any k up to 64', () => {
    const rng = new Rng(11);
    for (let trial = 0; trial < 300; trial++) {
      const nb = rng.int(0, 200);
      const K = rng.int(1, CACHE.maxTopk);
      const scores = Array.from({ length: nb }, () => {
        const r = rng.next();
        return r < 0.05 ? NaN : r < 0.1 ? -Infinity : r < 0.12 ? Infinity : rng.int(-6, 6) * 0.5; // many ties
      });
      const want = scores.map((s, j) => ({ s, j })).filter((x) => x.s > -Infinity).sort((a, b) => b.s - a.s || b.j - a.j).slice(0, K).map((x) => x.j).sort((a, b) => a - b);
      expect(replayRouteList(scores, K)).toEqual(want);
    }
  });
});
