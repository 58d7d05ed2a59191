/**
 * Fewer queries than keys (SPEC §8) on the CPU backend: route, routingFromIndices, forward, backward and the dense
 * baseline with a `{ cuSeqlensQ, cuSeqlensK }` layout against the float64 reference (tolerance policy), the same
 * rows of the full self-attention call on the same keys, one thread against a worker pool (bitwise), dk/dv of
 * unseen keys, and the core's layout errors.
 */
import { type HostTensor, MobaError, Rng, dtypeEps, toFloat64 } from '@moba/core';
import { keysOf, queryMap, referenceRoute } from '@moba/core/reference';
import { type QkFullProblem as QkProblem, type QkSpec, describeQkSpec, embedRows, makeQkFullProblem, randomQkRouting, routingErrors, rowsAt } from '@moba/testkit';
import { afterAll, describe, expect, it } from 'vitest';
import { type CpuBackend, createCpuBackend } from '../src/index.js';
import { type Grads, gradChecks, qkReference, randomQkSpec } from './qk-problem.js';

const cpu = createCpuBackend({ threads: 1 });
const pool = createCpuBackend({ threads: 2, minParallelWork: 0 });
afterAll(async () => {
  await Promise.all([cpu.destroy(), pool.destroy()]);
});

/** Forward and backward of `p` on `b` with routing indices `idx` (routingFromIndices) or the backend's own router. */
async function run(b: CpuBackend, p: QkProblem, idx?: Int32Array): Promise<Grads & { indices: Int32Array; raw: HostTensor[] }> {
  const [q, k, v, dOut] = await Promise.all([p.q, p.k, p.v, p.dOut].map((t) => b.upload(t)));
  const r = idx ? await b.routingFromIndices(idx, { T: p.shape.T, Hq: p.shape.Hq }, p.layout, p.cfg) : await b.route(q!, k!, p.layout, p.cfg);
  const { out, lse } = await b.forward(q!, k!, v!, r, p.layout, p.cfg);
  const g = await b.backward(q!, k!, v!, out, lse, dOut!, r, p.layout, p.cfg);
  const ts = [out, lse, g.dq, g.dk, g.dv];
  const raw = await Promise.all(ts.map((t) => b.download(t)));
  const [o, l, dq, dk, dv] = raw.map(toFloat64);
  const indices = await b.routingIndices(r);
  b.dispose(q!, k!, v!, dOut!, r, ...ts);
  return { out: o!, lse: l!, dq: dq!, dk: dk!, dv: dv!, indices, raw };
}

/** Keys `[Tk, Hkv]` that some query row attends under `idx`. */
function seenKeys(p: QkProblem, idx: Int32Array): Uint8Array {
  const { Tk, Hq, Hkv } = p.shape;
  const m = queryMap(p.layout, p.rcfg.blockSize);
  const seen = new Uint8Array(Tk * Hkv);
  for (let t = 0; t < m.Tq; t++) {
    for (let h = 0; h < Hq; h++) for (const key of keysOf(idx, m.seqOfQ[t]!, Hq, p.rcfg, m.pos[t]!, h, t)) seen[key * Hkv + Math.floor(h / (Hq / Hkv))] = 1;
  }
  return seen;
}

/** Rows of dk/dv that no query attends and that are not exactly zero; counts the unseen rows into `unseen`. */
function unseenNonZero(p: QkProblem, idx: Int32Array, g: Grads, unseen: { n: number }): string[] {
  const { D } = p.shape;
  const seen = seenKeys(p, idx);
  const bad: string[] = [];
  seen.forEach((s, i) => {
    if (s) return;
    unseen.n++;
    for (let d = 0; d < D; d++) if (!Object.is(g.dk[i * D + d], 0) || !Object.is(g.dv[i * D + d], 0)) bad.push(`dk/dv row ${i} (key, kv head) = ${g.dk[i * D + d]}, ${g.dv[i * D + d]}`);
  });
  return bad.slice(0, 3);
}

/** The QK rows' indices, embedded at their key positions into the reference's full self-attention routing. */
function embedded(p: QkProblem, idx: Int32Array): Int32Array {
  const full = referenceRoute(p.qFull64, p.k64, p.fullShape, p.keys, p.rcfg);
  return embedRows(full, idx, p.queries.pos, p.shape.Hq * p.rcfg.topk);
}

