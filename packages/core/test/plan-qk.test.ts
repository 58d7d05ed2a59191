// plan() with fewer queries than keys (SPEC §8) and planCacheAttend (SPEC §9): the counted pairs must equal what
// the float64 reference attends, row by row, on random data; nq = nk is plan() of self-attention exactly.
import { describe, expect, it } from 'vitest';
import { type QKLayout, Rng, plan, planCacheAttend, resolveConfig } from '../src/index.js';
import { attendedKeys, referenceRoute } from '../src/reference/index.js';

const cumsum = (xs: number[]): Int32Array => Int32Array.from([0, ...xs.map((_, i) => xs.slice(0, i + 1).reduce((a, b) => a + b, 0))]);

describe('plan() with a QK layout', () => {
  it('attendedPairs and routedScores equal a count over the reference routing; nq = nk is self-attention', () => {
    const rng = new Rng(5);
    let rows = 0;
    for (let iter = 0; iter < 60; iter++) {
      const batch = rng.int(1, 3);
      const nk = Array.from({ length: batch }, () => rng.int(0, 40));
      const nq = nk.map((n) => (iter % 3 === 0 ? n : rng.int(0, n)));
      const Hkv = rng.int(1, 2);
      const Hq = Hkv * rng.int(1, 2);
      const D = 3;
      const causal = iter % 4 !== 3;
      const cfg = resolveConfig({ blockSize: rng.int(1, 7), topk: rng.int(1, 4), causal }, D);
      const layout: QKLayout = { cuSeqlensQ: cumsum(nq), cuSeqlensK: cumsum(nk) };
      const Tq = layout.cuSeqlensQ[batch]!;
      const Tk = layout.cuSeqlensK[batch]!;
      const shape = { T: Tq, Tk, Hq, Hkv, D, dtype: 'bf16' as const };
      const p = plan(shape, layout, cfg);
      if (Tq > 0) {
        const q = Float64Array.from(rng.normals(Tq * Hq * D));
        const k = Float64Array.from(rng.normals(Tk * Hkv * D));
        const idx = referenceRoute(q, k, shape, layout, cfg);
        let pairs = 0;
        for (let t = 0; t < Tq; t++) for (let h = 0; h < Hq; h++) pairs += attendedKeys(idx, shape, layout, cfg, t, h).length;
        if (causal) expect(p.attendedPairs).toBe(pairs); // past blocks are full: exact for causal routing
        else expect(p.attendedPairs).toBeGreaterThanOrEqual(pairs);
        rows += Tq;
      }
      const dense = nq.reduce((s, n, b) => s + Array.from({ length: n }, (_, a) => nk[b]! - n + a + 1).reduce((x, y) => x + y, 0), 0);
      expect(p.causalPairs).toBe(dense * Hq);
      if (nq.every((n, b) => n === nk[b])) {
        const self = plan({ T: Tk, Hq, Hkv, D, dtype: 'bf16' }, { cuSeqlens: layout.cuSeqlensK }, cfg);
        expect(p).toEqual(self);
      }
      const c = planCacheAttend(nk.map((n, b) => ({ length: n, nq: nq[b]! })), { Hq, Hkv, D, dtype: 'bf16', blockSize: cfg.blockSize, topk: cfg.topk, causal });
      if (causal) expect(c.attendedKeys).toBe(p.attendedPairs);
      expect(c.flops.attend).toBe(causal ? p.flops.forward : c.flops.attend);
      expect(c.queries).toBe(Tq);
    }
    expect(rows).toBeGreaterThan(200);
  });

  it('planCacheAttend: a decode step reads centroids once per kv head and topk blocks per query head', () => {
    // 16/16 heads, D 128, bf16, B 128, topk 8, one sequence of 128K tokens (the decode-dense-h200.md byte model)
    const c = planCacheAttend([{ length: 131072, nq: 1 }], { Hq: 16, Hkv: 16, D: 128, dtype: 'bf16', blockSize: 128, topk: 8 });
    expect(c.bytes.centroids).toBe(1024 * 16 * 128 * 4);
    expect(c.bytes.selected).toBe(8 * 128 * 128 * 2 * 2 * 16);
    expect(c.denseBytes - c.bytes.q - c.bytes.out).toBe(131072 * 16 * 128 * 2 * 2);
  });
});
