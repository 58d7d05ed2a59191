/**
 * Timing of the `cache` step of gpu-check.ts: one decode step (attend, nq = 1 per sequence) on a CUDA KV cache
 * holding `batch` sequences of N tokens (16/16 heads, D 128, bf16, B 128, topk 8), median of 20 after a warm-up,
 * with a per-kernel profile (the program's profiling mode: each launch synchronised), the router's split count, the bytes the step must read (centroids + selected pages) and the device copy
 * bandwidth (timeDeviceCopy) for comparison; also one full mobaStep (append one token each, then attend).
 * The cache is filled by appending a few random 8K-token chunks over and over (fast to generate).
 */
import { createCache, hostTensor, mobaStep } from '@moba/core';
import { cacheRouteLaunch } from '../src/cache-tables.js';
import type { CudaBackend } from '../src/index.js';

/** Fast random bf16 bits (xorshift32; ±[0.5, 2)). */
function fastBf16(n: number, seed: number): Uint16Array {
  const out = new Uint16Array(n);
  let x = (seed | 0) || 0x9e3779b9;
  for (let i = 0; i < n; i++) {
    x ^= x << 13; x ^= x >>> 17; x ^= x << 5;
    out[i] = (x & 0x8000) | (0x3f00 + ((x >>> 16) & 0xff));
  }
  return out;
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

export async function cacheTiming(b: CudaBackend, N = 131072, batch = 16): Promise<Record<string, unknown>> {
  const H = 16, D = 128, B = 128, topk = 8, chunk = 8192, C = H * D;
  const cache = await createCache(b, { Hkv: H, D, dtype: 'bf16', blockSize: B, capacityTokens: batch * (N + 4 * B), maxSequences: 2 * batch }); // forks for the step below
  try {
    const ids = Array.from({ length: batch }, () => cache.newSequence());
    const chunks = await Promise.all([0, 1, 2, 3].map(async (i) => ({
      k: await b.upload(hostTensor('bf16', [chunk, H, D], fastBf16(chunk * C, 11 + i))), v: await b.upload(hostTensor('bf16', [chunk, H, D], fastBf16(chunk * C, 101 + i))),
    })));
    const tail = (N - 1) % chunk; // N - 1 tokens before the step's own
    const tk = tail > 0 ? await b.upload(hostTensor('bf16', [tail, H, D], fastBf16(tail * C, 5))) : null;
    const tv = tail > 0 ? await b.upload(hostTensor('bf16', [tail, H, D], fastBf16(tail * C, 6))) : null;
    const t0 = performance.now();
    let n = 0;
    for (let p = 0; p + chunk <= N - 1; p += chunk) {
      for (const id of ids) {
        const c = chunks[(n++ + id) % chunks.length]!;
        await cache.append([id], c.k, c.v, Int32Array.from([0, chunk]));
      }
    }
    if (tk && tv) for (const id of ids) await cache.append([id], tk, tv, Int32Array.from([0, tail]));
    const fillMs = performance.now() - t0;
    for (const c of chunks) b.dispose(c.k, c.v);
    if (tk && tv) b.dispose(tk, tv);
    // the decode step's own token: append one, then attend (length N each)
    const one = async (seed: number) => b.upload(hostTensor('bf16', [batch, H, D], fastBf16(batch * C, seed)));
    const k1 = await one(7), v1 = await one(8), q = await one(9);
    const cu = Int32Array.from({ length: batch + 1 }, (_, i) => i);
    await cache.append(ids, k1, v1, cu);
    const attend = async (): Promise<void> => {
      const o = await cache.attend(ids, q, cu, { topk });
      b.dispose(o.out, o.lse);
    };
    await attend(); // warm-up (and compilation)
    const ms: number[] = [];
    for (let i = 0; i < 20; i++) {
      b.synchronize();
      const s = performance.now();
      await attend();
      b.synchronize(); // the attend's kernels finished
      ms.push(performance.now() - s);
    }
    b.profiling = true;
    b.takeProfile();
    await attend();
    const stages = b.takeProfile();
    b.profiling = false;
    // one full step on copies: fork every sequence, append + attend, free the forks
    const forks: number[] = [];
    for (const id of ids) forks.push(await cache.fork(id));
    const s1 = performance.now();
    const st = await mobaStep(b, cache, { seqs: forks, q, k: k1, v: v1 }, { topk });
    b.synchronize();
    const stepMs = performance.now() - s1;
    b.dispose(st.out, st.lse, k1, v1, q);
    for (const f of forks) cache.free(f);
    const nb = Math.floor(N / B);
    const bytes = batch * H * (nb * D * 4 + topk * B * D * 2 * 2); // centroids (f32) + K and V of the selected pages
    const copyBytes = 1 << 30;
    await b.timeDeviceCopy(copyBytes); // warm-up
    const copies: number[] = [];
    for (let i = 0; i < 5; i++) copies.push(await b.timeDeviceCopy(copyBytes));
    const copyMs = median(copies);
    const copyGBs = (2 * copyBytes) / (copyMs * 1e6); // read + write
    const attendMs = median(ms);
    return {
      N, batch, heads: H, D, dtype: 'bf16', blockSize: B, topk, fillMs: +fillMs.toFixed(0), attendMs: +attendMs.toFixed(3), minAttendMs: +Math.min(...ms).toFixed(3),
      stepMs: +stepMs.toFixed(3), nsplit: cacheRouteLaunch(batch, H, H, D, topk, Math.ceil(N / B), b.device.sms).nsplit, stagesMs: Object.fromEntries(Object.entries(stages).map(([k, v]) => [k, +v.toFixed(3)])),
      readMB: +(bytes / 1e6).toFixed(1), readGBs: +(bytes / (attendMs * 1e6)).toFixed(0), copyGBs: +copyGBs.toFixed(0), stats: cache.memoryStats(),
    };
  } finally {
    await cache.destroy();
  }
}
