/**
 * Real backends (the testkit's reference backend) with one fault in fewer queries than keys (SPEC §8), to prove
 * the qk properties fail on them: a backend that places the queries of a sequence somewhere other than its last
 * nq key positions (top-left aligned: query a at key position a; or every query at the last key), for route and
 * forward alike; and one that refuses a QK layout before validating it (E_UNSUPPORTED where nq > nk is E_RANGE).
 * Each builds the self-attention problem of the whole key sequence with the query rows at the faulty positions,
 * runs the inner backend on it and returns those rows.
 */
import {
  type AttentionLayout, type Backend, type DeviceTensor, type MobaConfig, type QKLayout, type Routing, MobaError, fromFloat, isQKLayout,
  toFloat64, wrapBackend,
} from '@moba/core';

/** Key position (sequence-local) of query `a` of a sequence with `nq` queries and `nk` keys. */
export type Placement = (a: number, nq: number, nk: number) => number;
export const topLeft: Placement = (a) => a;
export const allAtLast: Placement = (_a, _nq, nk) => nk - 1;

/** Global key row of every query row under `place`. */
function positions(l: QKLayout, place: Placement): Int32Array {
  const cq = l.cuSeqlensQ;
  const ck = l.cuSeqlensK;
  const pos = new Int32Array(cq[cq.length - 1]!);
  for (let b = 0; b + 1 < cq.length; b++) {
    const nq = cq[b + 1]! - cq[b]!;
    for (let a = 0; a < nq; a++) pos[cq[b]! + a] = ck[b]! + place(a, nq, ck[b + 1]! - ck[b]!);
  }
  return pos;
}

/** `rows [Tq, H, E]` scattered to rows `pos` of a `[Tk, H, E]` array (`fill` elsewhere). */
function scatter(src: Float64Array | Int32Array, pos: Int32Array, Tk: number, row: number, fill: number): Float64Array {
  const out = new Float64Array(Tk * row).fill(fill);
  pos.forEach((p, t) => out.set(src.subarray(t * row, (t + 1) * row), p * row));
  return out;
}
function gather(src: Float64Array | Int32Array, pos: Int32Array, row: number): Float64Array {
  const out = new Float64Array(pos.length * row);
  pos.forEach((p, t) => out.set(src.subarray(p * row, (p + 1) * row), t * row));
  return out;
}

/** A backend whose route (unless `forwardOnly`) and forward put the query rows at `place` instead of bottom-right (SPEC §8). */
export function misaligned(inner: Backend, place: Placement, forwardOnly = false): Backend {
  const real = (l: AttentionLayout): l is QKLayout => isQKLayout(l) && l.cuSeqlensQ.some((x, i) => x !== l.cuSeqlensK[i]);
  const selfQ = async (q: DeviceTensor, l: QKLayout, Tk: number): Promise<{ qFull: DeviceTensor; pos: Int32Array }> => {
    const [, Hq, D] = q.shape as [number, number, number];
    const pos = positions(l, place);
    const full = scatter(toFloat64(await inner.download(q)), pos, Tk, Hq * D, 0);
    return { qFull: await inner.upload(fromFloat(full, q.dtype, [Tk, Hq, D])), pos };
  };
  return wrapBackend(inner, {
    async route(q, k, layout, cfg: MobaConfig): Promise<Routing> {
      if (!real(layout) || forwardOnly) return inner.route(q, k, layout, cfg);
      await inner.route(q, k, layout, cfg).then((r) => inner.dispose(r)); // keeps the inner validation
      const Tk = k.shape[0]!;
      const { qFull, pos } = await selfQ(q, layout, Tk);
      const rFull = await inner.route(qFull, k, { cuSeqlens: layout.cuSeqlensK }, cfg);
      const K = rFull.topk;
      const Hq = q.shape[1]!;
      const idx = Int32Array.from(gather(await inner.routingIndices(rFull), pos, Hq * K));
      inner.dispose(qFull, rFull);
      return inner.routingFromIndices(idx, { T: pos.length, Hq }, layout, cfg);
    },
    async forward(q, k, v, r, layout, cfg) {
      if (!real(layout)) return inner.forward(q, k, v, r, layout, cfg);
      const good = await inner.forward(q, k, v, r, layout, cfg); // keeps the inner validation
      inner.dispose(good.out, good.lse);
      const Tk = k.shape[0]!;
      const [Tq, Hq, D] = q.shape as [number, number, number];
      const { qFull, pos } = await selfQ(q, layout, Tk);
      const K = r.topk;
      const idx = Int32Array.from(scatter(await inner.routingIndices(r), pos, Tk, Hq * K, -1));
      const keys = { cuSeqlens: layout.cuSeqlensK };
      let rFull: Routing;
      try {
        rFull = await inner.routingFromIndices(idx, { T: Tk, Hq }, keys, cfg);
      } catch {
        // a block the misplaced query may not see: attend its own block only, as a misaligned kernel would
        const own = await inner.route(qFull, k, keys, { ...cfg, topk: K });
        rFull = own;
      }
      const f = await inner.forward(qFull, k, v, rFull, keys, cfg);
      const out = gather(toFloat64(await inner.download(f.out)), pos, Hq * D);
      const lse = gather(toFloat64(await inner.download(f.lse)), pos, Hq);
      inner.dispose(qFull, rFull, f.out, f.lse);
      return { out: await inner.upload(fromFloat(out, q.dtype, [Tq, Hq, D])), lse: await inner.upload(fromFloat(lse, 'f32', [Tq, Hq])) };
    },
  });
}

/** A backend that refuses any QK layout with distinct boundaries as E_UNSUPPORTED before validating it. */
export function unsupportedFirst(inner: Backend): Backend {
  const refuse = (l: AttentionLayout): void => {
    if (isQKLayout(l) && l.cuSeqlensQ?.length && l.cuSeqlensQ.some((x, i) => x !== l.cuSeqlensK?.[i])) {
      throw new MobaError('E_UNSUPPORTED', 'fewer queries than keys is not supported', 'cuSeqlensQ');
    }
  };
  return wrapBackend(inner, {
    route: async (q, k, l, c) => (refuse(l), inner.route(q, k, l, c)),
    routingFromIndices: async (i, s, l, c) => (refuse(l), inner.routingFromIndices(i, s, l, c)),
    forward: async (q, k, v, r, l, c) => (refuse(l), inner.forward(q, k, v, r, l, c)),
  });
}
