// Limits that depend on the problem, not the host: the int32 routing offsets every backend shares (checked in
// core's checkProblem / checkRoutingCall, so also through any BackendShell), at sizes that are never allocated.
import { describe, expect, it } from 'vitest';
import {
  type Capabilities, MAX_ROUTING_ENTRIES, MobaError, checkIndexLimits, checkProblem, checkRoutingCall,
} from '../src/index.js';
import { StubBackend } from './stub-backend.js';

const caps: Capabilities = {
  dtypes: ['f32', 'f16', 'bf16'], maxHeadDim: 256, maxTopk: 1024, maxBlockSize: 1 << 20, nonCausal: true, kconv: true,
  maxKconvWidth: 8, memoryBytes: Number.MAX_SAFE_INTEGER, deterministic: true, // no workspace limit: only the int32 one
};
/** Shapes only: checkProblem never reads data, so these tensors of billions of elements cost nothing. */
const fake = (T: number, H: number, D: number) => ({ dtype: 'bf16' as const, shape: [T, H, D] });
const one = (T: number) => ({ cuSeqlens: Int32Array.of(0, T) });

function error(fn: () => unknown): MobaError {
  try { fn(); } catch (e) { if (e instanceof MobaError) return e; throw e; }
  throw new Error('did not throw');
}

describe('int32 routing limits (T·Hq·topk and Hq·blocks + 1 at most 2^31 − 1)', () => {
  it('checkIndexLimits: the boundary, both counts, E_MEMORY naming the limit', () => {
    expect(MAX_ROUTING_ENTRIES).toBe(2 ** 31 - 1);
    expect(() => checkIndexLimits({ T: 2 ** 31 - 1, Hq: 1, topk: 1, totalBlocks: 2 ** 11 })).not.toThrow();
    const e = error(() => checkIndexLimits({ T: 2 ** 24, Hq: 16, topk: 8, totalBlocks: 2 ** 17 }));
    expect(e.code).toBe('E_MEMORY');
    expect(e.param).toBe('T');
    expect(e.message).toMatch(/T·Hq·topk = 16777216·16·8 = 2147483648 .*int32.*2\^31 − 1 = 2147483647/);
    const o = error(() => checkIndexLimits({ T: 2 ** 31 - 1, Hq: 1, topk: 1, totalBlocks: 2 ** 31 - 1 }));
    expect([o.code, o.message]).toEqual(['E_MEMORY', expect.stringMatching(/Hq·blocks \+ 1 = .* collected offsets/)]);
  });

  it('checkProblem refuses T·Hq·topk >= 2^31 with E_MEMORY even when the workspace would fit', () => {
    // 16M tokens, 16 heads, top-8: exactly 2^31 entries
    const e = error(() => checkProblem(caps, fake(2 ** 24, 16, 128), fake(2 ** 24, 16, 128), fake(2 ** 24, 16, 128), one(2 ** 24), { blockSize: 128, topk: 8 }));
    expect(e.code).toBe('E_MEMORY');
    expect(e.message).toMatch(/int32/);
    // one slot fewer per token fits the offsets (and this caps has no workspace limit)
    const ok = checkProblem(caps, fake(2 ** 24, 16, 128), fake(2 ** 24, 16, 128), null, one(2 ** 24), { blockSize: 128, topk: 7 });
    expect(ok.cfg.topk).toBe(7);
    // GQA: the query heads count, not the kv heads
    expect(error(() => checkProblem(caps, fake(2 ** 23, 64, 64), fake(2 ** 23, 4, 64), null, one(2 ** 23), { blockSize: 64, topk: 4 })).code).toBe('E_MEMORY');
  });

  it('the int32 check comes before the workspace check, so a host with a small limit still names int32', () => {
    const small = { ...caps, memoryBytes: 2 ** 30 };
    const e = error(() => checkProblem(small, fake(2 ** 24, 16, 128), fake(2 ** 24, 16, 128), null, one(2 ** 24), { blockSize: 128, topk: 8 }));
    expect(e.message).toMatch(/int32/);
  });

  it('checkRoutingCall refuses before reading the indices (none allocated)', () => {
    const e = error(() => checkRoutingCall(caps, new Int32Array(0), { T: 2 ** 24, Hq: 128 }, one(2 ** 24), { blockSize: 1024, topk: 1 }));
    expect(e.code).toBe('E_MEMORY');
    expect(e.message).toMatch(/2147483648 routing entries/);
  });

  it('every BackendShell refuses in route() and routingFromIndices() before touching a tensor', async () => {
    const b = new StubBackend({ ...caps });
    const q = { backend: 'stub', ...fake(2 ** 24, 16, 128) }; // not a tensor of b: the shape check comes first
    await expect(b.route(q, q, one(2 ** 24), { blockSize: 128, topk: 8 })).rejects.toMatchObject({ code: 'E_MEMORY' });
    await expect(b.routingFromIndices(new Int32Array(0), { T: 2 ** 24, Hq: 16 }, one(2 ** 24), { blockSize: 128, topk: 8 })).rejects.toMatchObject({ code: 'E_MEMORY' });
    await b.destroy();
  });
});
