/**
 * The `qk` step of gpu-check.ts: fewer queries than keys (SPEC §8) on larger problems than the conformance suite's,
 * checked against the backend's own self-attention over the whole key sequences. Per case, with every sequence's
 * query rows its last `nq_i` key positions:
 *  - routing: the QKLayout route gives exactly the self-attention route's indices of those rows;
 *  - forward (both under that routing, given by routingFromIndices): out and lse of those rows;
 *  - backward, self-attention with dOut zero on the rows that are not queries (they then add nothing to dk, dv):
 *    dq of the query rows, dk and dv of every key row (0 for keys no query attends).
 * Generic kernels (fastPaths off) compute each row with the same arithmetic in both layouts: equal bits, zero
 * tolerance. With the tensor-core paths self-attention runs on them and QK on the generic kernels: within a
 * tolerance of the dtype. Cases mix decode (nq = 1), chunks, nq = nk, nq = 0, GQA, f32/f16/bf16, causal or not.
 */
import { type Backend, type DType, type DeviceTensor, type Layout, type QKLayout, Rng, bf16ToF32, f16ToF32, f32ToBf16, f32ToF16, hostTensor } from '@moba/core';

export interface QkCase { name: string; dtype: DType; Hq: number; Hkv: number; D: number; B: number; topk: number; causal: boolean; nk: number[]; nq: number[] }

export const QK_CASES: QkCase[] = [
  { name: 'bf16 GQA 16/4 D128 B128 top4 decode+chunk', dtype: 'bf16', Hq: 16, Hkv: 4, D: 128, B: 128, topk: 4, causal: true, nk: [3000, 1290, 700, 128], nq: [1, 300, 0, 128] },
  { name: 'f16 8/8 D64 B64 top3 chunks', dtype: 'f16', Hq: 8, Hkv: 8, D: 64, B: 64, topk: 3, causal: true, nk: [2049, 777, 64], nq: [512, 1, 17] },
  { name: 'f32 4/2 D96 B32 top6 decode', dtype: 'f32', Hq: 4, Hkv: 2, D: 96, B: 32, topk: 6, causal: true, nk: [1500, 33, 400], nq: [1, 1, 1] },
  { name: 'bf16 4/1 D64 B16 top5 non-causal', dtype: 'bf16', Hq: 4, Hkv: 1, D: 64, B: 16, topk: 5, causal: false, nk: [900, 250], nq: [90, 250] },
];

const bitsToF32 = (dtype: DType, x: number): number => (dtype === 'bf16' ? bf16ToF32(x) : f16ToF32(x));

function random(dtype: DType, n: number, rng: Rng): Float32Array | Uint16Array {
  if (dtype === 'f32') return Float32Array.from({ length: n }, () => rng.normal());
  return Uint16Array.from({ length: n }, () => (dtype === 'bf16' ? f32ToBf16(rng.normal()) : f32ToF16(rng.normal())));
}

function cuOf(lens: number[]): Int32Array {
  const cu = new Int32Array(lens.length + 1);
  lens.forEach((n, i) => { cu[i + 1] = cu[i]! + n; });
  return cu;
}

/** For each query row, its key row (the last nq_i rows of each key sequence). */
function keyRowsOfQueries(cuq: Int32Array, cuk: Int32Array): Int32Array {
  const pos = new Int32Array(cuq[cuq.length - 1]!);
  for (let s = 0; s + 1 < cuq.length; s++) for (let t = cuq[s]!; t < cuq[s + 1]!; t++) pos[t] = t + cuk[s + 1]! - cuq[s + 1]!;
  return pos;
}

/** Rows `rows` (each `width` elements) of `src`. */
function gather<A extends Float32Array | Uint16Array | Int32Array>(src: A, rows: Int32Array, width: number): A {
  const out = new (src.constructor as new (n: number) => A)(rows.length * width);
  rows.forEach((r, i) => out.set(src.subarray(r * width, (r + 1) * width), i * width));
  return out;
}

async function f32Of(b: Backend, t: DeviceTensor): Promise<Float32Array> {
  const h = await b.download(t);
  return h.data instanceof Float32Array ? h.data : Float32Array.from(h.data as Uint16Array, (x) => bitsToF32(t.dtype, x));
}

/** Largest |a − b| over max(1, max |b|); NaN counts as a mismatch (Infinity); -inf = -inf is 0. */
function relDiff(a: Float32Array, b: Float32Array): number {
  let d = 0, m = 1;
  for (let i = 0; i < a.length; i++) {
    if (a[i] === b[i]) continue;
    const e = Math.abs(a[i]! - b[i]!);
    d = Math.max(d, Number.isNaN(e) ? Infinity : e);
  }
  for (const x of b) if (Number.isFinite(x)) m = Math.max(m, Math.abs(x));
  return d / m;
}

