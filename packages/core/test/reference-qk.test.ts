// SPEC §8 in the float64 reference: a layout with separate query and key boundaries (bottom-right aligned)
// must give, for each query row, exactly what the self-attention of the whole key sequence gives at its position.
import { existsSync, readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { MobaError, type ProblemShape, Rng, resolveConfig } from '../src/index.js';
import { type QKLayout, attendedKeys, queryMap, referenceBackward, referenceForward, referenceRoute, validateQKLayout } from '../src/reference/index.js';

const rand = (rng: Rng, n: number): Float64Array => Float64Array.from(rng.normals(n));
/** Max |a − b|, NaN-safe, and 1 on a length mismatch (so "toBe(0)" means bit-equal up to the sign of zero). */
function maxDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) return Infinity;
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Object.is(a[i], b[i]) ? 0 : Math.abs(a[i]! - b[i]!) || (a[i] === b[i] ? 0 : Infinity));
  return m;
}
const cumsum = (xs: number[]): Int32Array => Int32Array.from([0, ...xs.map((_, i) => xs.slice(0, i + 1).reduce((a, b) => a + b, 0))]);
/** Rows `[r, r+1)` of a `[rows, w]` array gathered at `rows`. */
const gather = (x: ArrayLike<number>, rows: ArrayLike<number>, w: number): Float64Array =>
  Float64Array.from(Array.from(rows).flatMap((r) => Array.from({ length: w }, (_, i) => x[r * w + i]!)));

interface Problem { nk: number[]; nq: number[]; Hq: number; Hkv: number; D: number; B: number; topk: number; causal: boolean }
function randomProblem(rng: Rng, decode: boolean): Problem {
  const batch = rng.int(1, 3);
  const nk = Array.from({ length: batch }, () => rng.int(0, 29));
  const nq = nk.map((n) => (rng.next() < 0.2 ? 0 : decode ? Math.min(n, 1) : rng.int(0, n)));
  const Hkv = rng.int(1, 2);
  return { nk, nq, Hq: Hkv * rng.int(1, 3), Hkv, D: rng.int(1, 6), B: rng.int(1, 6), topk: rng.int(1, 4), causal: rng.next() < 0.5 };
}

