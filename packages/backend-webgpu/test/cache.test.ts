/**
 * The WebGPU paged KV cache (SPEC §9) against the float64 reference: random schedules of appends (chunks of 1 to
 * ~150 tokens, several sequences interleaved) and attends (nq = 1 and nq > 1), GQA/MQA/MHA, f32/f16/bf16, kconv
 * none and W 1–5, causal and non-causal, within the tolerance policy; read() equals a recompute; a sequence's
 * attend is bitwise the same alone or batched; E_MEMORY leaves the cache unchanged; free and reuse; fork; destroy
 * frees the buffers. A missing adapter skips, unless MOBA_REQUIRE names webgpu.
 */
import { type DType, type HostTensor, type KVCache, MobaError, fromFloat, hostTensor, toFloat64 } from '@moba/core';
import { describe, expect, it } from 'vitest';
import { type CacheSetup, Rng, SeqModel, appendRandom, bits, contentErrors, referenceChecks } from './cache-model.js';
import { testBackend } from './cache-setup.js';

interface Case { dtype: DType; Hkv: number; Hq: number; D: number; B: number; W: number; causal: boolean }

const CASES: Case[] = [
  { dtype: 'f32', Hkv: 2, Hq: 4, D: 8, B: 4, W: 3, causal: true },
  { dtype: 'f16', Hkv: 1, Hq: 3, D: 5, B: 8, W: 0, causal: false },
  { dtype: 'bf16', Hkv: 2, Hq: 2, D: 6, B: 5, W: 1, causal: true },
  { dtype: 'f32', Hkv: 1, Hq: 4, D: 16, B: 16, W: 5, causal: false },
  { dtype: 'f16', Hkv: 3, Hq: 6, D: 7, B: 6, W: 4, causal: true },
  { dtype: 'bf16', Hkv: 1, Hq: 2, D: 9, B: 3, W: 2, causal: false },
  { dtype: 'f32', Hkv: 2, Hq: 6, D: 3, B: 7, W: 0, causal: true },
];

/** MOBA_SEED replays another schedule. */
const SEED = Number(process.env.MOBA_SEED ?? 1000);

const tb = testBackend();

async function setupCache(c: Case, rng: Rng, capacityTokens: number, maxSequences = 8): Promise<{ cache: KVCache; s: CacheSetup }> {
  const b = tb.backend;
  const C = c.Hkv * c.D;
  const w = fromFloat(Array.from({ length: C * c.W }, () => 0.4 * rng.normal()), 'f32', [C, c.W]);
  const wt = c.W > 0 ? await b.upload(w) : undefined;
  try {
    const cache = await b.createCache!({ Hkv: c.Hkv, D: c.D, dtype: c.dtype, blockSize: c.B, capacityTokens, maxSequences, ...(wt ? { kconvWeight: wt } : {}) });
    return { cache, s: { Hkv: c.Hkv, D: c.D, dtype: c.dtype, B: c.B, W: c.W, w: toFloat64(w) } };
  } finally {
    if (wt) b.dispose(wt);
  }
}

/** One attend on the cache: out and lse downloaded. */
async function attend(cache: KVCache, ids: readonly number[], q: HostTensor, nq: readonly number[], cfg: { topk: number; causal: boolean }) {
  const b = tb.backend;
  const cu = new Int32Array(nq.length + 1);
  nq.forEach((n, i) => (cu[i + 1] = cu[i]! + n));
  const qd = await b.upload(q);
  try {
    const r = await cache.attend(ids, qd, cu, cfg);
    const [out, lse] = [await b.download(r.out), await b.download(r.lse)];
    b.dispose(r.out, r.lse);
    return { out, lse };
  } finally {
    b.dispose(qd);
  }
}

