/**
 * The KV cache router (cache-route.wgsl.ts, SPEC §3, §9): private top-K lists per invocation merged in a tree, one
 * launch. Against the f64 reference: long sequences of one repeated piece (equal centroids: ties everywhere, to the
 * higher block), k at and near the list lengths (8, 16, 32, 64), G = 1, 4, 8, 16, 32 query heads per kv head
 * (two head chunks at 32), D 64, 128, 256 and odd, causal and non-causal (the open block); and bitwise the same
 * alone as batched. A missing adapter skips, unless MOBA_REQUIRE names webgpu.
 */
import { type DType, type HostTensor, type KVCache, fromFloat, hostTensor, toFloat64 } from '@moba/core';
import { describe, expect, it } from 'vitest';
import { type CacheSetup, Rng, SeqModel, appendRandom, bits, referenceChecks } from './cache-model.js';
import { attendOnce, testBackend } from './cache-setup.js';

const tb = testBackend();
const noKconv = { W: 0, w: new Float64Array(0) };

async function open(s: CacheSetup, capacityTokens: number): Promise<KVCache> {
  return tb.backend.createCache!({ Hkv: s.Hkv, D: s.D, dtype: s.dtype, blockSize: s.B, capacityTokens, maxSequences: 4 });
}

const attend = (cache: KVCache, ids: readonly number[], q: HostTensor, nq: readonly number[], cfg: { topk: number; causal: boolean }) =>
  attendOnce(tb.backend, cache, ids, q, nq, cfg);

function expectReference(label: string, models: SeqModel[], nq: number[], q: HostTensor, got: { out: HostTensor; lse: HostTensor }, cfg: { topk: number; causal: boolean }): void {
  for (const c of referenceChecks(label, models, nq, q, { out: toFloat64(got.out), lse: toFloat64(got.lse) }, cfg)) expect(c.ok, c.message).toBe(true);
}

/** Appends `len` tokens whose keys repeat a random piece of `piece` tokens (a multiple of B: equal centroids). */
async function appendRepeated(cache: KVCache, id: number, m: SeqModel, rng: Rng, len: number, piece: number): Promise<void> {
  const { Hkv, D, dtype } = m.s;
  const C = Hkv * D;
  const p = toFloat64(rng.tensor(dtype, [piece, Hkv, D]));
  const kh = fromFloat(Array.from({ length: len * C }, (_, i) => p[i % (piece * C)]!), dtype, [len, Hkv, D]);
  const vh = rng.tensor(dtype, [len, Hkv, D]);
  const [k, v] = [await tb.backend.upload(kh), await tb.backend.upload(vh)];
  try {
    await cache.append([id], k, v, Int32Array.from([0, len]));
  } finally {
    tb.backend.dispose(k, v);
  }
  m.add(toFloat64(kh), toFloat64(vh));
}

describe('webgpu KV cache router', () => {
  it('a long sequence of one repeated piece (ties everywhere) at k near the list lengths, causal and not', async (t) => {
    if (tb.unavailable) return t.skip(tb.unavailable);
    const rng = new Rng(71);
    const s: CacheSetup = { Hkv: 2, D: 16, dtype: 'bf16' as DType, B: 4, ...noKconv };
    const cache = await open(s, 4200);
    try {
      const [a, b] = [cache.newSequence(), cache.newSequence()];
      const [ma, mb] = [new SeqModel(s), new SeqModel(s)];
      await appendRepeated(cache, a, ma, rng, 4002, 16); // 1001 blocks, 4 distinct centroids, the last block open
      await appendRepeated(cache, b, mb, rng, 130, 8);
      for (const causal of [true, false]) {
        for (const topk of [2, 8, 9, 16, 17, 33, 63, 64]) {
          const cfg = { topk, causal };
          const q = rng.tensor('bf16', [4, 2, 16]);
          const got = await attend(cache, [a, b], q, [3, 1], cfg);
          expectReference(`ties topk ${topk} causal ${causal}`, [ma, mb], [3, 1], q, got, cfg);
        }
      }
    } finally {
      await cache.destroy();
    }
  }, 600_000);

  for (const [G, D, dtype] of [[1, 64, 'bf16'], [4, 128, 'f16'], [8, 256, 'bf16'], [16, 31, 'f32'], [32, 128, 'bf16']] as const) {
    it(`G = ${G} query heads per kv head, D = ${D} (${dtype}): the reference, and bitwise the same alone as batched`, async (t) => {
      if (tb.unavailable) return t.skip(tb.unavailable);
      const rng = new Rng(80 + G);
      const s: CacheSetup = { Hkv: 2, D, dtype: dtype as DType, B: 3, ...noKconv };
      const cache = await open(s, 1400);
      try {
        const [a, b] = [cache.newSequence(), cache.newSequence()];
        const [ma, mb] = [new SeqModel(s), new SeqModel(s)];
        await appendRandom(tb.backend, cache, rng, [a, b], [ma, mb], [700, 301]); // 234 and 101 blocks (open ones)
        const Hq = 2 * G;
        const row = Hq * D;
        for (const [causal, topk] of [[true, 8], [false, 17], [true, 64]] as const) {
          const cfg = { topk, causal };
          const q = rng.tensor(dtype, [3, Hq, D]);
          const got = await attend(cache, [a, b], q, [2, 1], cfg);
          expectReference(`G ${G} D ${D} topk ${topk} causal ${causal}`, [ma, mb], [2, 1], q, got, cfg);
          const alone = await attend(cache, [a], hostTensor(dtype, [2, Hq, D], q.data.slice(0, 2 * row)), [2], cfg);
          expect(bits(alone.out), 'alone vs batched (out)').toEqual(bits(got.out, 0, 2 * row));
          expect(bits(alone.lse), 'alone vs batched (lse)').toEqual(bits(got.lse, 0, 2 * Hq));
        }
      } finally {
        await cache.destroy();
      }
    }, 600_000);
  }
});
