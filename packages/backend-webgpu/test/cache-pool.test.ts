/**
 * The WebGPU KV cache's page pool over several buffers (cache-pool.wgsl.ts) and its dense attends (SPEC §9):
 * the layout's arithmetic; then, with MOBA_WEBGPU_CACHE_POOL_BUFFERS = 3 (a small pool spread over 3 buffers as a
 * large one is over the binding limit) bound 2 per dispatch (MOBA_WEBGPU_CACHE_GROUP_BUFFERS), append, attend, fork, free and read across buffer boundaries against
 * the reference; an attend with topk above 64 (every block: dense) against the reference and bitwise the same
 * alone (where topk clamps lower) as batched. A missing adapter skips, unless MOBA_REQUIRE names webgpu.
 */
import { type DType, type HostTensor, type KVCache, MobaError, hostTensor, toFloat64 } from '@moba/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { poolLayout } from '../src/cache-plan.js';
import { getGpu } from '../src/device.js';
import { type CacheSetup, Rng, SeqModel, appendRandom, bits, contentErrors, referenceChecks } from './cache-model.js';
import { attendOnce, testBackend } from './cache-setup.js';

const limits = { maxStorageBufferBindingSize: 1000, maxBufferSize: 4000, maxStorageBuffersPerShaderStage: 16 };

describe('webgpu KV cache pool layout', () => {
  it('the fewest buffers within the binding limit; groups of at most 8 per dispatch, as the bindings per stage allow', () => {
    expect(poolLayout(limits, 100, 10)).toEqual({ ppb: 10, n: 1, per: 1 });
    expect(poolLayout(limits, 100, 11)).toEqual({ ppb: 10, n: 2, per: 2 });
    expect(poolLayout(limits, 100, 61)).toEqual({ ppb: 10, n: 7, per: 5 }); // (16 − 5) / 2 storage bindings each
    expect(poolLayout(limits, 100, 10, 3)).toEqual({ ppb: 4, n: 3, per: 3 });
    expect(poolLayout(limits, 100, 2, 3)).toEqual({ ppb: 1, n: 2, per: 2 });
    expect(poolLayout(limits, 100, 40, 1, 2)).toEqual({ ppb: 10, n: 4, per: 2 });
    expect(poolLayout({ ...limits, maxStorageBuffersPerShaderStage: 8 }, 100, 11)).toEqual({ ppb: 10, n: 2, per: 1 });
    const code = (f: () => unknown): string => { try { f(); return 'ok'; } catch (e) { return (e as MobaError).code; } };
    expect(code(() => poolLayout(limits, 1001, 1))).toBe('E_MEMORY');
    expect(code(() => poolLayout({ ...limits, maxStorageBuffersPerShaderStage: 6 }, 100, 1))).toBe('E_MEMORY');
  });
});

const tb = testBackend();
const SETTINGS = { MOBA_WEBGPU_CACHE_POOL_BUFFERS: '3', MOBA_WEBGPU_CACHE_GROUP_BUFFERS: '2' }; // groups of 2 and 1
const saved = new Map<string, string | undefined>();
beforeAll(() => {
  for (const [k, v] of Object.entries(SETTINGS)) { saved.set(k, process.env[k]); process.env[k] = v; }
});
afterAll(() => {
  for (const [k, v] of saved) { if (v === undefined) delete process.env[k]; else process.env[k] = v; }
});

async function open(s: CacheSetup, capacityTokens: number): Promise<KVCache> {
  const b = tb.backend;
  const w = s.W > 0 ? await b.upload(hostTensor('f32', [s.Hkv * s.D, s.W], Float32Array.from(s.w))) : undefined;
  try {
    return await b.createCache!({ Hkv: s.Hkv, D: s.D, dtype: s.dtype, blockSize: s.B, capacityTokens, maxSequences: 4, ...(w ? { kconvWeight: w } : {}) });
  } finally {
    if (w) b.dispose(w);
  }
}

const attend = (cache: KVCache, ids: readonly number[], q: HostTensor, nq: readonly number[], cfg: { topk: number; causal: boolean }) =>
  attendOnce(tb.backend, cache, ids, q, nq, cfg);

async function checked(label: string, cache: KVCache, rng: Rng, ids: number[], models: SeqModel[], nq: number[], Hq: number, cfg: { topk: number; causal: boolean }) {
  const { dtype, D } = models[0]!.s;
  const q = rng.tensor(dtype, [nq.reduce((a, x) => a + x, 0), Hq, D]);
  const got = await attend(cache, ids, q, nq, cfg);
  for (const c of referenceChecks(label, models, nq, q, { out: toFloat64(got.out), lse: toFloat64(got.lse) }, cfg)) expect(c.ok, c.message).toBe(true);
  return { q, got };
}

