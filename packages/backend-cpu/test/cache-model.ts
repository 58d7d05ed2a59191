/**
 * Test helpers for the KV cache: a host-side record of every sequence's raw keys and values (what was
 * appended), the float64 recompute of what the cache must hold (referenceKconv over the whole sequence,
 * block sums and centroids) and the reference attend (referenceRoute + referenceForward on a QK layout, with the
 * f32 calibration run of the tolerance policy).
 */
import {
  type CacheContents, type DType, type HostTensor, type KVCache, Rng, type ToleranceCheck, checkTolerance, fromFloat, roundTo, toFloat64,
} from '@moba/core';
import { referenceForward, referenceKconv, referenceRoute } from '@moba/core/reference';
import { type CpuBackend, createCpuBackend } from '../src/index.js';

/** Random values exact in `dtype`, as a host tensor `[T, H, D]`. */
export function randomTensor(rng: Rng, dtype: DType, T: number, H: number, D: number, std = 1): HostTensor {
  return fromFloat(rng.normals(T * H * D, std), dtype, [T, H, D]);
}

/** `true` when two typed arrays are bitwise equal. */
export function sameBits(a: ArrayBufferView, b: ArrayBufferView): boolean {
  if (a.byteLength !== b.byteLength) return false;
  const x = new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
  const y = new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
  return x.every((v, i) => v === y[i]);
}

export interface ModelOptions {
  readonly Hkv: number;
  readonly D: number;
  readonly dtype: DType;
  readonly blockSize: number;
  /** kconv weight `[Hkv·D, W]` values (exact in `weightDtype`), or null. */
  readonly weight: Float64Array | null;
  readonly W: number;
}

/** What a cache holds, recomputed in f64 from the appended raw keys. */
export interface Expected {
  readonly k: Float64Array; // [n, Hkv, D] after kconv, rounded to the dtype
  readonly kCal: Float64Array; // the same with f32 intermediates (calibration)
  readonly state: Float64Array; // [W − 1, Hkv, D]
}

/** The host-side record of a cache's sequences: raw keys and values as appended. */
export class CacheModel {
  readonly raw = new Map<number, { k: number[]; v: number[] }>();
  constructor(readonly o: ModelOptions) {}

  get C(): number {
    return this.o.Hkv * this.o.D;
  }

  add(seq: number, k: Float64Array, v: Float64Array): void {
    const r = this.raw.get(seq) ?? { k: [], v: [] };
    for (const x of k) r.k.push(x);
    for (const x of v) r.v.push(x);
    this.raw.set(seq, r);
  }

  fork(src: number, dst: number): void {
    const r = this.raw.get(src) ?? { k: [], v: [] };
    this.raw.set(dst, { k: [...r.k], v: [...r.v] });
  }

  length(seq: number): number {
    return (this.raw.get(seq)?.k.length ?? 0) / this.C;
  }

  expected(seq: number): Expected {
    const { dtype, W, weight } = this.o;
    const C = this.C;
    const k = Float64Array.from(this.raw.get(seq)?.k ?? []);
    const n = k.length / C;
    const layout = { cuSeqlens: Int32Array.of(0, n) };
    const conv = (round?: (x: number) => number): Float64Array =>
      weight ? referenceKconv(k, weight, C, W, layout, round).map((x) => roundTo(dtype, x)) : k;
    const state = new Float64Array(Math.max(W - 1, 0) * C);
    for (let i = 0; i < W - 1; i++) {
      const p = n - (W - 1) + i;
      if (p >= 0) state.set(k.subarray(p * C, (p + 1) * C), i * C);
    }
    return { k: conv(), kCal: conv(Math.fround), state };
  }
}

/** f64 block sums `[nBlocks, C]` of keys `[n, C]` (the last one partial). */
export function blockSums(k: ArrayLike<number>, n: number, C: number, B: number): Float64Array {
  const nb = Math.ceil(n / B);
  const s = new Float64Array(nb * C);
  for (let p = 0; p < n; p++) for (let c = 0; c < C; c++) s[Math.floor(p / B) * C + c]! += k[p * C + c]!;
  return s;
}

