/**
 * Real backends with one injected fault each, to prove the conformance suite fails on them: a forward
 * that drops the causal mask or the softmax scale, a router that mis-routes ~1% of rows at random
 * (the kind of fault a racy top-k kernel produces), a backward with dk negated under GQA, and a backend that repairs a bad
 * topk instead of rejecting it. The base backend is the CPU backend when it exists, else the reference one.
 */
import {
  type Backend, type DeviceTensor, type Layout, type MobaConfig, type Routing, fromFloat, resolveConfig, sequences, toFloat64, wrapBackend as wrap,
} from '@moba/core';
import { referenceForward } from '@moba/core/reference';
import { createReferenceBackend } from '../src/reference-backend.js';

/** Creates the base backend: `@moba/backend-cpu` if it is importable and exports `createCpuBackend`, else the reference. */
export async function baseFactory(): Promise<{ label: string; create: () => Backend }> {
  const pkg = '@moba/backend-cpu';
  try {
    const mod = (await import(pkg)) as { createCpuBackend?: (opts?: object) => Backend };
    if (typeof mod.createCpuBackend === 'function') {
      const create = mod.createCpuBackend;
      return { label: 'cpu', create: () => create() };
    }
  } catch {
    // the CPU backend is not there (yet): fall back to the reference backend
  }
  return { label: 'reference', create: () => createReferenceBackend() };
}

/** (a) A forward that lets every query see its whole own block (the causal mask dropped). */
export function dropCausalMask(inner: Backend): Backend {
  return wrap(inner, {
    async forward(q, k, v, r, layout, cfg) {
      const good = await inner.forward(q, k, v, r, layout, cfg); // keeps the inner validation
      inner.dispose(good.out, good.lse);
      const [T, Hq, D] = q.shape as [number, number, number];
      const rc = resolveConfig(cfg, D);
      const f64 = async (t: DeviceTensor): Promise<Float64Array> => toFloat64(await inner.download(t));
      const res = referenceForward(await f64(q), await f64(k), await f64(v), await inner.routingIndices(r),
        { T, Hq, Hkv: k.shape[1]!, D, dtype: q.dtype }, layout, { ...rc, causal: false });
      return { out: await inner.upload(fromFloat(res.out, q.dtype, q.shape)), lse: await inner.upload(fromFloat(res.lse, 'f32', [T, Hq])) };
    },
  });
}

/** (a') A forward that forgets the softmax scale (uses 1). */
export function dropScale(inner: Backend): Backend {
  return wrap(inner, { forward: (q, k, v, r, layout, cfg) => inner.forward(q, k, v, r, layout, { ...cfg, scale: 1 }) });
}

/**
 * (b) A router that, like FlashMoBA's racy top-k, replaces one selected past block by an unselected
 * one in about `rate` of the rows, differently on every call.
 */
export function racyRouter(inner: Backend, rate = 0.01): Backend {
  return wrap(inner, {
    async route(q, k, layout: Layout, cfg: MobaConfig): Promise<Routing> {
      const r = await inner.route(q, k, layout, cfg);
      const idx = await inner.routingIndices(r);
      const [T, Hq] = q.shape as [number, number];
      const K = r.topk;
      const seqs = sequences(layout, r.blockSize);
      for (let t = 0; t < T; t++) {
        const cb = Math.floor((t - seqs.seqs[seqs.seqOf[t]!]!.start) / r.blockSize);
        for (let h = 0; h < Hq; h++) {
          if (Math.random() >= rate) continue;
          const row = Array.from(idx.subarray((t * Hq + h) * K, (t * Hq + h + 1) * K)).filter((j) => j >= 0);
          const past = row.filter((j) => j !== cb);
          const free = Array.from({ length: cb }, (_, j) => j).filter((j) => !row.includes(j));
          if (past.length === 0 || free.length === 0) continue;
          row[row.indexOf(past[Math.floor(Math.random() * past.length)]!)] = free[Math.floor(Math.random() * free.length)]!;
          row.sort((a, b) => a - b).forEach((j, i) => (idx[(t * Hq + h) * K + i] = j));
        }
      }
      inner.dispose(r);
      return inner.routingFromIndices(idx, { T, Hq }, layout, cfg);
    },
  });
}

/** (c) A backward whose dk has the wrong sign whenever Hq ≠ Hkv (GQA/MQA). */
export function gqaDkSign(inner: Backend): Backend {
  return wrap(inner, {
    async backward(q, k, v, o, lse, g, r, layout, cfg) {
      const res = await inner.backward(q, k, v, o, lse, g, r, layout, cfg);
      if (q.shape[1] === k.shape[1]) return res;
      const dk = await inner.download(res.dk);
      inner.dispose(res.dk);
      const neg = toFloat64(dk).map((x) => -x);
      return { ...res, dk: await inner.upload(fromFloat(neg, dk.dtype, dk.shape)) };
    },
  });
}

/** (d) A backend that "repairs" an invalid topk (0, 1.5, NaN, -1) to an integer >= 1 instead of rejecting it. */
export function lenientTopk(inner: Backend): Backend {
  const fix = (cfg: MobaConfig): MobaConfig =>
    Number.isInteger(cfg?.topk) && cfg.topk >= 1 ? cfg : { ...cfg, topk: Math.max(1, Math.floor(cfg.topk) || 1) };
  return wrap(inner, {
    route: (q, k, l, c) => inner.route(q, k, l, fix(c)),
    routingFromIndices: (i, s, l, c) => inner.routingFromIndices(i, s, l, fix(c)),
    forward: (q, k, v, r, l, c) => inner.forward(q, k, v, r, l, fix(c)),
    backward: (q, k, v, o, lse, g, r, l, c) => inner.backward(q, k, v, o, lse, g, r, l, fix(c)),
  });
}
