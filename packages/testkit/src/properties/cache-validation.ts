/**
 * KV cache validation (SPEC §7, §9): bad sequence ids, shapes, dtypes, query counts and option keys throw the
 * right MobaError code naming the parameter (a sequence beyond `maxSequences`: E_MEMORY) and leave the cache
 * unchanged; every call after `destroy()` throws E_DEVICE (a second `destroy()` and `memoryStats()` do not throw).
 */
import { type Backend, type DType, type DeviceTensor, type KVCache, type MobaError, Rng, hostTensor } from '@moba/core';
import { failure, withTimeout } from '../checks.js';
import { nearestHeadDim, preferredDtype, randomTensor } from '../problem.js';
import type { Property } from '../types.js';
import { cacheBackend } from './cache-play.js';
import { contentsDiff } from './cache-pool.js';

/** Null when `fn` rejects with a MobaError of `code` (and `param`, when given); else what went wrong. */
async function expectCode(what: string, code: string, fn: () => unknown, param?: string): Promise<string | null> {
  try {
    await withTimeout(Promise.resolve().then(fn), 30_000, what);
  } catch (e) {
    const me = e as MobaError;
    if (!(e instanceof Error) || e.name !== 'MobaError' || typeof me.code !== 'string') return `${what}: threw ${String(e)}, expected a MobaError ${code}`;
    if (me.code !== code) return `${what}: threw ${me.code} (${me.message}), expected ${code}`;
    if (param !== undefined && me.param !== param) return `${what}: threw ${code} naming '${String(me.param)}', expected it to name '${param}'`;
    return null;
  }
  return `${what}: did not throw, expected a MobaError ${code}`;
}

/** A small cache (Hkv 2, blockSize 4) with one sequence of 6 tokens. */
async function setup(b: Backend, seed: number): Promise<{ cache: KVCache; seq: number; dtype: DType; D: number }> {
  const dtype = preferredDtype(b.caps);
  const D = nearestHeadDim(b.caps, 8);
  const cache = await b.createCache!({ Hkv: 2, D, dtype, blockSize: Math.min(4, b.caps.maxBlockSize), capacityTokens: 64 });
  const seq = cache.newSequence();
  const rng = new Rng(seed);
  const k = await b.upload(randomTensor(rng, dtype, [6, 2, D]).t);
  const v = await b.upload(randomTensor(rng, dtype, [6, 2, D]).t);
  try {
    await cache.append([seq], k, v, Int32Array.of(0, 6));
  } finally {
    b.dispose(k, v);
  }
  return { cache, seq, dtype, D };
}

