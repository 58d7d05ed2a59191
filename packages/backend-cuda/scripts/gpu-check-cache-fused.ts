/**
 * Fused part of the `cache` step of gpu-check.ts: the same attend through cache_fused (MOBA_CUDA_CACHE_FUSED=1, one
 * launch) and through cache_route + cache_attend (=0), out and lse compared bitwise, at 8K tokens (batch 1 and 16,
 * 16/16 heads, top-8, causal: timed, median of 20 after a warm-up each) and on shapes that reach the other score
 * splits and the open block (GQA 32/16: two warps per head in the router; 32/8: one; non-causal with an open block).
 * bf16, D 128, B 128, random keys, values and queries (xorshift32).
 */
import { createCache, hostTensor } from '@moba/core';
import type { CudaBackend } from '../src/index.js';
import { bits } from './gpu-check-cache-long.js';

export interface FusedCase { N: number; batch: number; Hq: number; Hkv: number; topk: number; causal: boolean; timed: boolean }

export const FUSED_CASES: FusedCase[] = [
  { N: 8192, batch: 1, Hq: 16, Hkv: 16, topk: 8, causal: true, timed: true },
  { N: 8192, batch: 16, Hq: 16, Hkv: 16, topk: 8, causal: true, timed: true },
  { N: 8192, batch: 2, Hq: 32, Hkv: 16, topk: 8, causal: true, timed: false },
  { N: 8269, batch: 3, Hq: 32, Hkv: 8, topk: 5, causal: false, timed: false },
  { N: 3000, batch: 2, Hq: 16, Hkv: 16, topk: 64, causal: true, timed: false }, // K >= nb: every block
];


const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const same = (a: ArrayLike<number>, b: ArrayLike<number>): boolean => a.length === b.length && Array.from(a).every((x, i) => Object.is(x, b[i]));

export async function fusedCase(b: CudaBackend, c: FusedCase, seed: number): Promise<{ failures: string[]; stats: Record<string, number> }> {
  const D = 128, B = 128, C = c.Hkv * D;
  const failures: string[] = [];
  const stats: Record<string, number> = {};
  const cache = await createCache(b, { Hkv: c.Hkv, D, dtype: 'bf16', blockSize: B, capacityTokens: c.batch * (c.N + B), maxSequences: c.batch });
  const before = process.env.MOBA_CUDA_CACHE_FUSED;
  try {
    const ids = Array.from({ length: c.batch }, () => cache.newSequence());
    for (const [i, id] of ids.entries()) {
      const k = await b.upload(hostTensor('bf16', [c.N, c.Hkv, D], bits(c.N * C, seed + 2 * i)));
      const v = await b.upload(hostTensor('bf16', [c.N, c.Hkv, D], bits(c.N * C, seed + 2 * i + 1)));
      await cache.append([id], k, v, Int32Array.from([0, c.N]));
      b.dispose(k, v);
    }
    const q = await b.upload(hostTensor('bf16', [c.batch, c.Hq, D], bits(c.batch * c.Hq * D, seed + 999)));
    const cu = Int32Array.from({ length: c.batch + 1 }, (_, i) => i);
    const run = async (mode: '0' | '1'): Promise<{ out: Uint16Array; lse: Float32Array; ms: number | null }> => {
      process.env.MOBA_CUDA_CACHE_FUSED = mode;
      const once = async () => cache.attend(ids, q, cu, { topk: c.topk, causal: c.causal });
      const o = await once();
      const r = { out: (await b.download(o.out)).data as Uint16Array, lse: (await b.download(o.lse)).data as Float32Array };
      b.dispose(o.out, o.lse);
      if (!c.timed) return { ...r, ms: null };
      const ms: number[] = [];
      for (let i = 0; i < 20; i++) {
        b.synchronize();
        const s = performance.now();
        const x = await once();
        b.synchronize();
        ms.push(performance.now() - s);
        b.dispose(x.out, x.lse);
      }
      return { ...r, ms: median(ms) };
    };
    const two = await run('0');
    const one = await run('1');
    if (!same(one.out, two.out)) failures.push(`out: fused differs from route + attend (${c.N} x ${c.batch}, ${c.Hq}/${c.Hkv})`);
    if (!same(one.lse, two.lse)) failures.push(`lse: fused differs from route + attend (${c.N} x ${c.batch}, ${c.Hq}/${c.Hkv})`);
    if (!one.lse.every((x) => Number.isFinite(x))) failures.push('lse: not finite');
    if (one.ms !== null && two.ms !== null) { stats.fusedMs = +one.ms.toFixed(4); stats.twoLaunchMs = +two.ms.toFixed(4); }
    b.dispose(q);
  } finally {
    if (before === undefined) delete process.env.MOBA_CUDA_CACHE_FUSED;
    else process.env.MOBA_CUDA_CACHE_FUSED = before;
    await cache.destroy();
  }
  return { failures, stats };
}
