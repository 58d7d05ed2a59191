// Core validation (SPEC §7), routing formats and planning, checked at the core level; the testkit checks the
// same cases again through each backend's public API.
import { describe, expect, it } from 'vitest';
import {
  MobaError, Rng, checkKconv, checkProblem, collectRouting, expandCollected, hostTensor, plan, resolveConfig, routingToMask,
  sequences, validateLayout, validateQkv, validateRoutingIndices, type Capabilities,
} from '../src/index.js';
import { referenceRoute } from '../src/reference/index.js';

function code(fn: () => unknown): string | undefined {
  try { fn(); } catch (e) { if (e instanceof MobaError) return e.code; throw e; }
  return undefined;
}
const t3 = (T: number, H: number, D: number, dtype: 'f32' | 'bf16' = 'f32') => hostTensor(dtype, [T, H, D]);
const caps: Capabilities = {
  dtypes: ['f32', 'f16', 'bf16'], maxHeadDim: 256, maxTopk: 64, maxBlockSize: 4096, nonCausal: true, kconv: true,
  maxKconvWidth: 8, memoryBytes: 1 << 20, deterministic: true,
};

describe('validation (SPEC §7)', () => {
  it('rejects bad blockSize, topk and scale with E_RANGE naming the parameter', () => {
    for (const bad of [0, -1, 1.5, NaN, Infinity]) {
      expect(code(() => resolveConfig({ blockSize: bad, topk: 2 }, 8))).toBe('E_RANGE');
      expect(code(() => resolveConfig({ blockSize: 4, topk: bad }, 8))).toBe('E_RANGE');
    }
    expect(code(() => resolveConfig({ blockSize: 4, topk: 2, scale: 0 }, 8))).toBe('E_RANGE');
    expect(() => resolveConfig({ blockSize: 4, topk: 0 }, 8)).toThrow(/topk = 0 .*>= 1/);
  });

  it('a topk, blockSize or kconv width valid per SPEC but beyond caps is E_UNSUPPORTED; one invalid per SPEC is E_RANGE', () => {
    expect(code(() => resolveConfig({ blockSize: 4, topk: 65 }, 8, caps))).toBe('E_UNSUPPORTED');
    expect(code(() => resolveConfig({ blockSize: 4097, topk: 2 }, 8, caps))).toBe('E_UNSUPPORTED');
    expect(code(() => resolveConfig({ blockSize: 4, topk: 0 }, 8, caps))).toBe('E_RANGE');
    expect(code(() => resolveConfig({ blockSize: 4, topk: 65.5 }, 8, caps))).toBe('E_RANGE');
    expect(() => resolveConfig({ blockSize: 4, topk: 65 }, 8, caps)).toThrow(/topk = 65 .*caps\.maxTopk = 64/);
    const layout = { cuSeqlens: Int32Array.from([0, 8]) };
    expect(code(() => checkProblem(caps, t3(8, 2, 4), t3(8, 2, 4), t3(8, 2, 4), layout, { blockSize: 4, topk: 65 }))).toBe('E_UNSUPPORTED');
    const k = { dtype: 'f32' as const, shape: [8, 2, 4] };
    expect(code(() => checkKconv(caps, k, { dtype: 'f32', shape: [8, 9] }, layout))).toBe('E_UNSUPPORTED');
    expect(code(() => checkKconv(caps, k, { dtype: 'f32', shape: [8, 0] }, layout))).toBe('E_RANGE');
  });

  it('rejects bad cuSeqlens', () => {
    expect(code(() => validateLayout({ cuSeqlens: Int32Array.from([1, 8]) }, 8))).toBe('E_RANGE');
    expect(code(() => validateLayout({ cuSeqlens: Int32Array.from([0, 5, 3, 8]) }, 8))).toBe('E_RANGE');
    expect(code(() => validateLayout({ cuSeqlens: Int32Array.from([0, 7]) }, 8))).toBe('E_RANGE');
    expect(code(() => validateLayout({ cuSeqlens: [0, 8] as unknown as Int32Array }, 8))).toBe('E_SHAPE');
    expect(code(() => validateLayout({ cuSeqlens: Int32Array.from([0]) }, 0))).toBe('E_SHAPE');
    expect(code(() => validateLayout({ cuSeqlens: Int32Array.from([0, 0, 8]) }, 8))).toBeUndefined();
  });

  it('rejects shape and dtype mismatches', () => {
    expect(code(() => validateQkv(t3(8, 2, 4), t3(7, 2, 4), t3(8, 2, 4)))).toBe('E_SHAPE');
    expect(code(() => validateQkv(t3(8, 2, 4), t3(8, 2, 5), t3(8, 2, 5)))).toBe('E_SHAPE');
    expect(code(() => validateQkv(t3(8, 3, 4), t3(8, 2, 4), t3(8, 2, 4)))).toBe('E_SHAPE');
    expect(code(() => validateQkv(t3(8, 2, 4), t3(8, 2, 4), t3(8, 1, 4)))).toBe('E_SHAPE');
    expect(code(() => validateQkv(t3(8, 2, 4), t3(8, 2, 4, 'bf16'), t3(8, 2, 4)))).toBe('E_DTYPE');
    expect(code(() => validateQkv(hostTensor('f32', [8, 4]), t3(8, 2, 4), t3(8, 2, 4)))).toBe('E_SHAPE');
    expect(code(() => hostTensor('f32', [2, 2], new Float32Array(3)))).toBe('E_SHAPE');
    expect(code(() => hostTensor('f16', [2], new Float32Array(2)))).toBe('E_DTYPE');
  });

  it('checks caps and the workspace before any allocation', () => {
    const layout = { cuSeqlens: Int32Array.from([0, 8]) };
    expect(code(() => checkProblem({ ...caps, dtypes: ['f32'] }, t3(8, 2, 4, 'bf16'), t3(8, 2, 4, 'bf16'), t3(8, 2, 4, 'bf16'), layout, { blockSize: 4, topk: 2 }))).toBe('E_UNSUPPORTED');
    expect(code(() => checkProblem({ ...caps, headDims: [64, 128] }, t3(8, 2, 4), t3(8, 2, 4), t3(8, 2, 4), layout, { blockSize: 4, topk: 2 }))).toBe('E_UNSUPPORTED');
    expect(code(() => checkProblem({ ...caps, nonCausal: false }, t3(8, 2, 4), t3(8, 2, 4), t3(8, 2, 4), layout, { blockSize: 4, topk: 2, causal: false }))).toBe('E_UNSUPPORTED');
    // shapes only: no data is needed for the memory check
    const big = { dtype: 'f32' as const, shape: [1 << 16, 8, 64] };
    expect(code(() => checkProblem(caps, big, big, big, { cuSeqlens: Int32Array.from([0, 1 << 16]) }, { blockSize: 64, topk: 8 }))).toBe('E_MEMORY');
  });

  it('rejects routing indices out of range, unsorted, duplicated, mis-padded or in the future', () => {
    const layout = { cuSeqlens: Int32Array.from([0, 8]) };
    const seqs = sequences(layout, 4);
    const cfg = resolveConfig({ blockSize: 4, topk: 2 }, 4);
    const ok = Int32Array.from([0, -1, 0, -1, 0, -1, 0, -1, 0, 1, 1, -1, 0, 1, 0, 1]); // T = 8, Hq = 1
    expect(code(() => validateRoutingIndices(ok, 8, 1, seqs, cfg))).toBeUndefined();
    const bad = (i: number, val: number, j = -1, val2 = 0) => { const x = ok.slice(); x[i] = val; if (j >= 0) x[j] = val2; return x; };
    expect(code(() => validateRoutingIndices(bad(0, 1), 8, 1, seqs, cfg))).toBe('E_RANGE'); // future block for token 0
    expect(code(() => validateRoutingIndices(bad(8, 2), 8, 1, seqs, cfg))).toBe('E_RANGE'); // out of range
    expect(code(() => validateRoutingIndices(bad(8, 1, 9, 0), 8, 1, seqs, cfg))).toBe('E_RANGE'); // unsorted
    expect(code(() => validateRoutingIndices(bad(9, 0), 8, 1, seqs, cfg))).toBe('E_RANGE'); // duplicate
    expect(code(() => validateRoutingIndices(bad(8, -1), 8, 1, seqs, cfg))).toBe('E_RANGE'); // -1 before a block
    expect(code(() => validateRoutingIndices(ok.slice(1), 8, 1, seqs, cfg))).toBe('E_SHAPE');
  });
});

