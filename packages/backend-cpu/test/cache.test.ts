/**
 * The CPU KV cache (SPEC §9) against the float64 reference: random schedules of appends (chunks of 1–200
 * tokens, several sequences interleaved) and attends (decode nq = 1 and chunked prefill nq > 1), over dtypes,
 * GQA/MQA, kconv widths and causal/non-causal, with forks and frees between them; read() against a recompute after every step; kconv keys bitwise
 * equal to the backend's own kconv over the whole sequence; batch and chunking invariance (bitwise).
 */
import { type DType, type HostTensor, Rng, fromFloat, hostTensor, toFloat64 } from '@moba/core';
import { afterAll, describe, expect, it } from 'vitest';
import { type CpuBackend, createCpuBackend } from '../src/index.js';
import { CacheModel, attendChecks, contentErrors, randomTensor, sameBits } from './cache-model.js';

interface Case {
  readonly dtype: DType;
  readonly Hq: number;
  readonly Hkv: number;
  readonly D: number;
  readonly B: number;
  readonly W: number;
  readonly causal: boolean;
  readonly topk: number;
}

const CASES: Case[] = [
  { dtype: 'f32', Hq: 4, Hkv: 2, D: 16, B: 16, W: 3, causal: true, topk: 3 },
  { dtype: 'f16', Hq: 4, Hkv: 1, D: 8, B: 8, W: 0, causal: true, topk: 2 }, // MQA
  { dtype: 'bf16', Hq: 2, Hkv: 2, D: 12, B: 32, W: 5, causal: true, topk: 4 },
  { dtype: 'f32', Hq: 6, Hkv: 3, D: 7, B: 5, W: 1, causal: false, topk: 3 },
  { dtype: 'f16', Hq: 8, Hkv: 2, D: 16, B: 16, W: 4, causal: false, topk: 1 },
  { dtype: 'bf16', Hq: 3, Hkv: 1, D: 9, B: 12, W: 2, causal: true, topk: 1 },
  { dtype: 'f32', Hq: 2, Hkv: 1, D: 16, B: 64, W: 0, causal: false, topk: 2 },
];

const backends: CpuBackend[] = [];
afterAll(async () => {
  for (const b of backends) await b.destroy();
});
function backend(opts = { threads: 1 }): CpuBackend {
  const b = createCpuBackend(opts);
  backends.push(b);
  return b;
}

async function weightOf(b: CpuBackend, rng: Rng, c: Case): Promise<{ w: HostTensor | null; dev: Awaited<ReturnType<CpuBackend['upload']>> | undefined }> {
  if (c.W === 0) return { w: null, dev: undefined };
  const w = randomTensor(rng, 'f32', c.Hkv * c.D, c.W, 1, 0.5);
  const w2 = hostTensor('f32', [c.Hkv * c.D, c.W], w.data);
  return { w: w2, dev: await b.upload(w2) };
}

