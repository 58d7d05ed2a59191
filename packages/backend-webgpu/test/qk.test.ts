/**
 * Fewer queries than keys (SPEC §8) on WebGPU: route, routingFromIndices, forward and backward with a
 * { cuSeqlensQ, cuSeqlensK } layout against the float64 reference (tolerance policy; routing by the tie-robust
 * rule, on the row's position in the whole key sequence) and against the CPU backend's self-attention call on
 * the whole sequence (the testkit's makeQkFullProblem): random layouts with nq in {0, 1, a few, nk}, GQA/MQA,
 * every dtype, causal and not, several block sizes and topk, and decode-like shapes (one query per sequence, many
 * keys). Keys no query sees get exactly zero dk, dv. A missing adapter skips, unless MOBA_REQUIRE names webgpu.
 */
import { type Backend, type DType, type DeviceTensor, type ToleranceCheck, Rng, checkTolerance, fromFloat, toFloat64 } from '@moba/core';
import { createCpuBackend } from '@moba/backend-cpu';
import { referenceBackward, referenceForward, referenceRoute } from '@moba/core/reference';
import { type QkFullProblem as QKProblem, embedRows, makeQkFullProblem, routingErrors, rowsAt } from '@moba/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type WebGpuBackend, createWebGpuBackend } from '../src/index.js';
import { backwardPlan } from '../src/backward.js';
import { forwardPlan } from '../src/forward.js';
import { webgpuUnavailable } from './gate.js';
import { type QKCase, randomCase } from './qk-problem.js';

interface Result { out: Float64Array; lse: Float64Array; dq: Float64Array; dk: Float64Array; dv: Float64Array }

async function f64(b: Backend, t: DeviceTensor): Promise<Float64Array> {
  return toFloat64(await b.download(t));
}

/** Forward and backward of a routing on a backend (q, dOut and the layout given), as f64; frees what it made. */
async function attention(b: Backend, p: QKProblem, qt: DeviceTensor, dOutT: DeviceTensor, kt: DeviceTensor, vt: DeviceTensor, r: Awaited<ReturnType<Backend['route']>>, layout: QKProblem['layout'] | QKProblem['keys']): Promise<Result> {
  const { out, lse } = await b.forward(qt, kt, vt, r, layout, p.cfg);
  const g = await b.backward(qt, kt, vt, out, lse, dOutT, r, layout, p.cfg);
  const res = { out: await f64(b, out), lse: await f64(b, lse), dq: await f64(b, g.dq), dk: await f64(b, g.dk), dv: await f64(b, g.dv) };
  b.dispose(out, lse, g.dq, g.dk, g.dv);
  return res;
}

const round = (dt: DType, a: Float64Array): Float64Array => toFloat64(fromFloat(a, dt, [a.length]));

/** The f64 reference and its f32 calibration run (outputs rounded to the dtype) of a QK problem under `indices`. */
function referencePair(p: QKProblem, indices: Int32Array): { ref: Result; cal: Result } {
  const { shape, layout, rcfg } = p;
  const dt = shape.dtype;
  const f = referenceForward(p.q64, p.k64, p.v64, indices, shape, layout, rcfg);
  const cf = referenceForward(p.q64, p.k64, p.v64, indices, shape, layout, rcfg, Math.fround);
  const calOut = round(dt, cf.out);
  const calLse = cf.lse.map(Math.fround);
  const b = referenceBackward(p.q64, p.k64, p.v64, f.out, f.lse, p.dOut64, indices, shape, layout, rcfg);
  const cb = referenceBackward(p.q64, p.k64, p.v64, calOut, calLse, p.dOut64, indices, shape, layout, rcfg, Math.fround);
  return {
    ref: { out: f.out, lse: f.lse, dq: b.dq, dk: b.dk, dv: b.dv },
    cal: { out: calOut, lse: calLse, dq: round(dt, cb.dq), dk: round(dt, cb.dk), dv: round(dt, cb.dv) },
  };
}

const FIELDS = ['out', 'lse', 'dq', 'dk', 'dv'] as const;

function checks(label: string, p: QKProblem, got: Partial<Result>, rp: { ref: Result; cal: Result }): ToleranceCheck[] {
  const { T, Tk, Hq, Hkv, D, dtype } = p.shape;
  const shapes = { out: [T, Hq, D], lse: [T, Hq], dq: [T, Hq, D], dk: [Tk, Hkv, D], dv: [Tk, Hkv, D] };
  return FIELDS.filter((f) => got[f] !== undefined).map((f) => checkTolerance(`${label} ${f}`, got[f]!, rp.ref[f], rp.cal[f], {
    kind: f === 'out' || f === 'lse' ? 'forward' : 'backward', dtype: f === 'lse' ? 'f32' : dtype, shape: shapes[f],
  }));
}

