/**
 * The host model the KV cache tests check the WebGPU cache against: each sequence's raw keys and values as
 * appended (f64 of the dtype's values), and the float64 reference of SPEC §6 (kconv over the whole key sequence),
 * §2 (centroids) and §8 (route and forward with a QKLayout) for one attend, within the tolerance policy.
 */
import {
  type Backend, type CacheContents, type DType, type HostTensor, type KVCache, type ToleranceCheck,
  checkTolerance, dtypeEps, fromFloat, roundTo, toFloat64,
} from '@moba/core';
import { referenceForward, referenceKconv, referenceRoute } from '@moba/core/reference';

/** A seeded generator (mulberry32) with normal draws. */
export class Rng {
  #s: number;
  constructor(seed: number) {
    this.#s = seed >>> 0;
  }
  next(): number {
    let t = (this.#s = (this.#s + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.next() * (hi - lo + 1));
  }
  normal(): number {
    return Math.sqrt(-2 * Math.log(1 - this.next())) * Math.cos(2 * Math.PI * this.next());
  }
  tensor(dtype: DType, shape: number[], scale = 1): HostTensor {
    const n = shape.reduce((a, b) => a * b, 1);
    return fromFloat(Array.from({ length: n }, () => scale * this.normal()), dtype, shape);
  }
}

export interface CacheSetup {
  readonly Hkv: number;
  readonly D: number;
  readonly dtype: DType;
  readonly B: number;
  /** kconv width, 0 for none. */
  readonly W: number;
  /** The weight [C, W] (f64 of its f32 values). */
  readonly w: Float64Array;
}

/** One sequence as the host sees it. */
export class SeqModel {
  k: number[] = [];
  v: number[] = [];
  constructor(readonly s: CacheSetup) {}
  get length(): number {
    return this.k.length / (this.s.Hkv * this.s.D);
  }
  add(k: Float64Array, v: Float64Array): void {
    for (let i = 0; i < k.length; i += 8192) this.k.push(...k.subarray(i, i + 8192)); // long sequences: no huge spread
    for (let i = 0; i < v.length; i += 8192) this.v.push(...v.subarray(i, i + 8192));
  }
  clone(): SeqModel {
    const m = new SeqModel(this.s);
    m.k = this.k.slice();
    m.v = this.v.slice();
    return m;
  }
  /** Keys after kconv (f64 over the whole sequence), rounded to the dtype as the cache stores them. */
  convolved(): Float64Array {
    const { Hkv, D, W, w, dtype } = this.s;
    const k = Float64Array.from(this.k);
    if (W === 0) return k;
    const kc = referenceKconv(k, w, Hkv * D, W, { cuSeqlens: Int32Array.from([0, this.length]) });
    return kc.map((x) => (dtype === 'f32' ? Math.fround(x) : roundTo(dtype, x)));
  }
}

/** Tolerance checks of one attend's out and lse against the f64 reference of §8 (keys convolved per sequence). */
export function referenceChecks(
  label: string, seqs: readonly SeqModel[], nq: readonly number[], q: HostTensor, got: { out: Float64Array; lse: Float64Array },
  cfg: { topk: number; causal: boolean; scale?: number },
): ToleranceCheck[] {
  const { Hkv, D, dtype, B } = seqs[0]!.s;
  const Hq = q.shape[1]!;
  const cuQ = new Int32Array(seqs.length + 1);
  const cuK = new Int32Array(seqs.length + 1);
  seqs.forEach((s, b) => {
    cuQ[b + 1] = cuQ[b]! + nq[b]!;
    cuK[b + 1] = cuK[b]! + s.length;
  });
  const k = new Float64Array(cuK[seqs.length]! * Hkv * D);
  const v = new Float64Array(k.length);
  seqs.forEach((s, b) => {
    k.set(s.convolved(), cuK[b]! * Hkv * D);
    v.set(s.v, cuK[b]! * Hkv * D);
  });
  const q64 = toFloat64(q);
  const Tq = q.shape[0]!;
  const shape = { T: Tq, Tk: cuK[seqs.length]!, Hq, Hkv, D, dtype };
  const layout = { cuSeqlensQ: cuQ, cuSeqlensK: cuK };
  const rc = { blockSize: B, topk: cfg.topk, causal: cfg.causal, scale: cfg.scale ?? 1 / Math.sqrt(D) };
  const idx = referenceRoute(q64, k, shape, layout, rc);
  const ref = referenceForward(q64, k, v, idx, shape, layout, rc);
  const cal = referenceForward(q64, k, v, idx, shape, layout, rc, Math.fround);
  const calOut = cal.out.map((x) => (dtype === 'f32' ? Math.fround(x) : roundTo(dtype, x)));
  return [
    checkTolerance(`${label} out`, got.out, ref.out, calOut, { kind: 'forward', dtype, shape: [Tq, Hq, D] }),
    checkTolerance(`${label} lse`, got.lse, ref.lse, cal.lse.map(Math.fround), { kind: 'forward', dtype: 'f32', shape: [Tq, Hq] }),
  ];
}

/** What is wrong with `c` (a cache's read of sequence `m`) against a recompute; empty when nothing. */
export function contentErrors(c: CacheContents, m: SeqModel): string[] {
  const { Hkv, D, B, W, dtype } = m.s;
  const C = Hkv * D;
  const errs: string[] = [];
  const L = m.length;
  if (c.length !== L) errs.push(`length ${c.length}, expected ${L}`);
  if (c.pages.length !== Math.ceil(L / B)) errs.push(`${c.pages.length} pages, expected ${Math.ceil(L / B)}`);
  const kc = m.convolved();
  const k = toFloat64(c.k);
  const tol = (dtype === 'f32' ? 16 : 2) * dtypeEps(dtype); // f32: the conv's f32 sums; 16-bit: one rounding step
  for (let i = 0; i < kc.length; i++) {
    if (!(Math.abs(k[i]! - kc[i]!) <= tol * Math.max(1, Math.abs(kc[i]!)))) { errs.push(`k'[${i}] = ${k[i]}, expected ${kc[i]}`); break; }
  }
  const v = toFloat64(c.v);
  if (v.some((x, i) => x !== m.v[i])) errs.push('v differs from what was appended');
  const close = (a: number, b: number): boolean => Math.abs(a - b) <= 1e-5 * Math.max(1, Math.abs(b));
  const sumOf = (j: number, n: number, ch: number): number => {
    let s = 0;
    for (let p = j * B; p < j * B + n; p++) s += k[p * C + ch]!;
    return s;
  };
  const full = Math.floor(L / B);
  for (let j = 0; j < full && errs.length === 0; j++) {
    for (let ch = 0; ch < C; ch++) {
      if (!close(c.centroids.data[j * C + ch]!, sumOf(j, B, ch) / B)) { errs.push(`centroid ${j} channel ${ch} = ${c.centroids.data[j * C + ch]}, expected ${sumOf(j, B, ch) / B}`); break; }
    }
  }
  if (c.openCount !== L % B) errs.push(`openCount ${c.openCount}, expected ${L % B}`);
  for (let ch = 0; ch < C; ch++) {
    if (!close(c.openSum.data[ch]!, sumOf(full, L % B, ch))) { errs.push(`openSum[${ch}] = ${c.openSum.data[ch]}, expected ${sumOf(full, L % B, ch)}`); break; }
  }
  const S = Math.max(0, W - 1);
  if (c.kconvState.shape[0] !== S) errs.push(`kconvState has ${c.kconvState.shape[0]} rows, expected ${S}`);
  for (let i = 0; i < S * C; i++) {
    const p = L - S + Math.floor(i / C);
    const want = p < 0 ? 0 : m.k[p * C + (i % C)]!;
    if (c.kconvState.data[i] !== want) { errs.push(`kconvState[${i}] = ${c.kconvState.data[i]}, expected ${want}`); break; }
  }
  return errs;
}

/** Appends random tokens `counts[b]` to each cache sequence `ids[b]` and to its model. */
export async function appendRandom(backend: Backend, cache: KVCache, rng: Rng, ids: readonly number[], models: readonly SeqModel[], counts: readonly number[]): Promise<void> {
  const { Hkv, D, dtype } = models[0]!.s;
  const T = counts.reduce((a, b) => a + b, 0);
  const kh = rng.tensor(dtype, [T, Hkv, D]);
  const vh = rng.tensor(dtype, [T, Hkv, D]);
  const cu = new Int32Array(counts.length + 1);
  counts.forEach((n, b) => (cu[b + 1] = cu[b]! + n));
  const [k64, v64] = [toFloat64(kh), toFloat64(vh)];
  const k = await backend.upload(kh);
  const v = await backend.upload(vh);
  try {
    await cache.append(ids, k, v, cu);
  } finally {
    backend.dispose(k, v);
  }
  const C = Hkv * D;
  models.forEach((m, b) => m.add(k64.subarray(cu[b]! * C, cu[b + 1]! * C), v64.subarray(cu[b]! * C, cu[b + 1]! * C)));
}

/** Raw bits of a host tensor's data (for bitwise comparisons). */
export function bits(t: HostTensor, from = 0, to = t.data.length): Uint8Array {
  const d = t.data;
  return new Uint8Array(d.buffer, d.byteOffset + from * d.BYTES_PER_ELEMENT, (to - from) * d.BYTES_PER_ELEMENT).slice();
}