describe('cpu kv cache vs the float64 reference', () => {
  it.each(CASES.map((c, i) => [i, c] as const))('random schedule %i: %o', async (i, c) => {
    const b = backend();
    const rng = new Rng(1000 + i);
    const { w, dev } = await weightOf(b, rng, c);
    const cache = await b.createCache({ Hkv: c.Hkv, D: c.D, dtype: c.dtype, blockSize: c.B, capacityTokens: 4000, kconvWeight: dev });
    const model = new CacheModel({ Hkv: c.Hkv, D: c.D, dtype: c.dtype, blockSize: c.B, weight: w ? toFloat64(w) : null, W: c.W });
    const seqs = [cache.newSequence(), cache.newSequence(), cache.newSequence()];
    let attends = 0;
    for (let step = 0; step < 14; step++) {
      // -- now and then fork a sequence or free one --
      if (step > 0 && rng.next() < 0.2 && seqs.length < 5) {
        const src = seqs[rng.int(0, seqs.length - 1)]!;
        const f = await cache.fork(src);
        model.fork(src, f);
        seqs.push(f);
        expect(await contentErrors(cache, model, f)).toEqual([]);
      } else if (rng.next() < 0.1 && seqs.length > 2) {
        const [gone] = seqs.splice(rng.int(0, seqs.length - 1), 1);
        cache.free(gone!);
        model.raw.delete(gone!);
      }
      // -- append to a random non-empty subset, chunks of 1 to 200 tokens (mostly short) --
      const chosen = seqs.filter(() => rng.next() < 0.6);
      if (chosen.length === 0) chosen.push(seqs[step % seqs.length]!);
      const counts = chosen.map(() => (rng.next() < 0.3 ? rng.int(1, 200) : rng.int(1, 12)));
      const T = counts.reduce((a, x) => a + x, 0);
      const k = randomTensor(rng, c.dtype, T, c.Hkv, c.D);
      const v = randomTensor(rng, c.dtype, T, c.Hkv, c.D);
      const cu = Int32Array.from([0, ...counts.map((_, j) => counts.slice(0, j + 1).reduce((a, x) => a + x, 0))]);
      const [kd, vd] = [await b.upload(k), await b.upload(v)];
      await cache.append(chosen, kd, vd, cu);
      b.dispose(kd, vd);
      const k64 = toFloat64(k);
      const v64 = toFloat64(v);
      const C = c.Hkv * c.D;
      chosen.forEach((s, j) => model.add(s, k64.subarray(cu[j]! * C, cu[j + 1]! * C), v64.subarray(cu[j]! * C, cu[j + 1]! * C)));
      for (const s of chosen) expect(await contentErrors(cache, model, s)).toEqual([]);
      // -- attend: decode (nq = 1) or chunked prefill (nq up to the last chunk) --
      const nqs = chosen.map((s, j) => (rng.next() < 0.5 ? 1 : Math.min(model.length(s), rng.int(1, counts[j]! + 3))));
      const Tq = nqs.reduce((a, x) => a + x, 0);
      const q = randomTensor(rng, c.dtype, Tq, c.Hq, c.D);
      const cuQ = Int32Array.from([0, ...nqs.map((_, j) => nqs.slice(0, j + 1).reduce((a, x) => a + x, 0))]);
      const { checks } = await attendChecks(b, cache, model, chosen, q, cuQ, { topk: c.topk, causal: c.causal });
      for (const ch of checks) expect(ch.ok, ch.message).toBe(true);
      attends++;
    }
    expect(attends).toBe(14);
    // kconv: the cache's keys are bitwise those of the backend's kconv over the whole sequence
    if (dev) {
      for (const s of seqs) {
        const got = await cache.read(s);
        if (got.length === 0) continue;
        const raw = model.raw.get(s)!.k;
        const kd = await b.upload(fromFloat(raw, c.dtype, [got.length, c.Hkv, c.D]));
        const kc = await b.kconv(kd, dev, { cuSeqlens: Int32Array.of(0, got.length) });
        expect(sameBits((await b.download(kc)).data, got.k.data)).toBe(true);
        b.dispose(kd, kc);
      }
    }
    await cache.destroy();
  });

  it('topk covering every block gives dense attention (causal), with many sequences of one decode step', async () => {
    const b = backend();
    const rng = new Rng(7);
    const cache = await b.createCache({ Hkv: 2, D: 8, dtype: 'f32', blockSize: 4, capacityTokens: 2000 });
    const model = new CacheModel({ Hkv: 2, D: 8, dtype: 'f32', blockSize: 4, weight: null, W: 0 });
    const seqs = Array.from({ length: 5 }, () => cache.newSequence());
    const lens = [1, 4, 5, 37, 64];
    const T = lens.reduce((a, x) => a + x, 0);
    const k = randomTensor(rng, 'f32', T, 2, 8);
    const v = randomTensor(rng, 'f32', T, 2, 8);
    const cu = Int32Array.from([0, ...lens.map((_, j) => lens.slice(0, j + 1).reduce((a, x) => a + x, 0))]);
    await cache.append(seqs, await b.upload(k), await b.upload(v), cu);
    seqs.forEach((s, j) => model.add(s, toFloat64(k).subarray(cu[j]! * 16, cu[j + 1]! * 16), toFloat64(v).subarray(cu[j]! * 16, cu[j + 1]! * 16)));
    const q = randomTensor(rng, 'f32', 5, 4, 8);
    const { checks } = await attendChecks(b, cache, model, seqs, q, Int32Array.of(0, 1, 2, 3, 4, 5), { topk: 16, causal: true });
    for (const ch of checks) expect(ch.ok, ch.message).toBe(true);
  });
});