describe('cpu backend: fewer queries than keys (SPEC §8)', () => {
  it('declares caps.qkLayout', () => {
    expect(cpu.caps.qkLayout).toBe(true);
  });

  it('route, forward and backward match the float64 reference over random layouts (own and random routings, every dtype)', async () => {
    const rng = new Rng(2024);
    const unseen = { n: 0 };
    let mismatchedRows = 0;
    const seen = { decode: 0, partial: 0, full: 0, empty: 0, gqa: 0, noncausal: 0 };
    // fixed edges first: a chunk of more than one query tile (128 rows) not at the sequence start, decode at a
    // block boundary and one past it, and a sequence without queries beside one without keys
    const edges: QkSpec[] = [
      { seqlens: [300, 7], seqlensQ: [200, 7], Hq: 2, Hkv: 1, D: 16, dtype: 'f32', blockSize: 16, topk: 3, causal: true, seed: 11 },
      { seqlens: [300, 7], seqlensQ: [150, 2], Hq: 4, Hkv: 1, D: 7, dtype: 'bf16', blockSize: 5, topk: 4, causal: false, seed: 12 },
      { seqlens: [64, 65, 0, 33], seqlensQ: [1, 1, 0, 0], Hq: 3, Hkv: 3, D: 4, dtype: 'f16', blockSize: 64, topk: 2, causal: true, seed: 13 },
    ];
    for (let iter = 0; iter < 36 + edges.length; iter++) {
      const p = makeQkFullProblem(edges[iter] ?? randomQkSpec(rng, { dtype: (['f32', 'f16', 'bf16'] as const)[iter % 3] }));
      const where = describeQkSpec(p.spec);
      p.spec.seqlensQ.forEach((nq, i) => {
        const nk = p.spec.seqlens[i]!;
        seen[nq === 0 ? 'empty' : nq === nk ? 'full' : nq === 1 ? 'decode' : 'partial']++;
      });
      if (p.spec.Hq > p.spec.Hkv) seen.gqa++;
      if (!p.spec.causal) seen.noncausal++;
      // -- routing: the reference's, up to near-ties (checked by the testkit's tie-robust rule at the rows' key positions) --
      const own = await run(cpu, p);
      const ref = referenceRoute(p.q64, p.k64, p.shape, p.layout, p.rcfg);
      const w = p.shape.Hq * p.rcfg.topk;
      for (let r = 0; r < p.shape.T * p.shape.Hq; r++) if (own.indices.subarray(r * p.rcfg.topk, (r + 1) * p.rcfg.topk).join() !== ref.subarray(r * p.rcfg.topk, (r + 1) * p.rcfg.topk).join()) mismatchedRows++;
      expect(own.indices.length, where).toBe(p.shape.T * w);
      expect(routingErrors(embedded(p, own.indices), p.qFull64, p.k64, p.fullShape, p.seqs, p.keys, p.rcfg), where).toEqual([]);
      // -- attention under its own routing and under a random valid one --
      for (const [label, res] of [['own routing', own], ['random routing', await run(cpu, p, randomQkRouting(p, rng))]] as const) {
        const bad = gradChecks(label, p, res, qkReference(p, res.indices)).filter((c) => !c.ok);
        expect(bad.map((c) => c.message), where).toEqual([]);
        expect(unseenNonZero(p, res.indices, res, unseen), where).toEqual([]);
      }
    }
    expect(mismatchedRows).toBeLessThanOrEqual(2); // near-ties only
    expect(unseen.n).toBeGreaterThan(0);
    for (const [what, n] of Object.entries(seen)) expect(n, what).toBeGreaterThan(0);
  });

  it("a query row's routing and output equal the same row of the full self-attention call on the same keys", async () => {
    const rng = new Rng(77);
    for (let iter = 0; iter < 24; iter++) {
      const p = makeQkFullProblem(randomQkSpec(rng, { dtype: (['f32', 'bf16', 'f16'] as const)[iter % 3] }));
      const where = describeQkSpec(p.spec);
      const { Hq, D, dtype } = p.shape;
      const sub = await run(cpu, p);
      const full = await run(cpu, makeFull(p));
      expect(Array.from(sub.indices), where).toEqual(Array.from(rowsAt(full.indices, p.queries.pos, Hq * p.rcfg.topk)));
      expect(maxUlps(sub.out, rowsAt(full.out, p.queries.pos, Hq * D), dtypeEps(dtype)), where).toBeLessThanOrEqual(2);
      expect(maxUlps(sub.lse, rowsAt(full.lse, p.queries.pos, Hq), dtypeEps('f32')), where).toBeLessThanOrEqual(8);
      if (p.spec.causal) {
        const ds = await dense(cpu, p, p.layout);
        const df = await dense(cpu, makeFull(p), p.keys);
        expect(maxUlps(ds.out, rowsAt(df.out, p.queries.pos, Hq * D), dtypeEps(dtype)), where).toBeLessThanOrEqual(2);
      }
    }
  });

  it('threads: 1 and a worker pool (threads 2, minParallelWork 0) give bitwise-equal results, dense included', async () => {
    const rng = new Rng(31);
    for (let iter = 0; iter < 6; iter++) {
      const p = makeQkFullProblem(randomQkSpec(rng, { dtype: (['f32', 'f16', 'bf16'] as const)[iter % 3], causal: iter % 2 === 0, maxLen: 300 }));
      const where = describeQkSpec(p.spec);
      const a = await run(cpu, p);
      const b = await run(pool, p);
      expect(Buffer.from(b.indices.buffer).equals(Buffer.from(a.indices.buffer)), where).toBe(true);
      a.raw.forEach((t, i) => expect(bits(b.raw[i]!).equals(bits(t)), `${where} output ${i}`).toBe(true));
      const da = await dense(cpu, p, p.layout);
      const db = await dense(pool, p, p.layout);
      da.raw.forEach((t, i) => expect(bits(db.raw[i]!).equals(bits(t)), `${where} dense output ${i}`).toBe(true));
    }
  });

  it('denseForward / denseBackward take the QK layout: dense causal attention, bottom-right aligned (vs the reference)', async () => {
    const rng = new Rng(5);
    const unseen = { n: 0 };
    for (let iter = 0; iter < 12; iter++) {
      const spec = randomQkSpec(rng, { dtype: (['f32', 'f16', 'bf16'] as const)[iter % 3], causal: true });
      const p = makeQkFullProblem({ ...spec, topk: Math.max(1, p0MaxBlocks(spec.seqlens, spec.blockSize)) });
      const where = describeQkSpec(p.spec);
      const all = allPastBlocks(p); // topk ≥ every sequence's block count: dense causal attention
      const got = await dense(cpu, p, p.layout);
      const bad = gradChecks('dense', p, got, qkReference(p, all)).filter((c) => !c.ok);
      expect(bad.map((c) => c.message), where).toEqual([]);
      expect(unseenNonZero(p, all, got, unseen), where).toEqual([]);
    }
    expect(unseen.n).toBeGreaterThan(0);
  });

  it('bad QK layouts give the core errors (nq > nk is E_RANGE naming cuSeqlensQ); no E_UNSUPPORTED', async () => {
    const p = makeQkFullProblem({ seqlens: [20, 9], seqlensQ: [3, 1], Hq: 2, Hkv: 1, D: 4, dtype: 'f32', blockSize: 2, topk: 2, causal: true, seed: 3 });
    const [q, k, v, dOut] = await Promise.all([p.q, p.k, p.v, p.dOut].map((t) => cpu.upload(t)));
    const code = async (fn: () => Promise<unknown>): Promise<string> => {
      try { await fn(); } catch (e) { if (e instanceof MobaError) return `${e.code} ${e.param}`; throw e; }
      return 'no error';
    };
    const I = (...xs: number[]): Int32Array => Int32Array.from(xs);
    const over = { cuSeqlensQ: I(0, 3, 4), cuSeqlensK: I(0, 2, 29) }; // sequence 0: 3 queries, 2 keys
    expect(await code(() => cpu.route(q!, k!, over, p.cfg))).toBe('E_RANGE cuSeqlensQ');
    expect(await code(() => cpu.denseForward(q!, k!, v!, over))).toBe('E_RANGE cuSeqlensQ');
    expect(await code(() => cpu.route(q!, k!, { cuSeqlensQ: I(0, 4), cuSeqlensK: I(0, 20, 29) }, p.cfg))).toBe('E_SHAPE cuSeqlensQ');
    expect(await code(() => cpu.route(q!, k!, { cuSeqlensQ: I(0, 3, 3), cuSeqlensK: I(0, 20, 29) }, p.cfg))).toBe('E_RANGE cuSeqlensQ');
    // query rows sit at key positions 17, 18, 19 (blocks 8, 9, 9 of 10) and 8 of sequence 1 (block 4 of 5)
    const idx = Int32Array.from([8, -1, 8, -1, 9, -1, 9, -1, 9, -1, 9, -1, 4, -1, 4, -1]);
    expect(await code(() => cpu.routingFromIndices(idx, { T: 4, Hq: 2 }, p.layout, p.cfg))).toBe('no error');
    idx[0] = 9; // a future block for query row 0
    expect(await code(() => cpu.routingFromIndices(idx, { T: 4, Hq: 2 }, p.layout, p.cfg))).toBe('E_RANGE indices');
    // a routing is bound to its layout
    const r = await cpu.route(q!, k!, p.layout, p.cfg);
    const other = { cuSeqlensQ: I(0, 2, 4), cuSeqlensK: I(0, 20, 29) };
    expect(await code(() => cpu.forward(q!, k!, v!, r, other, p.cfg))).toBe('E_RANGE routing');
    const { out, lse } = await cpu.forward(q!, k!, v!, r, p.layout, p.cfg);
    const g = await cpu.backward(q!, k!, v!, out, lse, dOut!, r, p.layout, p.cfg);
    expect([g.dq.shape, g.dk.shape, g.dv.shape]).toEqual([[4, 2, 4], [29, 1, 4], [29, 1, 4]]);
    cpu.dispose(q!, k!, v!, dOut!, r, out, lse, g.dq, g.dk, g.dv);
  });
});