/** Attends `ids` with random queries; checks against the reference and, batched, each sequence alone bitwise. */
async function checkedAttend(label: string, cache: KVCache, rng: Rng, c: Case, ids: number[], models: SeqModel[], nq: number[], topk: number): Promise<void> {
  const Tq = nq.reduce((a, b) => a + b, 0);
  const q = rng.tensor(c.dtype, [Tq, c.Hq, c.D]);
  const cfg = { topk, causal: c.causal };
  const got = await attend(cache, ids, q, nq, cfg);
  const checks = referenceChecks(label, models, nq, q, { out: toFloat64(got.out), lse: toFloat64(got.lse) }, cfg);
  for (const ch of checks) expect(ch.ok, ch.message).toBe(true);
  if (ids.length < 2) return;
  let row = 0;
  const E = c.Hq * c.D;
  for (let i = 0; i < ids.length; i++) {
    const n = nq[i]!;
    const qi = hostTensor(c.dtype, [n, c.Hq, c.D], q.data.slice(row * E, (row + n) * E));
    const alone = await attend(cache, [ids[i]!], qi, [n], cfg);
    expect(bits(alone.out), `${label}: sequence ${ids[i]} alone vs batched (out)`).toEqual(bits(got.out, row * E, (row + n) * E));
    expect(bits(alone.lse), `${label}: sequence ${ids[i]} alone vs batched (lse)`).toEqual(bits(got.lse, row * c.Hq, (row + n) * c.Hq));
    row += n;
  }
}

