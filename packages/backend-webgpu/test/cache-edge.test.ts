/**
 * Edges of the WebGPU KV cache (SPEC §3, §7, §9): routing ties go to the higher block, a query group of more than
 * 64 heads and D > 64 (the kernels' chunked heads and dims), NaN keys poison only the rows that attend them,
 * validation codes, and core's mobaStep on this cache. A missing adapter skips, unless MOBA_REQUIRE names webgpu.
 */
import { type KVCache, MobaError, fromFloat, hostTensor, mobaStep, toFloat64 } from '@moba/core';
import { describe, expect, it } from 'vitest';
import { Rng, SeqModel, appendRandom, bits, referenceChecks } from './cache-model.js';
import { testBackend } from './cache-setup.js';

const tb = testBackend();

const noKconv = { W: 0, w: new Float64Array(0) };

async function withCache(opts: { Hkv: number; D: number; dtype: 'f32' | 'f16' | 'bf16'; blockSize: number }, body: (c: KVCache) => Promise<void>): Promise<void> {
  const cache = await tb.backend.createCache!({ ...opts, capacityTokens: 512, maxSequences: 4 });
  try {
    await body(cache);
  } finally {
    await cache.destroy();
  }
}

describe('webgpu KV cache edges', () => {
  it('equal scores go to the higher block (identical keys, causal and non-causal)', async (t) => {
    if (tb.unavailable) return t.skip(tb.unavailable);
    const [Hkv, D, B, L] = [1, 4, 4, 22];
    await withCache({ Hkv, D, dtype: 'f32', blockSize: B }, async (cache) => {
      const s = cache.newSequence();
      const rng = new Rng(5);
      const k = await tb.backend.upload(fromFloat(Array.from({ length: L * D }, (_, i) => [0.5, -1, 0.25, 2][i % D]!), 'f32', [L, Hkv, D]));
      const v = await tb.backend.upload(rng.tensor('f32', [L, Hkv, D]));
      await cache.append([s], k, v, Int32Array.from([0, L]));
      const m = new SeqModel({ Hkv, D, dtype: 'f32', B, ...noKconv });
      m.add(toFloat64(await tb.backend.download(k)), toFloat64(await tb.backend.download(v)));
      tb.backend.dispose(k, v);
      for (const causal of [true, false]) {
        const qh = rng.tensor('f32', [3, 2, D]);
        const q = await tb.backend.upload(qh);
        const r = await cache.attend([s], q, Int32Array.from([0, 3]), { topk: 2, causal });
        const got = { out: toFloat64(await tb.backend.download(r.out)), lse: toFloat64(await tb.backend.download(r.lse)) };
        tb.backend.dispose(q, r.out, r.lse);
        for (const c of referenceChecks(`ties causal ${causal}`, [m], [3], qh, got, { topk: 2, causal })) expect(c.ok, c.message).toBe(true);
      }
    });
  }, 120_000);

  // the router's head chunks (16 query heads per workgroup: 66 is 5 chunks) and its staging steps (D 256: 8 blocks a step)
  for (const [Hkv, Hq, D, B, len] of [[1, 66, 80, 8, 45], [2, 4, 256, 4, 70], [1, 17, 33, 3, 60]] as const) {
    it(`Hkv ${Hkv}, Hq ${Hq} (groups of query heads), D = ${D}, B ${B}, ${len} tokens`, async (t) => {
      if (tb.unavailable) return t.skip(tb.unavailable);
      await withCache({ Hkv, D, dtype: 'f16', blockSize: B }, async (cache) => {
        const rng = new Rng(9);
        const s = cache.newSequence();
        const m = new SeqModel({ Hkv, D, dtype: 'f16', B, ...noKconv });
        await appendRandom(tb.backend, cache, rng, [s], [m], [len]);
        for (const causal of [true, false]) {
          const qh = rng.tensor('f16', [2, Hq, D]);
          const q = await tb.backend.upload(qh);
          const r = await cache.attend([s], q, Int32Array.from([0, 2]), { topk: 3, causal });
          const got = { out: toFloat64(await tb.backend.download(r.out)), lse: toFloat64(await tb.backend.download(r.lse)) };
          tb.backend.dispose(q, r.out, r.lse);
          for (const c of referenceChecks(`${Hq} heads D ${D} causal ${causal}`, [m], [2], qh, got, { topk: 3, causal })) expect(c.ok, c.message).toBe(true);
        }
      });
    }, 300_000);
  }

  it('a NaN key gives NaN rows only where it is attended; the other sequences are unaffected', async (t) => {
    if (tb.unavailable) return t.skip(tb.unavailable);
    const [Hkv, D, B] = [1, 4, 4];
    await withCache({ Hkv, D, dtype: 'f32', blockSize: B }, async (cache) => {
      const rng = new Rng(13);
      const [a, b] = [cache.newSequence(), cache.newSequence()];
      const kh = rng.tensor('f32', [3 + 9, Hkv, D]);
      kh.data[1] = NaN; // sequence a, token 0
      const [k, v] = [await tb.backend.upload(kh), await tb.backend.upload(rng.tensor('f32', [12, Hkv, D]))];
      await cache.append([a, b], k, v, Int32Array.from([0, 3, 12]));
      tb.backend.dispose(k, v);
      const qh = rng.tensor('f32', [2, 1, D]);
      const q = await tb.backend.upload(qh);
      const r = await cache.attend([a, b], q, Int32Array.from([0, 1, 2]), { topk: 2 });
      const [out, lse] = [await tb.backend.download(r.out), await tb.backend.download(r.lse)];
      tb.backend.dispose(r.out, r.lse, q);
      expect(Array.from(out.data.subarray(0, D)).every(Number.isNaN)).toBe(true);
      expect(Number.isNaN(lse.data[0])).toBe(true);
      expect(Array.from(out.data.subarray(D)).every(Number.isFinite)).toBe(true);
      const qb = await tb.backend.upload(hostTensor('f32', [1, 1, D], qh.data.slice(D)));
      const alone = await cache.attend([b], qb, Int32Array.from([0, 1]), { topk: 2 });
      expect(bits(await tb.backend.download(alone.out))).toEqual(bits(out, D, 2 * D));
      tb.backend.dispose(qb, alone.out, alone.lse);
    });
  }, 120_000);

  it('validation: the SPEC §7 codes, naming the parameter', async (t) => {
    if (tb.unavailable) return t.skip(tb.unavailable);
    const b = tb.backend;
    const code = async (f: () => Promise<unknown>): Promise<string> => {
      try {
        await f();
      } catch (e) {
        return e instanceof MobaError ? `${e.code} ${e.param}` : String(e);
      }
      return 'no error';
    };
    expect(await code(() => b.createCache!({ Hkv: 1, D: 512, dtype: 'f32', blockSize: 4, capacityTokens: 8 }))).toBe('E_UNSUPPORTED D');
    expect(await code(() => b.createCache!({ Hkv: 1, D: 4, dtype: 'f32', blockSize: 4, capacityBytes: 2 ** 50 }))).toBe('E_MEMORY capacityBytes');
    await withCache({ Hkv: 2, D: 4, dtype: 'bf16', blockSize: 4 }, async (cache) => {
      const s = cache.newSequence();
      const k = await b.upload(hostTensor('bf16', [3, 2, 4]));
      const kf = await b.upload(hostTensor('f32', [3, 2, 4]));
      try {
        expect(await code(() => cache.append([s + 7], k, k, Int32Array.from([0, 3])))).toBe('E_RANGE seqs[0]');
        expect(await code(() => cache.append([s], kf, kf, Int32Array.from([0, 3])))).toBe('E_DTYPE k.dtype');
        await cache.append([s], k, k, Int32Array.from([0, 3]));
        const q = await b.upload(hostTensor('bf16', [4, 2, 4]));
        expect(await code(() => cache.attend([s], q, Int32Array.from([0, 4]), { topk: 1 }))).toBe('E_RANGE cuSeqlensQ');
        expect(await code(() => cache.attend([s], q, Int32Array.from([0, 4]), { topk: 1, blockSize: 8 }))).toBe('E_RANGE blockSize');
        b.dispose(q);
      } finally {
        b.dispose(k, kf);
      }
    });
  }, 120_000);

  it("core's mobaStep decodes on this cache: one token per step equals the reference", async (t) => {
    if (tb.unavailable) return t.skip(tb.unavailable);
    const [Hkv, Hq, D, B] = [2, 4, 8, 4];
    await withCache({ Hkv, D, dtype: 'bf16', blockSize: B }, async (cache) => {
      const rng = new Rng(21);
      const seqs = [cache.newSequence(), cache.newSequence()];
      const models = seqs.map(() => new SeqModel({ Hkv, D, dtype: 'bf16', B, ...noKconv }));
      await appendRandom(tb.backend, cache, rng, seqs, models, [9, 14]);
      for (let step = 0; step < 5; step++) {
        const [q, k, v] = [rng.tensor('bf16', [2, Hq, D]), rng.tensor('bf16', [2, Hkv, D]), rng.tensor('bf16', [2, Hkv, D])];
        const r = await mobaStep(tb.backend, cache, { seqs, q, k, v }, { topk: 2 });
        const [k64, v64] = [toFloat64(k), toFloat64(v)];
        models.forEach((m, i) => m.add(k64.subarray(i * Hkv * D, (i + 1) * Hkv * D), v64.subarray(i * Hkv * D, (i + 1) * Hkv * D)));
        const got = { out: toFloat64(await tb.backend.download(r.out)), lse: toFloat64(await tb.backend.download(r.lse)) };
        tb.backend.dispose(r.out, r.lse);
        for (const c of referenceChecks(`mobaStep ${step}`, models, [1, 1], q, got, { topk: 2, causal: true })) expect(c.ok, c.message).toBe(true);
      }
    });
  }, 120_000);
});