/** The full self-attention problem on the same keys (every position a query). */
function makeFull(p: QkProblem): QkProblem {
  return makeQkFullProblem({ ...p.spec, seqlensQ: p.spec.seqlens }); // the same seed draws the same full-length inputs
}

function p0MaxBlocks(nk: readonly number[], B: number): number {
  return Math.min(1024, Math.max(...nk.map((n) => Math.ceil(n / B))));
}

/** Indices selecting every block up to the own one (the dense causal routing). */
function allPastBlocks(p: QkProblem): Int32Array {
  const { T, Hq } = p.shape;
  const K = p.rcfg.topk;
  const m = queryMap(p.layout, p.rcfg.blockSize);
  const out = new Int32Array(T * Hq * K).fill(-1);
  for (let t = 0; t < T; t++) {
    const cb = Math.floor((m.pos[t]! - m.seqOfQ[t]!.start) / p.rcfg.blockSize);
    for (let h = 0; h < Hq; h++) for (let j = 0; j <= cb; j++) out[(t * Hq + h) * K + j] = j;
  }
  return out;
}

async function dense(b: CpuBackend, p: QkProblem, layout: QkProblem['layout'] | QkProblem['keys']): Promise<Grads & { raw: HostTensor[] }> {
  const [q, k, v, dOut] = await Promise.all([p.q, p.k, p.v, p.dOut].map((t) => b.upload(t)));
  const { out, lse } = await b.denseForward(q!, k!, v!, layout);
  const g = await b.denseBackward(q!, k!, v!, out, lse, dOut!, layout);
  const ts = [out, lse, g.dq, g.dk, g.dv];
  const raw = await Promise.all(ts.map((t) => b.download(t)));
  const [o, l, dq, dk, dv] = raw.map(toFloat64);
  b.dispose(q!, k!, v!, dOut!, ...ts);
  return { out: o!, lse: l!, dq: dq!, dk: dk!, dv: dv!, raw };
}

const bits = (t: HostTensor): Buffer => Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength);

/** Largest |a − b| in units of `eps · max(1, |b|)` (equal infinities count as 0). */
function maxUlps(a: Float64Array, b: Float64Array, eps: number): number {
  if (a.length !== b.length) return Infinity;
  let m = 0;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) m = Math.max(m, Math.abs(a[i]! - b[i]!) / (eps * Math.max(1, Math.abs(b[i]!))));
  return m;
}
