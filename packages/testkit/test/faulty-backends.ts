/**
 * Real backends with one injected fault each, to prove the conformance suite fails on them: a forward
 * that drops the causal mask or the softmax scale, a router that mis-routes ~1% of rows at random
 * (the kind of fault a racy top-k kernel produces), a backward with dk negated under GQA, a backend that repairs a bad
 * topk instead of rejecting it, and three faults hiding at the edges of the declared caps: dv wrong only for GQA
 * groups of 4 with Hkv >= 2, a forward that ignores blocks past the 64th of a sequence, and dq that ignores the
 * 7th and later selected blocks. The base backend is the CPU backend when it exists, else the reference one.
 */
import {
  type Backend, type DeviceTensor, type AttentionLayout, type Layout, type MobaConfig, type Routing, fromFloat, resolveConfig, sequences, toFloat64, wrapBackend as wrap,
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

/** A routing with every row's selection filtered by `keep(block, slot)` (still ascending and -1 padded). */
async function filteredRouting(inner: Backend, r: Routing, layout: AttentionLayout, cfg: MobaConfig, keep: (j: number, slot: number) => boolean): Promise<Routing> {
  const idx = await inner.routingIndices(r);
  const K = r.topk;
  const out = new Int32Array(idx.length).fill(-1);
  for (let row = 0; row < r.T * r.Hq; row++) {
    let n = 0;
    for (let i = 0; i < K; i++) {
      const j = idx[row * K + i]!;
      if (j >= 0 && keep(j, i)) out[row * K + n++] = j;
    }
  }
  return inner.routingFromIndices(out, { T: r.T, Hq: r.Hq }, layout, cfg);
}

/**
 * (e) dv wrong only for GQA groups of 4 with Hkv >= 2 (a group-4 fast path whose reduction over the group
 * stops one query head short): dv misses the last query head of every group.
 */
export function gqa4DvShort(inner: Backend): Backend {
  return wrap(inner, {
    async backward(q, k, v, o, lse, g, r, layout, cfg) {
      const res = await inner.backward(q, k, v, o, lse, g, r, layout, cfg);
      const [Hq, Hkv] = [q.shape[1]!, k.shape[1]!];
      if (Hq / Hkv !== 4 || Hkv < 2) return res;
      const host = await inner.download(g);
      const D = g.shape[2]!;
      const f = toFloat64(host);
      for (let row = 0; row < f.length / D; row++) if (row % Hq % 4 === 3) f.fill(0, row * D, (row + 1) * D);
      const g2 = await inner.upload(fromFloat(f, host.dtype, host.shape));
      const short = await inner.backward(q, k, v, o, lse, g2, r, layout, cfg);
      inner.dispose(g2, short.dq, short.dk, res.dv);
      return { ...res, dv: short.dv };
    },
  });
}

/** (f) A forward that drops every block past the 64th of a sequence (a 64-entry block table): only sequences of > 64 blocks. */
export function blockTable64(inner: Backend): Backend {
  return wrap(inner, {
    async forward(q, k, v, r, layout, cfg) {
      const good = await inner.forward(q, k, v, r, layout, cfg); // keeps the inner validation
      inner.dispose(good.out, good.lse);
      const r64 = await filteredRouting(inner, r, layout, cfg, (j) => j < 64);
      try {
        return await inner.forward(q, k, v, r64, layout, cfg);
      } finally {
        inner.dispose(r64);
      }
    },
  });
}

/** (g) dq that ignores the 7th and later selected blocks of a row (a 6-slot accumulator): only when topk >= 7. */
export function dqSixSlots(inner: Backend): Backend {
  return wrap(inner, {
    async backward(q, k, v, o, lse, g, r, layout, cfg) {
      const res = await inner.backward(q, k, v, o, lse, g, r, layout, cfg);
      if (r.topk < 7) return res;
      const r6 = await filteredRouting(inner, r, layout, cfg, (_, slot) => slot < 6);
      const short = await inner.backward(q, k, v, o, lse, g, r6, layout, cfg);
      inner.dispose(r6, short.dk, short.dv, res.dq);
      return { ...res, dq: short.dq };
    },
  });
}