/** Key rows whose reference dk and dv are exactly zero (no query sees them) must be exactly zero here too. */
function unseenKeyErrors(p: QKProblem, got: Result, ref: Result): string[] {
  const w = p.shape.Hkv * p.shape.D;
  const errors: string[] = [];
  for (let r = 0; r < p.shape.Tk; r++) {
    const zero = (a: Float64Array) => a.subarray(r * w, (r + 1) * w).every((x) => x === 0);
    if (zero(ref.dk) && zero(ref.dv) && !(zero(got.dk) && zero(got.dv))) errors.push(`key row ${r}: no query sees it, but dk or dv is not 0`);
  }
  return errors.slice(0, 5);
}

function maxAbsDiff(a: Float64Array, b: Float64Array): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return a.length === b.length ? m : Infinity;
}

async function runCase(gpu: WebGpuBackend, cpu: Backend, c: QKCase): Promise<void> {
  const p = makeQkFullProblem(c);
  const Hq = c.Hq;
  const width = Hq * c.topk;
  const label = `${c.label} (nk [${c.seqlens}], nq [${c.seqlensQ}], Hq ${c.Hq}, Hkv ${c.Hkv}, D ${c.D}, ${c.dtype}, B ${c.blockSize}, top ${c.topk}, ${c.causal ? 'causal' : 'non-causal'})`;
  const [qt, kt, vt, dOutT] = [await gpu.upload(p.q), await gpu.upload(p.k), await gpu.upload(p.v), await gpu.upload(p.dOut)];
  const r = await gpu.route(qt, kt, p.layout, p.cfg);
  const idx = await gpu.routingIndices(r);
  // -- routing: each row's selection is valid for its position in the whole key sequence (near ties aside, the reference's) --
  const fullRef = referenceRoute(p.qFull64, p.k64, p.fullShape, p.keys, p.rcfg);
  const embedded = embedRows(fullRef, idx, p.queries.pos, width);
  expect(routingErrors(embedded, p.qFull64, p.k64, p.fullShape, p.seqs, p.keys, p.rcfg), label).toEqual([]);
  const qkRef = referenceRoute(p.q64, p.k64, p.shape, p.layout, p.rcfg);
  expect(qkRef, `${label}: the reference's QK rows are its full rows`).toEqual(rowsAt(fullRef, p.queries.pos, width));
  // -- forward and backward under the GPU's routing --
  const got = await attention(gpu, p, qt, dOutT, kt, vt, r, p.layout);
  const rp = referencePair(p, idx);
  const cs = checks(label, p, got, rp);
  expect(cs.filter((x) => !x.ok).map((x) => x.message)).toEqual([]);
  expect(unseenKeyErrors(p, got, rp.ref), label).toEqual([]);
  // -- routingFromIndices: the reference's routing, forward only --
  const rr = await gpu.routingFromIndices(qkRef, { T: p.shape.T, Hq }, p.layout, p.cfg);
  expect(await gpu.routingIndices(rr)).toEqual(qkRef);
  const fw = await gpu.forward(qt, kt, vt, rr, p.layout, p.cfg);
  const fwGot = { out: await f64(gpu, fw.out), lse: await f64(gpu, fw.lse) };
  const cr = checks(`${label} from indices`, p, fwGot, referencePair(p, qkRef));
  expect(cr.filter((x) => !x.ok).map((x) => x.message)).toEqual([]);
  gpu.dispose(r, rr, fw.out, fw.lse, qt, kt, vt, dOutT);
  // -- the CPU backend's self-attention call on the whole sequence, same selections: the query rows agree --
  const [cq, ck, cv, cd] = [await cpu.upload(p.qFull), await cpu.upload(p.k), await cpu.upload(p.v), await cpu.upload(p.dOutFull)];
  const cr2 = await cpu.routingFromIndices(embedded, { T: p.fullShape.T, Hq }, p.keys, p.cfg);
  const fullRes = await attention(cpu, p, cq, cd, ck, cv, cr2, p.keys);
  cpu.dispose(cr2, cq, ck, cv, cd);
  const D = c.D;
  const cpuRows: Result = {
    out: rowsAt(fullRes.out, p.queries.pos, Hq * D), lse: rowsAt(fullRes.lse, p.queries.pos, Hq), dq: rowsAt(fullRes.dq, p.queries.pos, Hq * D), dk: fullRes.dk, dv: fullRes.dv,
  };
  const cc = checks(`${label} cpu`, p, cpuRows, rp);
  expect(cc.filter((x) => !x.ok).map((x) => x.message)).toEqual([]);
  const vsCpu = FIELDS.map((f, i) => {
    const d = maxAbsDiff(got[f], cpuRows[f]);
    return d <= cs[i]!.bound + cc[i]!.bound ? null : `${label} ${f}: |webgpu − cpu| = ${d} over ${cs[i]!.bound + cc[i]!.bound}`;
  }).filter((x) => x !== null);
  expect(vsCpu).toEqual([]);
}