describe('reference with cuSeqlensQ / cuSeqlensK (SPEC §8)', () => {
  it('nq = nk gives exactly the one-cuSeqlens result', () => {
    const rng = new Rng(81);
    for (let iter = 0; iter < 30; iter++) {
      const p = randomProblem(rng, false);
      const cu = cumsum(p.nk);
      const T = cu[cu.length - 1]!;
      const shape: ProblemShape = { T, Hq: p.Hq, Hkv: p.Hkv, D: p.D, dtype: 'f32' };
      const cfg = resolveConfig({ blockSize: p.B, topk: p.topk, causal: p.causal }, p.D);
      const [q, k, v, dOut] = [rand(rng, T * p.Hq * p.D), rand(rng, T * p.Hkv * p.D), rand(rng, T * p.Hkv * p.D), rand(rng, T * p.Hq * p.D)];
      const one = { cuSeqlens: cu };
      const two: QKLayout = { cuSeqlensQ: cu, cuSeqlensK: Int32Array.from(cu) };
      const idx = referenceRoute(q, k, shape, one, cfg);
      expect(referenceRoute(q, k, shape, two, cfg)).toEqual(idx);
      const f1 = referenceForward(q, k, v, idx, shape, one, cfg);
      const f2 = referenceForward(q, k, v, idx, shape, two, cfg);
      expect([maxDiff(f1.out, f2.out), maxDiff(f1.lse, f2.lse)]).toEqual([0, 0]);
      const b1 = referenceBackward(q, k, v, f1.out, f1.lse, dOut, idx, shape, one, cfg);
      const b2 = referenceBackward(q, k, v, f2.out, f2.lse, dOut, idx, shape, two, cfg);
      expect([maxDiff(b1.dq, b2.dq), maxDiff(b1.dk, b2.dk), maxDiff(b1.dv, b2.dv)]).toEqual([0, 0, 0]);
    }
  });

  for (const decode of [false, true]) {
    it(`nq < nk (${decode ? 'decode, nq = 1' : 'chunked, nq in [0, nk]'}) equals the full sequence's last nq rows`, () => {
      const rng = new Rng(decode ? 7 : 8);
      let seen = { causal: 0, noncausal: 0, gqa: 0, empty: 0 };
      for (let iter = 0; iter < 40; iter++) {
        const p = randomProblem(rng, decode);
        const cuK = cumsum(p.nk);
        const cuQ = cumsum(p.nq);
        const layout: QKLayout = { cuSeqlensQ: cuQ, cuSeqlensK: cuK };
        const Tk = cuK[cuK.length - 1]!;
        const Tq = cuQ[cuQ.length - 1]!;
        validateQKLayout(layout, Tq, Tk);
        const pos = queryMap(layout, p.B).pos;
        // the expected positions, spelled out: query a of sequence i at nk_i − nq_i + a
        expect(Array.from(pos)).toEqual(p.nk.flatMap((n, i) => Array.from({ length: p.nq[i]! }, (_, a) => cuK[i]! + n - p.nq[i]! + a)));
        const full: ProblemShape = { T: Tk, Hq: p.Hq, Hkv: p.Hkv, D: p.D, dtype: 'f32' };
        const cfg = resolveConfig({ blockSize: p.B, topk: p.topk, causal: p.causal }, p.D);
        const [qFull, k, v] = [rand(rng, Tk * p.Hq * p.D), rand(rng, Tk * p.Hkv * p.D), rand(rng, Tk * p.Hkv * p.D)];
        const q = gather(qFull, pos, p.Hq * p.D);
        const dOut = rand(rng, Tq * p.Hq * p.D);
        const dOutFull = new Float64Array(Tk * p.Hq * p.D); // zero on the rows that are not queries
        Array.from(pos).forEach((t, a) => dOutFull.set(dOut.subarray(a * p.Hq * p.D, (a + 1) * p.Hq * p.D), t * p.Hq * p.D));
        const one = { cuSeqlens: cuK };
        const idxFull = referenceRoute(qFull, k, full, one, cfg);
        const idx = referenceRoute(q, k, full, layout, cfg);
        expect(idx.length).toBe(Tq * p.Hq * p.topk);
        expect(Array.from(idx)).toEqual(Array.from(gather(idxFull, pos, p.Hq * p.topk)));
        const fFull = referenceForward(qFull, k, v, idxFull, full, one, cfg);
        const f = referenceForward(q, k, v, idx, full, layout, cfg);
        expect(maxDiff(f.out, gather(fFull.out, pos, p.Hq * p.D))).toBe(0);
        expect(maxDiff(f.lse, gather(fFull.lse, pos, p.Hq))).toBe(0);
        const bFull = referenceBackward(qFull, k, v, fFull.out, fFull.lse, dOutFull, idxFull, full, one, cfg);
        const b = referenceBackward(q, k, v, f.out, f.lse, dOut, idx, full, layout, cfg);
        expect(maxDiff(b.dq, gather(bFull.dq, pos, p.Hq * p.D))).toBe(0);
        expect([maxDiff(b.dk, bFull.dk), maxDiff(b.dv, bFull.dv)]).toEqual([0, 0]);
        // keys that no query attends to get exactly zero dk, dv
        const seenKeys = new Set<number>();
        for (let a = 0; a < Tq; a++) for (let h = 0; h < p.Hq; h++) for (const key of attendedKeys(idx, full, layout, cfg, a, h)) seenKeys.add(key);
        for (let t = 0; t < Tk; t++) {
          if (seenKeys.has(t)) continue;
          for (let i = 0; i < p.Hkv * p.D; i++) expect([b.dk[t * p.Hkv * p.D + i], b.dv[t * p.Hkv * p.D + i]]).toEqual([0, 0]);
        }
        seen = {
          causal: seen.causal + +cfg.causal, noncausal: seen.noncausal + +!cfg.causal,
          gqa: seen.gqa + +(p.Hq > p.Hkv), empty: seen.empty + +p.nq.some((n, i) => n === 0 && p.nk[i]! > 0),
        };
      }
      expect(Math.min(seen.causal, seen.noncausal, seen.gqa, seen.empty)).toBeGreaterThan(0);
    });
  }

  const here = dirname(fileURLToPath(import.meta.url));
  const casePath = resolve(here, '../../../../shared/golden/ext/c18_decode_1tok.json');
  it('golden c18_decode_1tok (seqlens_q) within 10-digit rounding', (ctx) => {
    if (!existsSync(casePath)) {
      console.log(`skipped: ${casePath} is absent`);
      ctx.skip();
      return;
    }
    const g = JSON.parse(readFileSync(casePath, 'utf8'));
    expect(g.requires).toEqual(['seqlens_q']);
    const c = g.config;
    const layout: QKLayout = { cuSeqlensQ: Int32Array.from(c.cu_seqlens_q), cuSeqlensK: Int32Array.from(c.cu_seqlens) };
    validateQKLayout(layout, c.total_tokens_q, c.total_tokens);
    const shape: ProblemShape = { T: c.total_tokens, Hq: c.heads_q, Hkv: c.heads_kv, D: c.head_dim, dtype: 'f32' };
    const cfg = resolveConfig({ blockSize: c.block_size, topk: c.topk, causal: c.causal, scale: c.scale }, c.head_dim);
    const [q, k, v, dOut] = (['q', 'k', 'v', 'dout'] as const).map((n) => Float64Array.from(g.inputs[n] as number[]));
    const idx = referenceRoute(q!, k!, shape, layout, cfg);
    const rows: number[][][] = [];
    for (let a = 0; a < c.total_tokens_q; a++) {
      rows.push(Array.from({ length: c.heads_q }, (_, h) => Array.from(idx.subarray((a * c.heads_q + h) * c.topk, (a * c.heads_q + h + 1) * c.topk)).filter((j) => j >= 0)));
    }
    expect(rows).toEqual(g.expected.routing);
    const f = referenceForward(q!, k!, v!, idx, shape, layout, cfg);
    const b = referenceBackward(q!, k!, v!, f.out, f.lse, dOut!, idx, shape, layout, cfg);
    // expected values are float64 rounded to 10 significant digits (golden-format.md)
    const close = (name: string, got: Float64Array, want: number[]): void => {
      expect(got.length, name).toBe(want.length);
      let worst = 0;
      for (let i = 0; i < want.length; i++) worst = Math.max(worst, Math.abs(got[i]! - want[i]!) / (1e-12 + Math.abs(want[i]!)));
      expect(worst, name).toBeLessThan(1e-8);
    };
    close('out', f.out, g.expected.out);
    close('lse', f.lse, g.expected.lse);
    close('dq', b.dq, g.expected.dq);
    close('dk', b.dk, g.expected.dk);
    close('dv', b.dv, g.expected.dv);
  });

  it('validateQKLayout names cuSeqlensQ / cuSeqlensK', () => {
    const I = (...xs: number[]): Int32Array => Int32Array.from(xs);
    const bad: [QKLayout, number, number, string, string][] = [
      [{ cuSeqlensQ: [0, 1] as unknown as Int32Array, cuSeqlensK: I(0, 2) }, 1, 2, 'E_SHAPE', 'cuSeqlensQ'],
      [{ cuSeqlensQ: I(0, 1), cuSeqlensK: Float64Array.of(0, 2) as unknown as Int32Array }, 1, 2, 'E_SHAPE', 'cuSeqlensK'],
      [{ cuSeqlensQ: I(0), cuSeqlensK: I(0, 2) }, 0, 2, 'E_SHAPE', 'cuSeqlensQ'],
      [{ cuSeqlensQ: I(0, 1), cuSeqlensK: I(0, 1, 2) }, 1, 2, 'E_SHAPE', 'cuSeqlensQ'], // lengths differ
      [{ cuSeqlensQ: I(1, 1), cuSeqlensK: I(0, 2) }, 1, 2, 'E_RANGE', 'cuSeqlensQ'], // start not 0
      [{ cuSeqlensQ: I(0, 1), cuSeqlensK: I(1, 2) }, 1, 2, 'E_RANGE', 'cuSeqlensK'],
      [{ cuSeqlensQ: I(0, 2, 1), cuSeqlensK: I(0, 2, 4) }, 1, 4, 'E_RANGE', 'cuSeqlensQ'], // decreasing
      [{ cuSeqlensQ: I(0, 1, 2), cuSeqlensK: I(0, 3, 2) }, 2, 2, 'E_RANGE', 'cuSeqlensK'],
      [{ cuSeqlensQ: I(0, 1), cuSeqlensK: I(0, 2) }, 2, 2, 'E_RANGE', 'cuSeqlensQ'], // does not end at Tq
      [{ cuSeqlensQ: I(0, 1), cuSeqlensK: I(0, 2) }, 1, 3, 'E_RANGE', 'cuSeqlensK'], // does not end at Tk
      [{ cuSeqlensQ: I(0, 1, 4), cuSeqlensK: I(0, 2, 4) }, 4, 4, 'E_RANGE', 'cuSeqlensQ'], // nq 3 > nk 2
    ];
    for (const [layout, Tq, Tk, code, param] of bad) {
      let err: unknown;
      try { validateQKLayout(layout, Tq, Tk); } catch (e) { err = e; }
      expect(err, `${code} ${param}`).toBeInstanceOf(MobaError);
      expect([(err as MobaError).code, (err as MobaError).param]).toEqual([code, param]);
      expect((err as MobaError).message).toContain(param);
    }
    expect(() => validateQKLayout({ cuSeqlensQ: I(0, 0, 1), cuSeqlensK: I(0, 0, 5) }, 1, 5)).not.toThrow(); // nq = nk = 0 is allowed
  });
});