describe('webgpu KV cache', () => {
  for (const [ci, c] of CASES.entries()) {
    const name = `${c.dtype} Hkv ${c.Hkv} Hq ${c.Hq} D ${c.D} B ${c.B} W ${c.W} ${c.causal ? 'causal' : 'non-causal'}`;
    it(`random appends and attends match the reference: ${name}`, async (t) => {
      if (tb.unavailable) return t.skip(tb.unavailable);
      const rng = new Rng(SEED + ci);
      const { cache, s } = await setupCache(c, rng, 3 * 260);
      try {
        const ids = [cache.newSequence(), cache.newSequence(), cache.newSequence()];
        const models = ids.map(() => new SeqModel(s));
        for (let step = 0; step < 6; step++) {
          const pick = ids.map((_, i) => i).filter(() => rng.next() < 0.75);
          if (pick.length === 0) pick.push(rng.int(0, 2));
          const counts = pick.map((i) => (step === 1 && i === ci % 3 ? rng.int(60, 150) : rng.int(1, 14)));
          await appendRandom(tb.backend, cache, rng, pick.map((i) => ids[i]!), pick.map((i) => models[i]!), counts);
          const live = ids.map((_, i) => i).filter((i) => models[i]!.length > 0 && rng.next() < 0.8);
          if (live.length === 0) continue;
          const nq = live.map((i) => {
            const u = rng.next(); // decode (nq = 1), a few queries, or a chunked prefill's many
            return u < 0.5 ? 1 : Math.min(models[i]!.length, u < 0.85 ? rng.int(1, 9) : rng.int(20, 120));
          });
          await checkedAttend(`${name} step ${step}`, cache, rng, c, live.map((i) => ids[i]!), live.map((i) => models[i]!), nq, rng.int(1, 6));
        }
        for (const [i, id] of ids.entries()) expect(contentErrors(await cache.read(id), models[i]!), `read(${id})`).toEqual([]);
      } finally {
        await cache.destroy();
      }
    }, 300_000);
  }

  it('E_MEMORY leaves the cache unchanged and usable; freed pages are reused', async (t) => {
    if (tb.unavailable) return t.skip(tb.unavailable);
    const c: Case = { dtype: 'bf16', Hkv: 2, Hq: 4, D: 4, B: 4, W: 3, causal: true };
    const rng = new Rng(7);
    const { cache, s } = await setupCache(c, rng, 24, 4); // 6 pages
    try {
      const [a, b] = [cache.newSequence(), cache.newSequence()];
      const [ma, mb] = [new SeqModel(s), new SeqModel(s)];
      await appendRandom(tb.backend, cache, rng, [a, b], [ma, mb], [6, 9]); // 2 + 3 pages
      const before = [await cache.read(a), await cache.read(b)];
      const stats = cache.memoryStats();
      const err = await appendRandom(tb.backend, cache, rng, [a, b], [new SeqModel(s), new SeqModel(s)], [1, 8]).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(MobaError);
      expect((err as MobaError).code).toBe('E_MEMORY');
      expect(cache.memoryStats()).toEqual(stats);
      expect([cache.length(a), cache.length(b)]).toEqual([6, 9]);
      expect([await cache.read(a), await cache.read(b)]).toEqual(before);
      await appendRandom(tb.backend, cache, rng, [a, b], [ma, mb], [2, 3]); // fits: 5 of the 6 pages in use
      await checkedAttend('after E_MEMORY', cache, rng, c, [a, b], [ma, mb], [2, 1], 2);
      cache.free(a);
      expect(cache.memoryStats().freePages).toBe(3);
      const r = cache.newSequence(); // reuses a's pages and its kconv slot: stale sums and state must not leak
      const mr = new SeqModel(s);
      await appendRandom(tb.backend, cache, rng, [r], [mr], [7]);
      await checkedAttend('reused pages', cache, rng, c, [r, b], [mr, mb], [3, 2], 3);
      expect(contentErrors(await cache.read(r), mr)).toEqual([]);
      expect(contentErrors(await cache.read(b), mb)).toEqual([]);
    } finally {
      await cache.destroy();
    }
  }, 300_000);

  it('fork shares the full pages, copies the open one and the kconv state', async (t) => {
    if (tb.unavailable) return t.skip(tb.unavailable);
    const c: Case = { dtype: 'f16', Hkv: 1, Hq: 2, D: 6, B: 4, W: 4, causal: true };
    const rng = new Rng(11);
    const { cache, s } = await setupCache(c, rng, 64);
    try {
      const a = cache.newSequence();
      const ma = new SeqModel(s);
      await appendRandom(tb.backend, cache, rng, [a], [ma], [10]); // 2 full pages + 2 tokens
      const f = await cache.fork(a);
      const mf = ma.clone();
      expect(cache.memoryStats()).toMatchObject({ usedPages: 4, sharedPages: 2, sequences: 2, tokens: 20 });
      expect(contentErrors(await cache.read(f), mf)).toEqual([]);
      await appendRandom(tb.backend, cache, rng, [a, f], [ma, mf], [3, 6]);
      await checkedAttend('forked', cache, rng, c, [a, f], [ma, mf], [2, 4], 2);
      expect(contentErrors(await cache.read(a), ma)).toEqual([]);
      expect(contentErrors(await cache.read(f), mf)).toEqual([]);
      const g = await cache.fork(f); // a fork at a page boundary shares everything
      expect(cache.length(g)).toBe(16);
      cache.free(f);
      expect(contentErrors(await cache.read(g), mf)).toEqual([]);
    } finally {
      await cache.destroy();
    }
  }, 300_000);

  it('destroy frees the storage; the cache is unusable afterwards', async (t) => {
    if (tb.unavailable) return t.skip(tb.unavailable);
    const b = tb.backend;
    const scratch0 = b.memoryStats().scratchBytes;
    const rng = new Rng(3);
    const { cache } = await setupCache({ dtype: 'f32', Hkv: 2, Hq: 2, D: 4, B: 8, W: 2, causal: true }, rng, 64, 4);
    const st = cache.memoryStats();
    expect(st).toMatchObject({ pages: 8, pageBytes: 2 * 8 * 8 * 4 + 2 * 8 * 4, poolBytes: 8 * st.pageBytes });
    expect(b.memoryStats().scratchBytes - scratch0).toBeGreaterThanOrEqual(st.poolBytes + st.metaBytes);
    await cache.destroy();
    await cache.destroy(); // idempotent
    expect(b.memoryStats().scratchBytes).toBe(scratch0);
    expect(cache.memoryStats()).toMatchObject({ pages: 0, poolBytes: 0, metaBytes: 0 });
    expect(() => cache.newSequence()).toThrow(MobaError);
  }, 120_000);
});
