/**
 * The generators reach the declared caps and never leave them: GQA groups up to 8 (with Hkv >= 2), topk past 6
 * up to min(maxTopk, 16), sequences of several hundred blocks; every spec within maxTopk, maxBlockSize, head dims,
 * dtypes and memoryBytes.
 */
import fc from 'fast-check';
import type { Capabilities } from '@moba/core';
import { describe, expect, it } from 'vitest';
import { type ProblemSpec, specArb, specWorkspace, supportsHeadDim } from '../src/problem.js';
import { groupSweepSpecs, largestTopkSpec, longSpecArb } from '../src/properties/reach.js';

const wide: Capabilities = {
  dtypes: ['f32', 'f16', 'bf16'], maxHeadDim: 256, maxTopk: 64, maxBlockSize: 1 << 20, nonCausal: true, kconv: true, maxKconvWidth: 8,
  memoryBytes: 2 ** 30, deterministic: true,
};
const narrow: Capabilities = { ...wide, dtypes: ['bf16'], headDims: [16, 32], maxTopk: 4, maxBlockSize: 8, nonCausal: false, memoryBytes: 2 ** 30 };
const tight: Capabilities = { ...wide, memoryBytes: 64 * 1024 };

function withinCaps(caps: Capabilities, s: ProblemSpec): void {
  expect(s.topk).toBeGreaterThanOrEqual(1);
  expect(s.topk).toBeLessThanOrEqual(caps.maxTopk);
  expect(s.blockSize).toBeLessThanOrEqual(caps.maxBlockSize);
  expect(supportsHeadDim(caps, s.D)).toBe(true);
  expect(caps.dtypes).toContain(s.dtype);
  expect(s.Hq % s.Hkv).toBe(0);
  if (!caps.nonCausal) expect(s.causal).toBe(true);
  expect(specWorkspace(s)).toBeLessThanOrEqual(caps.memoryBytes);
}

describe('generators', () => {
  it('specArb reaches groups up to 8 with Hkv = 2 and topk 7..16, within the caps', () => {
    const specs = fc.sample(specArb(wide), { seed: 1, numRuns: 400 });
    for (const s of specs) withinCaps(wide, s);
    const groups = new Set(specs.map((s) => s.Hq / s.Hkv));
    expect([...groups].sort((a, b) => a - b)).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
    expect(specs.some((s) => s.Hkv >= 2 && s.Hq / s.Hkv >= 4)).toBe(true);
    expect(specs.some((s) => s.topk >= 7)).toBe(true);
    expect(Math.max(...specs.map((s) => s.topk))).toBe(16);
  });

  it('every generator stays within narrow and memory-tight caps', () => {
    for (const caps of [narrow, tight]) {
      for (const s of fc.sample(specArb(caps), { seed: 2, numRuns: 200 })) withinCaps(caps, s);
      for (const s of fc.sample(longSpecArb(caps), { seed: 3, numRuns: 50 })) withinCaps(caps, s);
      for (const s of groupSweepSpecs(caps, 4)) withinCaps(caps, s);
      withinCaps(caps, largestTopkSpec(caps, 5));
    }
  });

  it('the long problems have several hundred blocks; the sweep covers every group 1..8 with Hkv = 2', () => {
    for (const s of fc.sample(longSpecArb(wide), { seed: 6, numRuns: 50 })) expect(Math.ceil(s.seqlens[0]! / s.blockSize)).toBeGreaterThanOrEqual(128);
    expect(fc.sample(longSpecArb(wide), { seed: 7, numRuns: 50 }).some((s) => s.topk === 64)).toBe(true);
    const sweep = groupSweepSpecs(wide, 1);
    expect(sweep.filter((s) => s.Hkv === 2).map((s) => s.Hq / 2)).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
    expect(largestTopkSpec(wide, 1).topk).toBe(64);
  });
});
