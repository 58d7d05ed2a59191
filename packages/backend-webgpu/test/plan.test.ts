/**
 * Buffer planning without a GPU (the stages' plans: route.ts, collect.ts, forward.ts, backward.ts): the H200
 * bench configuration at 128K tokens per sequence (batch 2 × 131072, 16 heads, D 128, bf16, blockSize 128,
 * topk 8) fits bindings of 2^31 − 4 bytes (the adapter's maxStorageBufferBindingSize) now that 16-bit tensors
 * take 2 bytes per element; in f32 it does not.
 */
import { MobaError, type ProblemShape, sequences, uniformSeqlens } from '@moba/core';
import { describe, expect, it } from 'vitest';
import { backwardPlan } from '../src/backward.js';
import { checkBufferSizes } from '../src/buffers.js';
import { collectBytes, collectPlan } from '../src/collect.js';
import { forwardPlan } from '../src/forward.js';
import { buildGeometry } from '../src/geometry.js';
import { ROUTE_ROWS, routeBytes } from '../src/route.js';
import { storageBytes } from '../src/storage.wgsl.js';

const H200 = { maxStorageBufferBindingSize: 2 ** 31 - 4, maxBufferSize: 2 ** 31 - 4 };

describe('webgpu buffer planning (no GPU)', () => {
  const [batch, N, H, D] = [2, 131072, 16, 128];
  const cfg = { blockSize: 128, topk: 8 };
  const T = batch * N;
  const shape: ProblemShape = { T, Hq: H, Hkv: H, D, dtype: 'bf16' };
  const seqs = sequences({ cuSeqlens: uniformSeqlens(batch, N) }, cfg.blockSize);
  const geo = buildGeometry(seqs, T, cfg.blockSize, ROUTE_ROWS);
  const { lists } = collectPlan(seqs, T, H, cfg);

  it('the 16-head, D 128, bf16, B 128, top-8 bench configuration at 128K fits 2^31 − 4 byte bindings in bf16 (tensors of 2^30 bytes)', () => {
    const tensor = storageBytes(T * H * D, 'bf16');
    expect(tensor).toBe(2 ** 30);
    const fwd = forwardPlan(shape, cfg.topk, seqs.totalBlocks, H200);
    const bwd = backwardPlan(shape, cfg, seqs.totalBlocks, H200);
    for (const sizes of [{ q: tensor, k: tensor, v: tensor }, routeBytes(shape, cfg.topk, geo), collectBytes(lists), fwd.bytes, bwd.bytes]) {
      expect(() => checkBufferSizes(H200, sizes)).not.toThrow();
    }
    expect(fwd.bytes.out).toBe(2 ** 30);
    expect(fwd.passes.every((p) => p.whole)).toBe(true); // one head per pass: out written once, no window
    expect(fwd.bytes['out window']).toBe(0);
    // a head's dQ partials exceed one binding: passes over parts of heads, so dq/dk/dv sums cross passes in
    // f32 windows of one head, [T, D] each: 2^27 bytes instead of an f32 [T, H, D] (2^31)
    expect(bwd.passes.some((p) => !p.whole)).toBe(true);
    expect(bwd.bytes['dq window']).toBe(T * D * 4);
    expect(bwd.bytes['dk, dv windows']).toBe(T * D * 4);
    expect(bwd.bytes.dq).toBe(2 ** 30);
    expect(bwd.bytes['dk, dv']).toBe(2 ** 30);
  });

  it('in f32 the same tensors are 2^31 bytes: E_MEMORY before anything is allocated', () => {
    const f32 = { ...shape, dtype: 'f32' as const };
    expect(() => checkBufferSizes(H200, { q: storageBytes(T * H * D, 'f32') })).toThrow(MobaError);
    expect(() => checkBufferSizes(H200, forwardPlan(f32, cfg.topk, seqs.totalBlocks, H200).bytes)).toThrow(/buffer out needs/);
  });
});
