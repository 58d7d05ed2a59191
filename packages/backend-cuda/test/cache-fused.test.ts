/**
 * The fused small-context attend's host side (cache-tables.ts): when cache_fused runs instead of cache_route +
 * cache_attend (MOBA_CUDA_CACHE_FUSED and the auto threshold), its launch, and the router's warps per head that its
 * scoring repeats (cache-fused.cuh must split each score exactly as cache-route.cuh does).
 */
import { MobaError } from '@moba/core';
import { describe, expect, it } from 'vitest';
import { CACHE, cacheAttendLaunch, cacheFused, cacheFusedLaunch, cacheRouteLaunch, routeWarpsPerHead } from '../src/cache-tables.js';
import { LIMITS } from '../src/geometry.js';

const nsub = cacheAttendLaunch(1, 16, 128, 8, 'bf16', 128).nsub;

describe('cache_fused choice', () => {
  it('auto: fused at 8K x 1 (16 heads, D 128, top-8), not at 8K x 16 where the redundant centroid reads exceed the budget', () => {
    expect(nsub).toBe(2);
    expect(cacheFused(1, 16, 128, 8, 65, nsub, null)).toBe(true); // 8.5 MB of centroid reads
    expect(cacheFused(1, 16, 128, 8, 65, nsub, '')).toBe(true);
    expect(cacheFused(16, 16, 128, 8, 65, nsub, null)).toBe(false); // 136 MB
    expect(cacheFused(1, 16, 128, 8, 129, nsub, null)).toBe(false); // more blocks than threads
  });
  it('the budget is the bytes Tq·Hq·topk·nsub·maxBlocks·D·4, inclusive', () => {
    const per = 16 * 8 * nsub * 128 * 4; // one row's CTAs, per candidate block
    const most = Math.floor(CACHE.fusedAutoBytes / per);
    expect(cacheFused(1, 16, 128, 8, most, nsub, null)).toBe(most <= CACHE.fusedMaxBlocks);
    expect(cacheFused(2, 16, 128, 8, most, nsub, null)).toBe(2 * most * per <= CACHE.fusedAutoBytes);
  });
  it("MOBA_CUDA_CACHE_FUSED: '1' whenever fusable, '0' never, anything else E_RANGE naming the variable", () => {
    expect(cacheFused(16, 16, 128, 8, 65, nsub, '1')).toBe(true);
    expect(cacheFused(64, 16, 128, 8, 128, nsub, '1')).toBe(true);
    expect(cacheFused(1, 16, 128, 8, 65, nsub, '0')).toBe(false);
    expect(cacheFused(1, 16, 128, 8, 129, nsub, '1')).toBe(false); // not fusable: the 2-launch path
    expect(cacheFused(1, 16, 128, 65, 65, nsub, '1')).toBe(false); // dense router (topk > 64)
    expect(cacheFused(1, 16, 512, 8, 65, nsub, '1')).toBe(false); // D > 256
    let err: unknown;
    try { cacheFused(1, 16, 128, 8, 65, nsub, 'yes'); } catch (e) { err = e; }
    expect(err).toBeInstanceOf(MobaError);
    expect((err as MobaError).code).toBe('E_RANGE');
    expect((err as MobaError).param).toBe('MOBA_CUDA_CACHE_FUSED');
  });
  it("the fused launch is cache_attend's, and fits the default shared memory with the kernel's static arrays", () => {
    for (const dtype of ['bf16', 'f16', 'f32'] as const) {
      for (const D of [64, 96, 128, 256]) {
        const at = cacheAttendLaunch(3, 16, D, 8, dtype, 128);
        const L = cacheFusedLaunch(at);
        expect(L).toEqual(at);
        expect(L.shared + CACHE.fusedStaticBytes).toBeLessThanOrEqual(LIMITS.sharedDefault);
        expect(L.block[0]).toBe(CACHE.fusedMaxBlocks); // one candidate per thread
      }
    }
  });
});

describe('router warps per head (the score split cache_fused repeats)', () => {
  it('matches cache_route: warps = max(hpc, 4), hpc = min(G, 8), split when fewer heads than warps', () => {
    expect([1, 2, 3, 4, 8, 16].map(routeWarpsPerHead)).toEqual([4, 2, 1, 1, 1, 1]);
    for (const G of [1, 2, 3, 4, 5, 8, 16]) {
      const r = cacheRouteLaunch(1, 16 * G, 16, 128, 8, 64, 132);
      const nw = r.block[0] / 32;
      expect(routeWarpsPerHead(G)).toBe(r.hpc < nw ? Math.floor(nw / r.hpc) : 1);
    }
  });
});
