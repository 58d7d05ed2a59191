/**
 * Host side of the CUDA KV cache, without a GPU: the per-call tables (cache-tables.ts) and what cache.cu's
 * append kernels compute from them, replayed on the host in the kernels' order (chunked appends with the kconv
 * state across chunks against referenceKconv over the whole sequence), storage sizes and launch geometry.
 */
import { type AppendEntry, MobaError, Rng } from '@moba/core';
import { referenceKconv } from '@moba/core/reference';
import { describe, expect, it } from 'vitest';
import {
  CACHE, appendTables, attendBytes, attendTables, attendVec, cacheAttendLaunch, cachePageBytes, cacheRouteLaunch, cacheStateBytes,
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
  it('attend: one table: per query row its position (bottom-right aligned), length and page-table offset, then the page tables', () => {
    const t = attendTables({
      Tq: 4, Hq: 2, topk: 2, causal: true, scale: 0.5,
      entries: [{ slot: 0, length: 9, qRow: 0, nq: 3, pages: Int32Array.from([4, 0, 2]) }, { slot: 1, length: 5, qRow: 3, nq: 1, pages: Int32Array.from([1, 3]) }],
    }, 4);
    expect([...t.rows]).toEqual([6, 9, 0, 7, 9, 0, 8, 9, 0, 4, 5, 3]);
    expect([...t.pages()]).toEqual([4, 0, 2, 1, 3]);
    expect(t.pageInts).toBe(5);
    expect(t.maxBlocks).toBe(3);
    const r = attendTables({ Tq: 3, Hq: 1, topk: 1, causal: true, scale: 1, entries: [{ slot: 2, length: 4, qRow: 1, nq: 2, pages: Int32Array.from([5]) }, { slot: 0, length: 1, qRow: 0, nq: 1, pages: Int32Array.from([6]) }] }, 4);
    expect([...r.rows, ...r.pages()]).toEqual([0, 1, 1, 2, 4, 0, 3, 4, 0, 5, 6]); // rows in qRow order, page tables in entry order
  });
  it('sizes: a page is K and V in the dtype plus an f32 sum and centroid; the state and weight are f32', () => {
    expect(cachePageBytes({ Hkv: 8, D: 128, dtype: 'bf16', blockSize: 128 })).toBe(2 * 128 * 1024 * 2 + 2 * 1024 * 4);
    expect(cachePageBytes({ Hkv: 2, D: 16, dtype: 'f32', blockSize: 8 })).toBe(2 * 8 * 32 * 4 + 2 * 32 * 4);
    expect(cacheStateBytes(256, 3, 1024)).toEqual({ state: 256 * 2 * 1024 * 4, weight: 3 * 1024 * 4 });
    expect(cacheStateBytes(4, 0, 64)).toEqual({ state: 0, weight: 0 });
    expect(attendBytes(16, 16, 128, 8, 'bf16', 100, 64)).toBe(16 * 16 * 8 * 4 + 16 * 16 * 8 * 130 * 4 + 16 * 16 * 128 * 2 + 16 * 16 * 4 + 400 + 64);
    expect(attendBytes(16, 16, 128, 8, 'bf16', 100, 64, 2) - attendBytes(16, 16, 128, 8, 'bf16', 100, 64)).toBe(16 * 16 * 8 * 130 * 4); // a partial per sub-block
  });
});