describe('webgpu: fewer queries than keys (SPEC §8)', () => {
  let unavailable: string | null = null;
  let gpu: WebGpuBackend | null = null;
  const cpu = createCpuBackend();
  beforeAll(async () => {
    unavailable = await webgpuUnavailable();
    if (!unavailable) gpu = await createWebGpuBackend();
  });
  afterAll(async () => {
    await gpu?.destroy();
    await cpu.destroy();
  });

  it('declares caps.qkLayout', (t) => {
    if (unavailable) return t.skip(unavailable);
    expect(gpu!.caps.qkLayout).toBe(true);
  });

  const rng = new Rng(20261203);
  const cases = Array.from({ length: 12 }, (_, i) => randomCase(rng, i, ['f32', 'f16', 'bf16']));
  for (const c of cases) {
    it(`random layout: ${c.label}`, async (t) => {
      if (unavailable) return t.skip(unavailable);
      await runCase(gpu!, cpu, c);
    });
  }

  const decode: QKCase[] = [
    { label: 'decode causal', seqlens: [1500, 700, 2100], seqlensQ: [1, 1, 1], Hq: 4, Hkv: 2, D: 64, dtype: 'f32', blockSize: 64, topk: 4, causal: true, seed: 7 },
    { label: 'decode non-causal bf16 MQA', seqlens: [900, 1300], seqlensQ: [1, 1], Hq: 4, Hkv: 1, D: 40, dtype: 'bf16', blockSize: 32, topk: 3, causal: false, seed: 8 },
    { label: 'chunked prefill', seqlens: [1000, 333], seqlensQ: [70, 5], Hq: 2, Hkv: 2, D: 16, dtype: 'f16', blockSize: 16, topk: 5, causal: true, seed: 9 },
  ];
  for (const c of decode) {
    it(`${c.label}: one or a few queries per sequence, many keys`, async (t) => {
      if (unavailable) return t.skip(unavailable);
      await runCase(gpu!, cpu, c);
    });
  }

  it('passes over parts of heads (small partial buffers): f32 windows of Tq rows for out and dq, of Tk rows for dk and dv', async (t) => {
    if (unavailable) return t.skip(unavailable);
    const small = await createWebGpuBackend({ tuning: { partialBytes: 256 * 1024 } });
    try {
      const c: QKCase = { label: 'passes', seqlens: [1000, 500], seqlensQ: [250, 60], Hq: 4, Hkv: 2, D: 64, dtype: 'bf16', blockSize: 64, topk: 4, causal: true, seed: 12 };
      const lim = { maxStorageBufferBindingSize: 2 ** 31 - 4, maxBufferSize: 2 ** 31 - 4 };
      const dims = { T: 310, Tk: 1500, Hq: 4, Hkv: 2, D: 64, dtype: 'bf16' as const };
      expect(forwardPlan(dims, 4, 24, lim, 256 * 1024).passes.some((p) => !p.whole)).toBe(true);
      const bwd = backwardPlan(dims, { topk: 4, blockSize: 64 }, 24, lim, 256 * 1024);
      expect(bwd.passes.some((p) => !p.whole)).toBe(true);
      expect(bwd.bytes['dk, dv windows']).toBe(1500 * 64 * 4); // Tk rows × one kv head per pass
      await runCase(small, cpu, c);
      await runCase(small, cpu, { ...c, label: 'passes, f16 non-causal', dtype: 'f16', causal: false, seqlensQ: [1000, 3], seed: 13 });
    } finally {
      await small.destroy();
    }
  });

  it('a QK layout with equal boundaries is the self-attention call, bitwise', async (t) => {
    if (unavailable) return t.skip(unavailable);
    const c: QKCase = { label: 'equal', seqlens: [300, 77], seqlensQ: [300, 77], Hq: 2, Hkv: 1, D: 16, dtype: 'f32', blockSize: 32, topk: 3, causal: true, seed: 11 };
    const p = makeQkFullProblem(c);
    const b = gpu!;
    const [qt, kt, vt] = [await b.upload(p.q), await b.upload(p.k), await b.upload(p.v)];
    const outs: Float64Array[] = [];
    for (const layout of [p.layout, p.keys]) {
      const r = await b.route(qt, kt, layout, p.cfg);
      const { out, lse } = await b.forward(qt, kt, vt, r, layout, p.cfg);
      outs.push(Float64Array.from(await b.routingIndices(r)), await f64(b, out), await f64(b, lse));
      b.dispose(r, out, lse);
    }
    b.dispose(qt, kt, vt);
    for (let i = 0; i < 3; i++) expect(outs[i]).toEqual(outs[i + 3]);
  });
});
