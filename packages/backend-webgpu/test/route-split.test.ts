/**
 * The split routing kernel (route-split.wgsl.ts) against the single-owner one (route.wgsl.ts `topk`): bitwise
 * the same indices on random problems — varlen batches, GQA, causal and not, partial blocks, many tiles of
 * centroids, every list capacity, exact ties (small-integer data), NaN and ±∞ scores — and with the 16 KiB
 * tile set (fewer entries per merge pass). A missing adapter skips, unless MOBA_REQUIRE names webgpu.
 */
import { Rng, hostTensor } from '@moba/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type WebGpuBackend, type WebGpuTuning, createWebGpuBackend } from '../src/index.js';
import { unavailableBecause } from './gate.js';

interface Problem {
  lens: number[];
  Hq: number;
  Hkv: number;
  D: number;
  blockSize: number;
  topk: number;
  causal: boolean;
  data: 'normal' | 'ties' | 'special';
}

function fill(rng: Rng, n: number, kind: Problem['data']): Float32Array {
  const x = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    if (kind === 'ties') x[i] = rng.int(-1, 1); // scores are small integers: many exact ties
    else if (kind === 'special' && rng.next() < 0.002) x[i] = [NaN, Infinity, -Infinity][rng.int(0, 2)]!;
    else x[i] = rng.normal();
  }
  return x;
}

async function indices(b: WebGpuBackend, p: Problem, q: Float32Array, k: Float32Array): Promise<Int32Array> {
  const T = p.lens.reduce((a, c) => a + c, 0);
  const cu = Int32Array.from([0, ...p.lens.map((_, i) => p.lens.slice(0, i + 1).reduce((a, c) => a + c, 0))]);
  const qt = await b.upload(hostTensor('f32', [T, p.Hq, p.D], q));
  const kt = await b.upload(hostTensor('f32', [T, p.Hkv, p.D], k));
  const r = await b.route(qt, kt, { cuSeqlens: cu }, { blockSize: p.blockSize, topk: p.topk, causal: p.causal });
  try {
    return await b.routingIndices(r);
  } finally {
    b.dispose(r, qt, kt);
  }
}

function randomProblem(rng: Rng, i: number): Problem {
  const blockSize = [1, 3, 8, 16, 64, 128][rng.int(0, 5)]!;
  const nSeq = rng.int(1, 3);
  const lens = Array.from({ length: nSeq }, () => rng.int(1, Math.min(3000, 300 * blockSize)));
  const Hkv = rng.int(1, 2);
  const data = (['normal', 'ties', 'special'] as const)[i % 3]!;
  return {
    lens, Hkv, Hq: Hkv * rng.int(1, 2), D: [3, 16, 40, 64, 128][rng.int(0, 4)]!, blockSize,
    topk: [1, 2, 3, 5, 8, 9, 12, 16, 17][rng.int(0, 8)]!, causal: rng.next() < 0.7, data,
  };
}

describe.each<[string, WebGpuTuning]>([
  ['device tiles', {}],
  ['16 KiB tiles', { workgroupStorage: 16384 }],
])('webgpu routing: split kernel = single-owner kernel (%s)', (_name, tuning) => {
  let split: WebGpuBackend | null = null;
  let owner: WebGpuBackend | null = null;
  let unavailable: string | null = null;
  beforeAll(async () => {
    try {
      split = await createWebGpuBackend({ tuning, unstable: { routeKernel: 'split' } });
      owner = await createWebGpuBackend({ device: split.device, tuning, unstable: { routeKernel: 'owner' } });
    } catch (e) {
      unavailable = unavailableBecause(e);
    }
  });
  afterAll(async () => {
    await owner?.destroy();
    await split?.destroy();
  });

  it('gives bitwise the same indices on random problems', async (t) => {
    if (unavailable || !split || !owner) return t.skip(unavailable ?? 'no backend');
    const rng = new Rng(20261130);
    const problems = Array.from({ length: Number(process.env.ROUTE_SPLIT_CASES ?? 24) }, (_, i) => randomProblem(rng, i));
    // many tiles of centroids and every list capacity, at a size where the lists fill and get merged
    problems.push({ lens: [4096, 1500], Hq: 2, Hkv: 1, D: 64, blockSize: 16, topk: 8, causal: true, data: 'normal' });
    problems.push({ lens: [3000], Hq: 1, Hkv: 1, D: 128, blockSize: 8, topk: 16, causal: false, data: 'ties' });
    problems.push({ lens: [2500], Hq: 2, Hkv: 2, D: 32, blockSize: 4, topk: 17, causal: true, data: 'special' });
    for (const p of problems) {
      const T = p.lens.reduce((a, c) => a + c, 0);
      const q = fill(rng, T * p.Hq * p.D, p.data);
      const k = fill(rng, T * p.Hkv * p.D, p.data);
      const [a, b] = [await indices(split, p, q, k), await indices(owner, p, q, k)];
      const bad = a.findIndex((x, i) => x !== b[i]);
      expect(bad, `${JSON.stringify(p)}: first difference at ${bad}`).toBe(-1);
    }
  });
});