export const cacheValidationProperties: Property[] = [
  {
    group: 'cache',
    name: 'validation: bad ids (E_RANGE), shapes (E_SHAPE), dtypes (E_DTYPE), nq > length, option keys; E_DEVICE after destroy()',
    async run(ctx) {
      const b = cacheBackend(ctx);
      const { cache, seq, dtype, D } = await setup(b, ctx.seed);
      const lines: string[] = [];
      const made: DeviceTensor[] = [];
      const t = async (shape: number[], dt: DType = dtype): Promise<DeviceTensor> => {
        const x = await b.upload(hostTensor(dt, shape));
        made.push(x);
        return x;
      };
      try {
        const before = await cache.read(seq);
        const k1 = await t([1, 2, D]);
        const q1 = await t([1, 2, D]);
        const bad = 987_654;
        const cases: [string, string, () => unknown, string?][] = [
          ['append to an unknown sequence id', 'E_RANGE', () => cache.append([bad], k1, k1, Int32Array.of(0, 1))],
          ['attend of an unknown sequence id', 'E_RANGE', () => cache.attend([bad], q1, Int32Array.of(0, 1), { topk: 1 })],
          ['read() of an unknown sequence id', 'E_RANGE', () => cache.read(bad)],
          ['fork() of an unknown sequence id', 'E_RANGE', () => cache.fork(bad)],
          ['free() of an unknown sequence id', 'E_RANGE', () => cache.free(bad)],
          ['length() of an unknown sequence id', 'E_RANGE', () => cache.length(bad)],
          ['the same sequence twice in one append', 'E_RANGE', async () => cache.append([seq, seq], await t([2, 2, D]), await t([2, 2, D]), Int32Array.of(0, 1, 2))],
          ['append of k with Hkv = 1 to a cache of Hkv = 2', 'E_SHAPE', async () => cache.append([seq], await t([1, 1, D]), k1, Int32Array.of(0, 1))],
          [`append of k with D = ${D + 1} to a cache of D = ${D}`, 'E_SHAPE', async () => cache.append([seq], await t([1, 2, D + 1]), k1, Int32Array.of(0, 1))],
          ['append of v with another token count than k', 'E_SHAPE', async () => cache.append([seq], k1, await t([2, 2, D]), Int32Array.of(0, 1))],
          ['append with cuSeqlens not ending at T', 'E_RANGE', () => cache.append([seq], k1, k1, Int32Array.of(0, 2))],
          ['attend with 7 queries of a 6-token sequence', 'E_RANGE', async () => cache.attend([seq], await t([7, 2, D]), Int32Array.of(0, 7), { topk: 1 }), 'cuSeqlensQ'],
          [`attend of q with D = ${D + 1}`, 'E_SHAPE', async () => cache.attend([seq], await t([1, 2, D + 1]), Int32Array.of(0, 1), { topk: 1 })],
          ['attend of q with Hq = 3 on Hkv = 2', 'E_SHAPE', async () => cache.attend([seq], await t([1, 3, D]), Int32Array.of(0, 1), { topk: 1 })],
          ['attend with topk = 0', 'E_RANGE', () => cache.attend([seq], q1, Int32Array.of(0, 1), { topk: 0 })],
          ['attend with an unknown config key', 'E_RANGE', () => cache.attend([seq], q1, Int32Array.of(0, 1), { topk: 1, topK: 2 } as never)],
          ['attend with another blockSize than the cache', 'E_RANGE', () => cache.attend([seq], q1, Int32Array.of(0, 1), { topk: 1, blockSize: cache.blockSize + 1 })],
          ['createCache with an unknown option key', 'E_RANGE', () => b.createCache!({ Hkv: 2, D, dtype, blockSize: 4, capacityTokens: 64, capacityToken: 64 } as never), 'capacityToken'],
          ['createCache with neither capacityTokens nor capacityBytes', 'E_RANGE', () => b.createCache!({ Hkv: 2, D, dtype, blockSize: 4 })],
          ['createCache with Hkv = 0', 'E_RANGE', () => b.createCache!({ Hkv: 0, D, dtype, blockSize: 4, capacityTokens: 64 })],
          ['newSequence() beyond maxSequences = 1', 'E_MEMORY', async () => {
            const one = await b.createCache!({ Hkv: 2, D, dtype, blockSize: 4, capacityTokens: 64, maxSequences: 1 });
            try {
              one.newSequence();
              one.newSequence();
            } finally {
              await one.destroy();
            }
          }],
        ];
        const other = b.caps.dtypes.find((x) => x !== dtype);
        if (other) {
          cases.push(
            [`append of ${other} keys to a ${dtype} cache`, 'E_DTYPE', async () => cache.append([seq], await t([1, 2, D], other), await t([1, 2, D], other), Int32Array.of(0, 1))],
            [`attend of ${other} queries on a ${dtype} cache`, 'E_DTYPE', async () => cache.attend([seq], await t([1, 2, D], other), Int32Array.of(0, 1), { topk: 1 })],
          );
        } else ctx.notCovered('KV cache dtype validation (one dtype in caps)');
        for (const [what, code, fn, param] of cases) {
          const err = await expectCode(what, code, fn, param);
          if (err) lines.push(err);
        }
        const d = contentsDiff('the sequence after the rejected calls', before, await cache.read(seq));
        if (d) lines.push(d);
      } finally {
        b.dispose(...made);
        await cache.destroy();
      }
      const q1 = await b.upload(hostTensor(dtype, [1, 2, D]));
      try {
        for (const [what, fn] of [
          ['append after destroy()', () => cache.append([seq], q1, q1, Int32Array.of(0, 1))],
          ['attend after destroy()', () => cache.attend([seq], q1, Int32Array.of(0, 1), { topk: 1 })],
          ['read() after destroy()', () => cache.read(seq)],
          ['fork() after destroy()', () => cache.fork(seq)],
          ['newSequence() after destroy()', () => cache.newSequence()],
        ] as const) {
          const err = await expectCode(what, 'E_DEVICE', fn);
          if (err) lines.push(err);
        }
        await cache.destroy(); // idempotent
        cache.memoryStats(); // never throws
      } catch (e) {
        lines.push(`a second destroy() or memoryStats() after destroy() threw: ${e instanceof Error ? e.message : String(e)}`);
      } finally {
        b.dispose(q1);
      }
      if (lines.length > 0) throw failure(`cache Hkv=2 D=${D} dtype=${dtype} blockSize=${cache.blockSize}`, [`${lines.length} bad calls were not rejected correctly:`, ...lines]);
    },
  },
];
