/**
 * Threads and storage: node:worker_threads is loaded lazily (a dynamic import on the first job that runs on
 * workers; never by importing the package or by a backend with threads: 1), storage is shared only for a pool,
 * and results are bitwise identical for 1, 2 and 3 threads.
 */
import { type HostTensor, Rng, hostTensor, moba, mobaBackward } from '@moba/core';
import { describe, expect, it, vi } from 'vitest';
import { createCpuBackend } from '../src/index.js';
import { type Bits, bitDiffs, runProblem } from './browser/problem.js';

const loads = vi.hoisted(() => ({ workerThreads: 0 }));
vi.mock('node:worker_threads', async (importOriginal) => {
  loads.workerThreads++;
  return importOriginal();
});

function inputs(T: number): { q: HostTensor; k: HostTensor; v: HostTensor; dOut: HostTensor } {
  const rng = new Rng(5);
  const t = (h: number): HostTensor => hostTensor('f32', [T, h, 16], rng.normals(T * h * 16));
  return { q: t(4), k: t(2), v: t(2), dOut: t(4) };
}

describe('cpu backend threads', () => {
  it('loads worker_threads only on the first job a backend with threads > 1 runs on workers', async () => {
    expect(loads.workerThreads).toBe(0); // importing the package did not load it
    const { q, k, v, dOut } = inputs(256);
    const cfg = { blockSize: 16, topk: 3 };
    const cuSeqlens = Int32Array.of(0, 256);
    const one = createCpuBackend({ threads: 1, minParallelWork: 0 });
    const small = createCpuBackend({ threads: 2 }); // everything here is below the default minParallelWork
    const pool = createCpuBackend({ threads: 2, minParallelWork: 0 });
    const run = async (b: ReturnType<typeof createCpuBackend>): Promise<Float32Array> => {
      const r = await moba(b, { q, k, v, cuSeqlens }, cfg);
      const g = await mobaBackward(b, r.ctx, dOut);
      return (await b.download(g.dq)).data as Float32Array;
    };
    try {
      const a = await run(one);
      const b = await run(small);
      expect(loads.workerThreads).toBe(0);
      const c = await run(pool);
      expect(loads.workerThreads).toBe(1);
      expect(Buffer.from(b.buffer).equals(Buffer.from(a.buffer))).toBe(true);
      expect(Buffer.from(c.buffer).equals(Buffer.from(a.buffer))).toBe(true);
    } finally {
      await Promise.all([one.destroy(), small.destroy(), pool.destroy()]);
    }
  });

  it('reports its threads; results are bitwise identical for 1, 2 and 3 threads (f32 and bf16, kconv, dense)', async () => {
    const bits: Record<number, Bits> = {};
    for (const threads of [1, 2, 3]) {
      const b = createCpuBackend({ threads, minParallelWork: 0 });
      expect(b.threads).toBe(threads);
      try {
        bits[threads] = await runProblem(b);
      } finally {
        await b.destroy();
      }
    }
    expect(bitDiffs(bits[1]!, bits[2]!)).toEqual([]);
    expect(bitDiffs(bits[1]!, bits[3]!)).toEqual([]);
  });

  it('uses no SharedArrayBuffer with threads: 1 (as in a page without cross-origin isolation)', async () => {
    const b = createCpuBackend({ threads: 1 });
    vi.stubGlobal('SharedArrayBuffer', undefined); // any `new SharedArrayBuffer` would now throw
    try {
      const bits = await runProblem(b);
      expect(Object.keys(bits).length).toBe(2 * 12);
    } finally {
      vi.unstubAllGlobals();
      await b.destroy();
    }
    expect(typeof SharedArrayBuffer).toBe('function');
  });
});