describe('routing formats and plan', () => {
  const rng = new Rng(3);
  const shape = { T: 50, Hq: 3, Hkv: 1, D: 4, dtype: 'f32' as const };
  const layout = { cuSeqlens: Int32Array.from([0, 1, 30, 50]) };
  const q = Float64Array.from(rng.normals(shape.T * shape.Hq * shape.D));
  const k = Float64Array.from(rng.normals(shape.T * shape.Hkv * shape.D));

  for (const causal of [true, false]) {
    it(`collect -> expand round-trips the reference routing (causal ${causal}), lists ascending`, () => {
      const cfg = resolveConfig({ blockSize: 4, topk: 3, causal }, shape.D);
      const seqs = sequences(layout, cfg.blockSize);
      const idx = referenceRoute(q, k, shape, layout, cfg);
      validateRoutingIndices(idx, shape.T, shape.Hq, seqs, cfg);
      const c = collectRouting(idx, shape.T, shape.Hq, cfg.topk, seqs);
      for (let i = 0; i + 1 < c.offsets.length; i++) {
        for (let p = c.offsets[i]! + 1; p < c.offsets[i + 1]!; p++) expect(c.rows[p]!).toBeGreaterThan(c.rows[p - 1]!);
      }
      expect(Array.from(expandCollected(c, shape.T, shape.Hq, cfg.topk, seqs))).toEqual(Array.from(idx));
      if (causal) {
        // plan's exact pair count equals the number of ones in the mask the routing implies
        const pairs = routingToMask(idx, shape.T, shape.Hq, seqs, cfg).reduce((a, x) => a + x, 0);
        expect(plan(shape, layout, cfg).attendedPairs).toBe(pairs);
      }
    });
  }

  it('plan: dense-equivalent work, FLOP formulas and an O(T·H·(D + k)) workspace', () => {
    const cfg = resolveConfig({ blockSize: 64, topk: 8 }, 64);
    const s = { T: 16384, Hq: 4, Hkv: 4, D: 64, dtype: 'f32' as const };
    const p = plan(s, { cuSeqlens: Int32Array.from([0, 16384]) }, cfg);
    expect(p.causalPairs).toBe(4 * (16384 * 16385) / 2);
    expect(p.flops.forward).toBe(4 * p.attendedPairs * 64);
    expect(p.flops.backward).toBe(2.5 * p.flops.forward);
    expect(p.flops.denseForward / p.flops.forward).toBeGreaterThan(15);
    expect(p.workspaceBytes).toBeLessThan(16384 * 4 * (64 + 8) * 4 * 12);
  });
});