/** Checks a cache's contents against the recompute; returns failure messages (empty: all good). */
export async function contentErrors(cache: KVCache, model: CacheModel, seq: number): Promise<string[]> {
  const got = await cache.read(seq);
  const exp = model.expected(seq);
  const { dtype, blockSize: B, W } = model.o;
  const C = model.C;
  const n = model.length(seq);
  const errors: string[] = [];
  if (got.length !== n || got.pages.length !== Math.ceil(n / B)) errors.push(`seq ${seq}: length ${got.length}, pages ${got.pages.length}; expected ${n}`);
  const k = toFloat64(got.k);
  const ck = checkTolerance(`seq ${seq} k`, k, exp.k, exp.kCal, { kind: 'forward', dtype, shape: [n, C] });
  if (!ck.ok) errors.push(ck.message);
  const v = toFloat64(got.v);
  if (!v.every((x, i) => Object.is(x, model.raw.get(seq)!.v[i]))) errors.push(`seq ${seq}: values differ from the appended ones`);
  // the cache's f32 sums are of its own keys: compare with f64 sums of those, within B f32 roundings
  const sums = blockSums(k, n, C, B);
  const full = Math.floor(n / B);
  const mag = k.reduce((m, x) => Math.max(m, Math.abs(x)), 1);
  const bound = (B + 2) * 2 ** -23 * mag * B;
  const cent = got.centroids.data;
  for (let i = 0; i < full * C; i++) {
    if (!(Math.abs(cent[i]! - sums[i]! / B) <= bound / B)) { errors.push(`seq ${seq}: centroid [${Math.floor(i / C)}, ${i % C}] = ${cent[i]}, expected ${sums[i]! / B}`); break; }
  }
  const open = got.openSum.data;
  for (let c = 0; c < C; c++) {
    const e = got.openCount > 0 ? sums[full * C + c]! : 0;
    if (!(Math.abs(open[c]! - e) <= bound)) { errors.push(`seq ${seq}: open sum [${c}] = ${open[c]}, expected ${e}`); break; }
  }
  if (got.openCount !== n % B) errors.push(`seq ${seq}: openCount ${got.openCount}, expected ${n % B}`);
  const st = got.kconvState;
  if (st.shape[0] !== Math.max(W - 1, 0) || !Array.from(st.data).every((x, i) => x === exp.state[i])) errors.push(`seq ${seq}: kconv state differs`);
  return errors;
}

/** Reference attend of `seqs` with queries `q [Tq, Hq, D]` (`cuQ`), on the keys the cache holds (read()). */
export async function referenceAttend(
  cache: KVCache, model: CacheModel, seqs: readonly number[], q: HostTensor, cuQ: Int32Array, cfg: { topk: number; causal: boolean; scale?: number },
): Promise<{ out: Float64Array; lse: Float64Array; cal: { out: Float64Array; lse: Float64Array } }> {
  const { Hkv, D, dtype, blockSize } = model.o;
  const ks: number[] = [];
  const vs: number[] = [];
  const cuK = [0];
  for (const s of seqs) {
    const c = await cache.read(s);
    for (const x of toFloat64(c.k)) ks.push(x);
    for (const x of toFloat64(c.v)) vs.push(x);
    cuK.push(cuK[cuK.length - 1]! + c.length);
  }
  const [Tq, Hq] = q.shape as [number, number, number];
  const shape = { T: Tq, Tk: cuK[cuK.length - 1]!, Hq, Hkv, D, dtype };
  const layout = { cuSeqlensQ: cuQ, cuSeqlensK: Int32Array.from(cuK) };
  const rcfg = { blockSize, topk: cfg.topk, causal: cfg.causal, scale: cfg.scale ?? 1 / Math.sqrt(D) };
  const q64 = toFloat64(q);
  const k64 = Float64Array.from(ks);
  const v64 = Float64Array.from(vs);
  const idx = referenceRoute(q64, k64, shape, layout, rcfg);
  const ref = referenceForward(q64, k64, v64, idx, shape, layout, rcfg);
  const cal = referenceForward(q64, k64, v64, idx, shape, layout, rcfg, Math.fround);
  return { ...ref, cal: { out: cal.out.map((x) => roundTo(dtype, x)), lse: cal.lse.map(Math.fround) } };
}

