// The float64 reference checked on its own terms: gradients against central finite differences,
// the dense / block-local oracles against an independent masked-softmax implementation, and the
// routing rules of SPEC §3 (forced own block inside k, ties to the higher index, non-causal top-k).
import { describe, expect, it } from 'vitest';
import { type ProblemShape, type ResolvedConfig, Rng, resolveConfig, routingToMask, sequences } from '../src/index.js';
import { referenceBackward, referenceForward, referenceKconv, referenceKconvBackward, referenceRoute } from '../src/reference/index.js';

const rand = (rng: Rng, n: number): Float64Array => Float64Array.from(rng.normals(n));

/** Dense masked softmax attention over a [Hq, T, T] mask: an implementation independent of the reference's key lists. */
function maskedAttention(q: Float64Array, k: Float64Array, v: Float64Array, mask: Uint8Array, s: ProblemShape, scale: number) {
  const { T, Hq, Hkv, D } = s;
  const out = new Float64Array(T * Hq * D);
  for (let h = 0; h < Hq; h++) {
    const kh = Math.floor(h / (Hq / Hkv));
    for (let t = 0; t < T; t++) {
      const logits: number[] = [];
      for (let p = 0; p < T; p++) {
        if (!mask[(h * T + t) * T + p]) { logits.push(-Infinity); continue; }
        let d = 0;
        for (let i = 0; i < D; i++) d += q[(t * Hq + h) * D + i]! * k[(p * Hkv + kh) * D + i]!;
        logits.push(d * scale);
      }
      const m = Math.max(...logits);
      const w = logits.map((x) => (x === -Infinity ? 0 : Math.exp(x - m)));
      const z = w.reduce((a, b) => a + b, 0);
      for (let p = 0; p < T; p++) for (let i = 0; i < D; i++) out[(t * Hq + h) * D + i]! += (w[p]! / z) * v[(p * Hkv + kh) * D + i]!;
    }
  }
  return out;
}

function causalMask(T: number, Hq: number, cu: Int32Array, blockSize: number, local: boolean): Uint8Array {
  const m = new Uint8Array(Hq * T * T);
  for (let b = 0; b + 1 < cu.length; b++) {
    for (let t = cu[b]!; t < cu[b + 1]!; t++) {
      for (let p = cu[b]!; p <= t; p++) {
        if (local && Math.floor((p - cu[b]!) / blockSize) !== Math.floor((t - cu[b]!) / blockSize)) continue;
        for (let h = 0; h < Hq; h++) m[(h * T + t) * T + p] = 1;
      }
    }
  }
  return m;
}

function maxDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

describe('reference forward', () => {
  const shape: ProblemShape = { T: 23, Hq: 4, Hkv: 2, D: 5, dtype: 'f32' };
  const cu = Int32Array.from([0, 13, 14, 23]); // three sequences, one of length 1
  const layout = { cuSeqlens: cu };
  const rng = new Rng(7);
  const q = rand(rng, shape.T * shape.Hq * shape.D);
  const k = rand(rng, shape.T * shape.Hkv * shape.D);
  const v = rand(rng, shape.T * shape.Hkv * shape.D);

  it('topk >= #blocks equals dense causal attention', () => {
    const cfg = resolveConfig({ blockSize: 4, topk: 4 }, shape.D);
    const idx = referenceRoute(q, k, shape, layout, cfg);
    const { out } = referenceForward(q, k, v, idx, shape, layout, cfg);
    expect(maxDiff(out, maskedAttention(q, k, v, causalMask(shape.T, shape.Hq, cu, 4, false), shape, cfg.scale))).toBeLessThan(1e-12);
  });

  it('topk = 1 equals block-local causal attention', () => {
    const cfg = resolveConfig({ blockSize: 4, topk: 1 }, shape.D);
    const idx = referenceRoute(q, k, shape, layout, cfg);
    const { out } = referenceForward(q, k, v, idx, shape, layout, cfg);
    expect(maxDiff(out, maskedAttention(q, k, v, causalMask(shape.T, shape.Hq, cu, 4, true), shape, cfg.scale))).toBeLessThan(1e-12);
  });

  it('a small topk differs from dense and matches its own routing mask', () => {
    const cfg = resolveConfig({ blockSize: 2, topk: 2 }, shape.D);
    const idx = referenceRoute(q, k, shape, layout, cfg);
    const { out } = referenceForward(q, k, v, idx, shape, layout, cfg);
    const dense = maskedAttention(q, k, v, causalMask(shape.T, shape.Hq, cu, 2, false), shape, cfg.scale);
    expect(maxDiff(out, dense)).toBeGreaterThan(1e-3);
    const mask = routingToMask(idx, shape.T, shape.Hq, sequences(layout, 2), cfg);
    expect(maxDiff(out, maskedAttention(q, k, v, mask, shape, cfg.scale))).toBeLessThan(1e-12);
  });

  it('empty rows give out = 0 and lse = -Infinity, never NaN', () => {
    const cfg = resolveConfig({ blockSize: 4, topk: 2 }, shape.D);
    const idx = new Int32Array(shape.T * shape.Hq * 2).fill(-1);
    const { out, lse } = referenceForward(q, k, v, idx, shape, layout, cfg);
    expect(out.every((x) => x === 0)).toBe(true);
    expect(lse.every((x) => x === -Infinity)).toBe(true);
  });
});