describe('cache launch geometry', () => {
  it('route: one CTA per (row, kv head, group of up to 8 query heads, split), at least 4 warps, shared memory within the default', () => {
    const g = cacheRouteLaunch(16, 32, 8, 128, 8, 10, 132, 1);
    expect(g.grid).toEqual([16, 8, 1]);
    expect(g.block).toEqual([128, 1, 1]);
    expect(g.hpc).toBe(4);
    expect(g.nbuf).toBe(2); // two float4 centroid tiles (the next loads while one is scored), q, the lists
    expect(g.shared).toBe(2 * 32 * 32 * 16 + (4 * 128 + 2 * 4 * 8) * 4);
    const m = cacheRouteLaunch(3, 64, 1, 256, 64, 10, 132); // MQA, D 256, topk 64: 8 heads per CTA, 8 groups
    expect(m.grid).toEqual([3, 8, 1]);
    expect(m.block[0]).toBe(256);
    expect(m.shared).toBeLessThanOrEqual(48 * 1024);
    expect(m.nbuf).toBe(1); // two 32 KiB tiles do not fit: one at a time
    expect(cacheRouteLaunch(1, 2, 1, 6, 8, 10, 132).shared).toBe(2 * 32 * 2 * 16 + (2 * 8 + 2 * 2 * 8) * 4); // D 6: padded to 8
    expect(cacheRouteLaunch(1, 16, 16, 128, 8, 10, 132).block[0]).toBe(128); // one head per CTA still loads with 4 warps
  });
  it('route split: fills the GPU (about 12 CTAs per SM), at least 2 tiles per split, MOBA_CUDA_ROUTE_SPLIT-style override', () => {
    const sms = 132, target = CACHE.routeCtasPerSm * sms;
    const b1 = cacheRouteLaunch(1, 16, 16, 128, 8, 4096, sms); // 512K at B 128, batch 1: 128 tiles over 16 CTAs
    expect(b1.nsplit).toBe(64);
    expect(b1.tps).toBe(2);
    expect(b1.grid).toEqual([1, 16, 64]);
    expect(b1.plistBytes).toBe(1 * 16 * 64 * 2 * 8 * 4);
    expect(b1.counters).toBe(16);
    const b16 = cacheRouteLaunch(16, 16, 16, 128, 8, 4096, sms); // 512K x 16: 256 CTAs, 7 splits of 19 tiles
    expect([b16.nsplit, b16.tps]).toEqual([7, 19]);
    expect(b16.grid[0] * b16.grid[1] * b16.grid[2]).toBeGreaterThanOrEqual(target);
    const short = cacheRouteLaunch(1, 16, 16, 128, 8, 64, sms); // 2 tiles: unsplit (at least 2 tiles per split)
    expect([short.nsplit, short.plistBytes]).toEqual([1, 0]);
    expect(cacheRouteLaunch(64, 16, 16, 128, 8, 1024, sms).nsplit).toBe(2); // 1024 CTAs already: 2 splits make 12 per SM
    expect(cacheRouteLaunch(128, 16, 16, 128, 8, 1024, sms).nsplit).toBe(1); // 2048 CTAs
    expect(cacheRouteLaunch(1, 16, 16, 128, 8, 4096, sms, 1).nsplit).toBe(1);
    expect(cacheRouteLaunch(1, 16, 16, 128, 8, 4096, sms, 5)).toMatchObject({ nsplit: 5, tps: 26 });
    expect(cacheRouteLaunch(1, 16, 16, 128, 8, 100, sms, 1000)).toMatchObject({ nsplit: 4, tps: 1 }); // at most one split per tile
    expect(cacheRouteLaunch(1, 1, 1, 16, 2, 2 ** 31 - 1, sms, 2 ** 30).grid[2]).toBeLessThanOrEqual(65535);
    const rng = new Rng(5);
    for (let trial = 0; trial < 200; trial++) {
      const Tq = rng.int(1, 40), Hkv = rng.int(1, 8), G = rng.int(1, 10), maxBlocks = rng.int(1, 20000);
      const L = cacheRouteLaunch(Tq, Hkv * G, Hkv, 64, 8, maxBlocks, rng.int(1, 200), rng.next() < 0.3 ? rng.int(1, 100) : null);
      const tiles = Math.ceil(maxBlocks / 32);
      expect(L.nsplit).toBeGreaterThanOrEqual(1);
      expect(L.grid[1]).toBe(Hkv * Math.ceil(G / L.hpc));
      expect(L.counters).toBe(Tq * L.grid[1]);
      for (const nt of [tiles, rng.int(0, tiles)]) { // the longest row and a shorter one: every tile exactly once
        const seen = new Int32Array(nt);
        for (let z = 0; z < L.nsplit; z++) for (let tt = Math.min(z * L.tps, nt); tt < Math.min(Math.min(z * L.tps, nt) + L.tps, nt); tt++) seen[tt]!++;
        expect(seen.every((x) => x === 1)).toBe(true);
      }
      if (L.nsplit > 1) expect(L.plistBytes).toBe(Tq * Hkv * G * L.nsplit * 2 * 8 * 4);
    }
  });
  it('route dense (topk above 64): no list, shared memory independent of topk; the dense attend at 512K x 16 fits the grid limits', () => {
    const d = cacheRouteLaunch(16, 16, 16, 128, 4096, 4096, 132);
    expect(d.shared).toBe(cacheRouteLaunch(16, 16, 16, 128, 1e6, 4096, 132).shared);
    expect(d.shared).toBe(2 * 32 * 32 * 16 + 128 * 4);
    expect(d.plistBytes).toBe(0);
    expect(cacheAttendLaunch(16, 16, 128, 4096).grid).toEqual([16 * 16 * 4096 * 2, 1, 1]); // two sub-blocks per block
    expect(attendBytes(16, 16, 128, 4096, 'bf16', 16 * 3 + 16 * 4096, 0, 2)).toBeLessThan(1.2e9); // partials 1.09 GB (two sub-blocks per block)
    expect(() => cacheAttendLaunch(2 ** 16, 64, 128, 2 ** 10)).toThrow(MobaError); // 2^32 CTAs
  });
  it('attend: one CTA of 128 threads per (row, head, slot, sub-block) (the last per (row, head) merges); loads of up to 16 bytes by D', () => {
    // bf16 D 128, B 128: two sub-blocks of 64 rows (K and V staged, rows of 256 + 16 bytes), q [D], p [128], acc [8][D]
    expect(cacheAttendLaunch(16, 16, 128, 8)).toEqual({ grid: [2048 * 2, 1, 1], block: [128, 1, 1], shared: 2 * 64 * 272 + (128 + 128 + 8 * 128) * 4, vec: 8, sb: 64, nsub: 2 });
    expect(cacheAttendLaunch(1, 4, 256, 8, 'f32', 128)).toMatchObject({ vec: 4, sb: 16, nsub: 8 }); // rows of 1040 bytes: at most 17 per stage, 8 balanced sub-blocks
    expect(cacheAttendLaunch(1, 4, 64, 8, 'bf16', 128)).toMatchObject({ sb: 128, nsub: 1 });
    expect(cacheAttendLaunch(1, 4, 64, 8, 'bf16', 100)).toMatchObject({ sb: 100, nsub: 1 });
    expect(cacheAttendLaunch(1, 4, 128, 8, 'bf16', 100)).toMatchObject({ sb: 50, nsub: 2 }); // balanced sub-blocks
    expect(cacheAttendLaunch(1, 4, 255, 8, 'f16', 16)).toMatchObject({ vec: 1 });
    expect([128, 256, 64, 192, 40, 16, 96, 12, 6, 5].map((D) => attendVec(D))).toEqual([8, 8, 8, 8, 8, 8, 8, 4, 2, 1]);
    expect([128, 64, 6, 5].map((D) => attendVec(D, 'f32'))).toEqual([4, 4, 2, 1]);
    for (let D = 1; D <= 256; D++) for (const dt of ['f32', 'f16'] as const) for (const B of [1, 7, 64, 128, 512]) { // within the kernel's bounds
      const L = cacheAttendLaunch(1, 1, D, 8, dt, B);
      expect(D % L.vec).toBe(0);
      expect(L.sb).toBeLessThanOrEqual(128); // one row per thread
      expect(L.sb * L.nsub).toBeGreaterThanOrEqual(B);
      expect((L.nsub - 1) * L.sb).toBeLessThan(B); // no sub-block wholly past the block
      expect(L.shared).toBeLessThanOrEqual(48 * 1024);
    }
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

interface List { s: number[]; j: number[]; n: number }
const better = (s1: number, j1: number, s2: number, j2: number): boolean => s1 > s2 || (s1 === s2 && j1 > j2);

/** cache-route.cuh's cr_insert replayed: the 32 lanes' candidates (s, j) (valid: s > -inf) in lane order into a list of at most K. */
function crInsert(l: List, s: number[], j: number[], K: number): void {
  const cand = s.map((x, lane) => x > -Infinity && (l.n < K || better(x, j[lane]!, l.s[K - 1]!, l.j[K - 1]!)));
  for (let src = 0; src < 32; src++) {
    if (!cand[src]) continue;
    const cs = s[src]!, cj = j[src]!;
    if (l.n === K && !better(cs, cj, l.s[K - 1]!, l.j[K - 1]!)) continue;
    let pos = 0;
    for (let i = 0; i < l.n; i++) if (better(l.s[i]!, l.j[i]!, cs, cj)) pos++;
    const nn = Math.min(l.n + 1, K);
    const vs: number[] = [], vi: number[] = [];
    for (let i = 0; i < nn; i++) {
      vs[i] = i === pos ? cs : l.s[i < pos ? i : i - 1]!;
      vi[i] = i === pos ? cj : l.j[i < pos ? i : i - 1]!;
    }
    for (let i = 0; i < nn; i++) { l.s[i] = vs[i]!; l.j[i] = vi[i]!; }
    l.n = nn;
  }
}

/**
 * cache_route replayed for one (row, head): split z scores tiles [z·tps, (z+1)·tps) into its own list and writes it
 * (-inf / -1 padded to K); split `last` (the last to arrive) then inserts the others' lists in range order, flattened
 * (split, entry), 32 at a time. Dense (K >= nb): marks j or -1, compacted ascending. Returns the selected blocks, ascending.
 */
function replayRoute(scores: number[], K: number, tps: number, nsplit: number, last: number): number[] {
  const nb = scores.length, nt = Math.ceil(nb / 32);
  const f = scores.map((x) => Math.fround(x));
  if (K >= nb) return f.map((x, j) => (x > -Infinity ? j : -1)).filter((j) => j >= 0);
  const lists: List[] = [];
  for (let z = 0; z < nsplit; z++) {
    const l: List = { s: [], j: [], n: 0 };
    const t0 = Math.min(z * tps, nt);
    for (let tt = t0; K > 0 && tt < Math.min(t0 + tps, nt); tt++) {
      const j = Array.from({ length: 32 }, (_, lane) => tt * 32 + lane);
      crInsert(l, j.map((x) => (x < nb ? f[x]! : -Infinity)), j, K);
    }
    lists.push(l);
  }
  const m = lists[last]!;
  const entry = (e: number): [number, number] => { // flattened (split, entry); own split and past the end: none
    const z = Math.floor(e / K), i = e - z * K, p = lists[z];
    return e < nsplit * K && z !== last && i < p!.n ? [p!.s[i]!, p!.j[i]!] : [-Infinity, -1];
  };
  for (let e0 = 0; K > 0 && e0 < nsplit * K; e0 += 32) {
    const c = Array.from({ length: 32 }, (_, lane) => entry(e0 + lane));
    crInsert(m, c.map((x) => x[0]), c.map((x) => x[1]), K);
  }
  return m.j.slice(0, m.n).sort((a, b) => a - b);
}

describe('cache router list', () => {
  it('is the exact top-k whatever the split and the merging split: ties to the higher block, NaN and -inf never win, any k up to 64', () => {
    const rng = new Rng(11);
    for (let trial = 0; trial < 400; trial++) {
      const nb = rng.int(0, 700);
      const K = rng.int(1, trial % 4 === 0 ? 800 : CACHE.maxTopk);
      const scores = Array.from({ length: nb }, () => {
        const r = rng.next();
        return r < 0.05 ? NaN : r < 0.1 ? -Infinity : r < 0.12 ? Infinity : rng.int(-6, 6) * 0.5; // many ties
      });
      const want = scores.map((s, j) => ({ s, j })).filter((x) => x.s > -Infinity).sort((a, b) => b.s - a.s || b.j - a.j).slice(0, K).map((x) => x.j).sort((a, b) => a - b);
      const nt = Math.ceil(nb / 32);
      const tps = rng.int(1, Math.max(1, nt)), nsplit = Math.max(1, Math.ceil(nt / tps)) + rng.int(0, 2); // extra splits: empty ranges
      expect(replayRoute(scores, K, nt + 1, 1, 0)).toEqual(want);
      expect(replayRoute(scores, K, tps, nsplit, rng.int(0, nsplit - 1))).toEqual(want);
    }
  });
});