/** Attends on the cache and checks out and lse against the reference; returns the checks and the raw result. */
export async function attendChecks(
  b: CpuBackend, cache: KVCache, model: CacheModel, seqs: readonly number[], q: HostTensor, cuQ: Int32Array,
  cfg: { topk: number; causal: boolean },
): Promise<{ checks: ToleranceCheck[]; out: HostTensor; lse: HostTensor }> {
  const qd = await b.upload(q);
  const r = await cache.attend(seqs, qd, cuQ, cfg);
  const out = await b.download(r.out);
  const lse = await b.download(r.lse);
  b.dispose(qd, r.out, r.lse);
  const ref = await referenceAttend(cache, model, seqs, q, cuQ, cfg);
  const [Tq, Hq, D] = q.shape as [number, number, number];
  const checks = [
    checkTolerance('out', toFloat64(out), ref.out, ref.cal.out, { kind: 'forward', dtype: model.o.dtype, shape: [Tq, Hq, D] }),
    checkTolerance('lse', toFloat64(lse), ref.lse, ref.cal.lse, { kind: 'forward', dtype: 'f32', shape: [Tq, Hq] }),
  ];
  return { checks, out, lse };
}

/** Offsets `[0, c0, c0 + c1, …]` of counts. */
export function offsets(counts: readonly number[]): Int32Array {
  const cu = new Int32Array(counts.length + 1);
  counts.forEach((c, i) => (cu[i + 1] = cu[i]! + c));
  return cu;
}

/** One append's host data: raw keys and values `[T, Hkv, D]` and their sequence offsets. */
export interface Chunk {
  readonly k: HostTensor;
  readonly v: HostTensor;
  readonly cu: Int32Array;
}

/** Random raw keys and values for `counts[i]` new tokens of each sequence. */
export function randomChunk(rng: Rng, dtype: DType, Hkv: number, D: number, counts: readonly number[]): Chunk {
  const cu = offsets(counts);
  const T = cu[cu.length - 1]!;
  return { k: randomTensor(rng, dtype, T, Hkv, D), v: randomTensor(rng, dtype, T, Hkv, D), cu };
}

/** Uploads a chunk and appends it to `seqs` (recording it in `model` when given and the append succeeds). */
export async function appendChunk(b: CpuBackend, cache: KVCache, seqs: readonly number[], ch: Chunk, model?: CacheModel): Promise<void> {
  const kd = await b.upload(ch.k);
  const vd = await b.upload(ch.v);
  try {
    await cache.append(seqs, kd, vd, ch.cu);
  } finally {
    b.dispose(kd, vd);
  }
  if (!model) return;
  const C = model.C;
  const k = toFloat64(ch.k);
  const v = toFloat64(ch.v);
  seqs.forEach((s, j) => model.add(s, k.subarray(ch.cu[j]! * C, ch.cu[j + 1]! * C), v.subarray(ch.cu[j]! * C, ch.cu[j + 1]! * C)));
}

/** Attends and downloads: out and lse as host tensors. */
export async function attendHost(
  b: CpuBackend, cache: KVCache, seqs: readonly number[], q: HostTensor, cuQ: Int32Array, cfg: { topk: number; causal?: boolean },
): Promise<{ out: HostTensor; lse: HostTensor }> {
  const qd = await b.upload(q);
  const r = await cache.attend(seqs, qd, cuQ, cfg);
  const res = { out: await b.download(r.out), lse: await b.download(r.lse) };
  b.dispose(qd, r.out, r.lse);
  return res;
}

/** The fields of two contents that differ bitwise (`pages` too unless `pages: false`). */
export function contentDiffs(a: CacheContents, b: CacheContents, opts: { pages?: boolean } = {}): string[] {
  const d: string[] = [];
  if (a.length !== b.length) d.push('length');
  if (a.openCount !== b.openCount) d.push('openCount');
  for (const f of ['k', 'v', 'centroids', 'openSum', 'kconvState'] as const) if (!sameBits(a[f].data, b[f].data)) d.push(f);
  if ((opts.pages ?? true) && !sameBits(a.pages, b.pages)) d.push('pages');
  return d;
}

export { Rng };

/** CPU backends made by a test file (one thread unless told), destroyed together: `afterAll(() => pool.destroyAll())`. */
export function backendPool(): { backend(opts?: Parameters<typeof createCpuBackend>[0]): CpuBackend; destroyAll(): Promise<void> } {
  const made: CpuBackend[] = [];
  return {
    backend(opts = { threads: 1 }) {
      const b = createCpuBackend(opts);
      made.push(b);
      return b;
    },
    async destroyAll() {
      for (const b of made.splice(0)) await b.destroy();
    },
  };
}