describe('reference routing (SPEC §3)', () => {
  it('forces the own block inside k, never picks a future block, and breaks exact ties to the higher index', () => {
    const shape: ProblemShape = { T: 20, Hq: 1, Hkv: 1, D: 2, dtype: 'f32' };
    const k = new Float64Array(20 * 2);
    for (let p = 0; p < 20; p++) { k[p * 2] = 1; k[p * 2 + 1] = 0; } // every centroid equal: all scores tie
    const q = new Float64Array(20 * 2).fill(1);
    const cfg = resolveConfig({ blockSize: 4, topk: 3 }, 2);
    const idx = referenceRoute(q, k, shape, { cuSeqlens: Int32Array.from([0, 20]) }, cfg);
    // token 19: current block 4; ties among blocks 0..3 -> the two highest (2, 3) win
    expect(Array.from(idx.slice(19 * 3, 20 * 3))).toEqual([2, 3, 4]);
    expect(Array.from(idx.slice(5 * 3, 6 * 3))).toEqual([0, 1, -1]); // block 1: only block 0 eligible
    expect(Array.from(idx.slice(0, 3))).toEqual([0, -1, -1]);
  });

  it('picks the best-scoring past blocks (and non-causal takes the top k of all blocks)', () => {
    const shape: ProblemShape = { T: 16, Hq: 1, Hkv: 1, D: 1, dtype: 'f32' };
    const keyOfBlock = [3, -1, 5, 0];
    const k = Float64Array.from({ length: 16 }, (_, p) => keyOfBlock[Math.floor(p / 4)]!);
    const q = new Float64Array(16).fill(1);
    const layout = { cuSeqlens: Int32Array.from([0, 16]) };
    const causal = referenceRoute(q, k, shape, layout, resolveConfig({ blockSize: 4, topk: 2 }, 1));
    expect(Array.from(causal.slice(15 * 2, 16 * 2))).toEqual([2, 3]); // best past block is 2 (score 5)
    const nonCausal = referenceRoute(q, k, shape, layout, resolveConfig({ blockSize: 4, topk: 2, causal: false }, 1));
    expect(Array.from(nonCausal.slice(0, 2))).toEqual([0, 2]); // token 0 sees blocks 0 and 2 (scores 3, 5)
  });
});

describe('reference gradients vs finite differences (float64)', () => {
  const shape: ProblemShape = { T: 11, Hq: 2, Hkv: 1, D: 3, dtype: 'f32' };
  const layout = { cuSeqlens: Int32Array.from([0, 7, 11]) };
  const rng = new Rng(11);
  const q = rand(rng, shape.T * shape.Hq * shape.D);
  const k = rand(rng, shape.T * shape.Hkv * shape.D);
  const v = rand(rng, shape.T * shape.Hkv * shape.D);
  const dOut = rand(rng, shape.T * shape.Hq * shape.D);
  const cfg: ResolvedConfig = resolveConfig({ blockSize: 2, topk: 2 }, shape.D);
  const idx = referenceRoute(q, k, shape, layout, cfg); // held constant: routing has no gradient
  const loss = (qq: Float64Array, kk: Float64Array, vv: Float64Array): number =>
    referenceForward(qq, kk, vv, idx, shape, layout, cfg).out.reduce((a, x, i) => a + x * dOut[i]!, 0);

  it('dq, dk, dv match central differences', () => {
    const { out, lse } = referenceForward(q, k, v, idx, shape, layout, cfg);
    const g = referenceBackward(q, k, v, out, lse, dOut, idx, shape, layout, cfg);
    const eps = 1e-6;
    for (const [name, x, grad] of [['q', q, g.dq], ['k', k, g.dk], ['v', v, g.dv]] as const) {
      for (let i = 0; i < x.length; i++) {
        const x0 = x[i]!;
        x[i] = x0 + eps; const lp = loss(q, k, v);
        x[i] = x0 - eps; const lm = loss(q, k, v);
        x[i] = x0;
        const fd = (lp - lm) / (2 * eps);
        expect(Math.abs(fd - grad[i]!), `${name}[${i}]`).toBeLessThan(1e-7 * Math.max(1, Math.abs(fd)));
      }
    }
  });

  it('kconv dk and dw match central differences, and the conv never crosses sequences', () => {
    const C = shape.Hkv * shape.D;
    for (const W of [1, 3, 5]) {
      const w = rand(rng, C * W);
      const g = rand(rng, k.length);
      const lossK = (kk: Float64Array, ww: Float64Array): number => referenceKconv(kk, ww, C, W, layout).reduce((a, x, i) => a + x * g[i]!, 0);
      const { dk, dw } = referenceKconvBackward(k, w, g, C, W, layout);
      const eps = 1e-6;
      for (const [name, x, grad] of [['k', k, dk], ['w', w, dw]] as const) {
        for (let i = 0; i < x.length; i++) {
          const x0 = x[i]!;
          x[i] = x0 + eps; const lp = lossK(k, w);
          x[i] = x0 - eps; const lm = lossK(k, w);
          x[i] = x0;
          expect(Math.abs((lp - lm) / (2 * eps) - grad[i]!), `W=${W} d${name}[${i}]`).toBeLessThan(1e-7);
        }
      }
      // the first token of the second sequence sees only itself
      const kc = referenceKconv(k, w, C, W, layout);
      const t = 7;
      for (let c = 0; c < C; c++) {
        const z = w[c * W + W - 1]! * k[t * C + c]!;
        expect(kc[t * C + c]).toBeCloseTo(k[t * C + c]! + z / (1 + Math.exp(-z)), 12);
      }
    }
  });
});