/** One case on one backend: the largest relative differences QK vs self-attention, and the routing rows that differ. */
async function runCase(b: Backend, c: QkCase, seed: number): Promise<Record<string, number>> {
  const rng = new Rng(seed);
  const cuk = cuOf(c.nk), cuq = cuOf(c.nq);
  const Tk = cuk[cuk.length - 1]!, Tq = cuq[cuq.length - 1]!;
  const pos = keyRowsOfQueries(cuq, cuk);
  const cfg = { blockSize: c.B, topk: c.topk, causal: c.causal };
  const self: Layout = { cuSeqlens: cuk };
  const qk: QKLayout = { cuSeqlensQ: cuq, cuSeqlensK: cuk };
  const qFull = random(c.dtype, Tk * c.Hq * c.D, rng);
  const dOutFull = random(c.dtype, Tk * c.Hq * c.D, rng);
  const isQuery = new Uint8Array(Tk);
  for (const p of pos) isQuery[p] = 1;
  for (let t = 0; t < Tk; t++) if (!isQuery[t]) dOutFull.fill(0, t * c.Hq * c.D, (t + 1) * c.Hq * c.D);
  const up = (shape: number[], data: Float32Array | Uint16Array) => b.upload(hostTensor(c.dtype, shape, data));
  const q = await up([Tk, c.Hq, c.D], qFull), dOut = await up([Tk, c.Hq, c.D], dOutFull);
  const k = await up([Tk, c.Hkv, c.D], random(c.dtype, Tk * c.Hkv * c.D, rng)), v = await up([Tk, c.Hkv, c.D], random(c.dtype, Tk * c.Hkv * c.D, rng));
  const qq = await up([Tq, c.Hq, c.D], gather(qFull, pos, c.Hq * c.D)), dOutQ = await up([Tq, c.Hq, c.D], gather(dOutFull, pos, c.Hq * c.D));
  const rFull = await b.route(q, k, self, cfg);
  const rQk = await b.route(qq, k, qk, cfg);
  const want = gather(await b.routingIndices(rFull), pos, c.Hq * c.topk);
  const got = await b.routingIndices(rQk);
  let routeRows = 0;
  for (let r = 0; r < Tq * c.Hq; r++) if (got.subarray(r * c.topk, (r + 1) * c.topk).some((x, i) => x !== want[r * c.topk + i])) routeRows++;
  const rSame = await b.routingFromIndices(want, { T: Tq, Hq: c.Hq }, qk, cfg);
  const fFull = await b.forward(q, k, v, rFull, self, cfg);
  const fQk = await b.forward(qq, k, v, rSame, qk, cfg);
  const gFull = await b.backward(q, k, v, fFull.out, fFull.lse, dOut, rFull, self, cfg);
  const outQ = await up([Tq, c.Hq, c.D], gather((await b.download(fFull.out)).data as Float32Array | Uint16Array, pos, c.Hq * c.D));
  const lseQ = await b.upload(hostTensor('f32', [Tq, c.Hq], gather((await b.download(fFull.lse)).data as Float32Array, pos, c.Hq)));
  // the QK backward from the self-attention forward's rows (so that both backwards see the same out and lse)
  const gQk = await b.backward(qq, k, v, outQ, lseQ, dOutQ, rSame, qk, cfg);
  const res = {
    routeRowsDiffer: routeRows,
    out: relDiff(await f32Of(b, fQk.out), gather(await f32Of(b, fFull.out), pos, c.Hq * c.D)),
    lse: relDiff(await f32Of(b, fQk.lse), gather(await f32Of(b, fFull.lse), pos, c.Hq)),
    dq: relDiff(await f32Of(b, gQk.dq), gather(await f32Of(b, gFull.dq), pos, c.Hq * c.D)),
    dk: relDiff(await f32Of(b, gQk.dk), await f32Of(b, gFull.dk)),
    dv: relDiff(await f32Of(b, gQk.dv), await f32Of(b, gFull.dv)),
  };
  b.dispose(q, dOut, k, v, qq, dOutQ, rFull, rQk, rSame, fFull.out, fFull.lse, fQk.out, fQk.lse, gFull.dq, gFull.dk, gFull.dv, outQ, lseQ, gQk.dq, gQk.dk, gQk.dv);
  return res;
}

/** Tolerance of QK (generic kernels) against self-attention on the tensor-core paths. */
const TOL: Record<DType, number> = { f32: 1e-5, f16: 5e-3, bf16: 3e-2 };

/** Runs every case on the default backend and on one with the generic kernels only (zero tolerance there). */
export async function qkStep(fast: Backend, generic: Backend, log: (s: string) => void, list: readonly QkCase[] = QK_CASES): Promise<{ ok: boolean; cases: Record<string, unknown>[] }> {
  const cases: Record<string, unknown>[] = [];
  let ok = true;
  for (const [i, c] of list.entries()) {
    for (const [which, b] of [['generic', generic], ['default', fast]] as const) {
      const r = await runCase(b, c, 1000 + i);
      const tol = which === 'generic' ? 0 : TOL[c.dtype];
      const pass = r.routeRowsDiffer === 0 && ['out', 'lse', 'dq', 'dk', 'dv'].every((n) => r[n]! <= tol);
      ok &&= pass;
      log(`  ${pass ? '✓' : '✗'} ${c.name} (${which}, tol ${tol}): routing rows differing ${r.routeRowsDiffer}; out ${r.out!.toExponential(2)} lse ${r.lse!.toExponential(2)} dq ${r.dq!.toExponential(2)} dk ${r.dk!.toExponential(2)} dv ${r.dv!.toExponential(2)}`);
      cases.push({ case: c.name, kernels: which, ok: pass, ...r });
    }
  }
  return { ok, cases };
}