describe('webgpu KV cache over several buffers', () => {
  it("the backend's device binds as many storage buffers per stage as the adapter offers (not the default 8)", async (t) => {
    if (tb.unavailable) return t.skip(tb.unavailable);
    const adapter = await (await getGpu())!.requestAdapter({ powerPreference: 'high-performance' });
    const most = adapter!.limits.maxStorageBuffersPerShaderStage;
    expect(tb.backend.device.limits.maxStorageBuffersPerShaderStage).toBe(most);
    const lim = tb.backend.device.limits;
    const layout = poolLayout(lim, lim.maxStorageBufferBindingSize, 20); // one page per buffer: 20 buffers
    expect(layout).toEqual({ ppb: 1, n: 20, per: Math.min(8, Math.floor((most - 5) / 2)) }); // lavapipe: 16 per stage, 5 per group
  });

  it('append, attend, fork, free and read across the buffers of the pool', async (t) => {
    if (tb.unavailable) return t.skip(tb.unavailable);
    const rng = new Rng(31);
    const s: CacheSetup = { Hkv: 2, D: 6, dtype: 'f16' as DType, B: 4, W: 3, w: Float64Array.from({ length: 36 }, () => Math.fround(0.4 * rng.normal())) };
    const cache = await open(s, 48); // 12 pages, 4 per buffer
    try {
      const [a, b] = [cache.newSequence(), cache.newSequence()];
      const [ma, mb] = [new SeqModel(s), new SeqModel(s)];
      for (const counts of [[3, 5], [6, 2], [4, 11]]) await appendRandom(tb.backend, cache, rng, [a, b], [ma, mb], counts);
      expect(cache.memoryStats().usedPages).toBe(9); // a: 13 tokens (4 pages), b: 18 (5), interleaved over the 3 buffers
      for (const causal of [true, false]) await checked(`causal ${causal}`, cache, rng, [a, b], [ma, mb], [1, 3], 4, { topk: 3, causal });
      const f = await cache.fork(a); // a's open page copied into a free page of the last buffer
      const mf = ma.clone();
      await appendRandom(tb.backend, cache, rng, [f, b], [mf, mb], [4, 1]);
      await checked('forked', cache, rng, [a, f, b], [ma, mf, mb], [2, 1, 1], 4, { topk: 2, causal: true });
      for (const [id, m] of [[a, ma], [f, mf], [b, mb]] as const) expect(contentErrors(await cache.read(id), m), `read(${id})`).toEqual([]);
      cache.free(b);
      const c = cache.newSequence(); // b's pages again, in every buffer
      const mc = new SeqModel(s);
      await appendRandom(tb.backend, cache, rng, [c], [mc], [15]);
      await checked('reused', cache, rng, [c, a], [mc, ma], [3, 1], 4, { topk: 4, causal: false });
      expect(contentErrors(await cache.read(c), mc)).toEqual([]);
    } finally {
      await cache.destroy();
    }
  }, 300_000);

  it('a dense attend (topk above 64: every block) matches the reference and is the same alone as batched', async (t) => {
    if (tb.unavailable) return t.skip(tb.unavailable);
    const rng = new Rng(41);
    const s: CacheSetup = { Hkv: 1, D: 8, dtype: 'bf16' as DType, B: 2, W: 0, w: new Float64Array(0) };
    const cache = await open(s, 300);
    try {
      const [a, b] = [cache.newSequence(), cache.newSequence()];
      const [ma, mb] = [new SeqModel(s), new SeqModel(s)];
      await appendRandom(tb.backend, cache, rng, [a, b], [ma, mb], [141, 90]); // 71 and 45 blocks
      for (const causal of [true, false]) {
        const cfg = { topk: 200, causal };
        const { q, got } = await checked(`dense causal ${causal}`, cache, rng, [a, b], [ma, mb], [2, 1], 3, cfg);
        const alone = await attend(cache, [b], hostTensor('bf16', [1, 3, 8], q.data.slice(2 * 24)), [1], cfg); // clamped to 45
        expect(bits(alone.out), 'alone vs batched (out)').toEqual(bits(got.out, 2 * 24, 3 * 24));
        expect(bits(alone.lse), 'alone vs batched (lse)').toEqual(bits(got.lse, 6, 9));
      }
    } finally {
      await cache.destroy();
    }
  }, 300_000);
});
