/**
 * The WebGPU KV cache attend over a pool of several buffers is bitwise the one-buffer attend (SPEC §9): the same
 * appends into a cache of one buffer, one of 3 buffers bound in one dispatch (the attend's per-binding switch)
 * and one of 3 buffers bound 2 per dispatch (two groups), for page rows of RS·elemBytes a multiple of 16 bytes
 * (bf16, f32: the vec4 key loads) and not (f16 with odd D: the per-element 4-byte word staging), and the
 * one-buffer attend with key pages in 4-byte words (MOBA_WEBGPU_CACHE_ATTEND_WORDS) and with each chunk's values
 * read after its scores (MOBA_WEBGPU_CACHE_ATTEND_LATE_V; the default loads them with the keys); out and lse bit for bit.
 * A missing adapter skips, unless MOBA_REQUIRE names webgpu.
 */
import type { DType, HostTensor, KVCache } from '@moba/core';
import { describe, expect, it } from 'vitest';
import { attendVec4 } from '../src/cache-attend.wgsl.js';
import { type CacheSetup, Rng, SeqModel, appendRandom, bits } from './cache-model.js';
import { attendOnce, testBackend } from './cache-setup.js';

const tb = testBackend();
const KEYS = ['MOBA_WEBGPU_CACHE_POOL_BUFFERS', 'MOBA_WEBGPU_CACHE_GROUP_BUFFERS'] as const;

/** A cache opened with the pool settings (read when the cache is created), the environment restored after. */
async function open(s: CacheSetup, capacityTokens: number, pool?: string, group?: string): Promise<KVCache> {
  const saved = KEYS.map((k) => process.env[k]);
  [pool, group].forEach((v, i) => { if (v === undefined) delete process.env[KEYS[i]!]; else process.env[KEYS[i]!] = v; });
  try {
    return await tb.backend.createCache!({ Hkv: s.Hkv, D: s.D, dtype: s.dtype, blockSize: s.B, capacityTokens, maxSequences: 4 });
  } finally {
    saved.forEach((v, i) => { if (v === undefined) delete process.env[KEYS[i]!]; else process.env[KEYS[i]!] = v; });
  }
}

const attend = (cache: KVCache, ids: readonly number[], q: HostTensor, nq: readonly number[], cfg: { topk: number; causal: boolean }) =>
  attendOnce(tb.backend, cache, ids, q, nq, cfg);

const SETUPS: [string, CacheSetup][] = [
  ['f16, D 5, Hkv 1 (rows of RS 6 = 12 bytes)', { Hkv: 1, D: 5, dtype: 'f16' as DType, B: 4, W: 0, w: new Float64Array(0) }],
  ['bf16, D 8, Hkv 2 (rows of RS 16 = 32 bytes)', { Hkv: 2, D: 8, dtype: 'bf16' as DType, B: 4, W: 0, w: new Float64Array(0) }],
  ['f32, D 4, Hkv 1 (rows of RS 4 = 16 bytes)', { Hkv: 1, D: 4, dtype: 'f32' as DType, B: 4, W: 0, w: new Float64Array(0) }],
];

describe('webgpu KV cache attend key loads', () => {
  it('16-byte vec4 loads exactly where every key row of a head is 16-byte aligned', () => {
    expect(attendVec4('bf16', 16 * 128, 128)).toBe(true);
    expect(attendVec4('f32', 4, 4)).toBe(true);
    expect(attendVec4('bf16', 16, 8)).toBe(true);
    expect(attendVec4('f16', 6, 5)).toBe(false); // rows of 12 bytes
    expect(attendVec4('f16', 24, 6)).toBe(false); // rows of 48 bytes, head rows of 12
    expect(attendVec4('f32', 6, 2)).toBe(false); // rows of 24 bytes
  });
});

describe('webgpu KV cache attend over several buffers: bitwise the one-buffer attend', () => {
  for (const [label, s] of SETUPS) {
    it(label, async (t) => {
      if (tb.unavailable) return t.skip(tb.unavailable);
      const caches = [await open(s, 48), await open(s, 48, '3'), await open(s, 48, '3', '2')]; // 12 pages, 4 per buffer
      try {
        const ids = caches.map((c) => [c.newSequence(), c.newSequence()]);
        for (const [i, c] of caches.entries()) {
          const rng = new Rng(53); // the same keys and values into every cache
          const models = [new SeqModel(s), new SeqModel(s)];
          for (const counts of [[3, 5], [6, 2], [4, 11]]) await appendRandom(tb.backend, c, rng, ids[i]!, models, counts);
        }
        const Hq = 2 * s.Hkv;
        const q = new Rng(7).tensor(s.dtype, [4, Hq, s.D]);
        for (const cfg of [{ topk: 3, causal: true }, { topk: 2, causal: false }, { topk: 8, causal: false }]) {
          const got = [];
          for (const [i, c] of caches.entries()) got.push(await attend(c, ids[i]!, q, [1, 3], cfg));
          for (const key of ['MOBA_WEBGPU_CACHE_ATTEND_WORDS', 'MOBA_WEBGPU_CACHE_ATTEND_LATE_V']) {
            process.env[key] = '1'; // one buffer: key pages in 4-byte words; values read after the scores
            try {
              got.push(await attend(caches[0]!, ids[0]!, q, [1, 3], cfg));
            } finally {
              delete process.env[key];
            }
          }
          for (const g of got.slice(1)) {
            expect(bits(g.out), `out ${JSON.stringify(cfg)}`).toEqual(bits(got[0]!.out));
            expect(bits(g.lse), `lse ${JSON.stringify(cfg)}`).toEqual(bits(got[0]!.lse));
          }
        }
      } finally {
        for (const c of caches) await c.destroy();
      }
    }, 300_000);
  }
});
