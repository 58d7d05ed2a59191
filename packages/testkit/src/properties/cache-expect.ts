/**
 * What a cache must hold and return (SPEC §9), recomputed on the host from the raw keys and values a `CacheRun`
 * appended: its contents (`read()`) against a recompute of SPEC §2 and §6, and an attend's out and lse against
 * the float64 reference of SPEC §8 on the whole key sequence so far, with rows whose reference routing is a
 * near-tie left out of the strict check (the cache's routing cannot be read; its outputs are compared).
 */
import { type CacheContents, type ProblemShape, type QKLayout, type ToleranceCheck, checkTolerance, queryRows, resolveConfig, sequences, toFloat64 } from '@moba/core';
import { referenceCentroids, referenceForward, referenceKconv, referenceRoute } from '@moba/core/reference';
import { roundAll } from '../checks.js';
import { scoreEps } from '../routing-checks.js';
import type { AttendResult, CacheRun } from './cache-schedule.js';

/** Sequence i's keys after kconv: the f64 reference and its calibration (f32 intermediates, rounded to the dtype). */
export function expectedKeys(run: CacheRun, i: number): { ref: Float64Array; cal: Float64Array } {
  const { Hkv, D, dtype } = run.spec;
  const raw = Float64Array.from(run.raw[i]!);
  if (!run.weight) return { ref: raw, cal: raw };
  const layout = { cuSeqlens: Int32Array.of(0, run.length(i)) };
  const C = Hkv * D;
  return {
    ref: referenceKconv(raw, run.weight.f64, C, run.spec.width, layout),
    cal: roundAll(dtype, referenceKconv(raw, run.weight.f64, C, run.spec.width, layout, Math.fround)),
  };
}

/** First index where `got` and `want` differ (values, -0 = 0), or -1. */
function firstDiff(got: ArrayLike<number>, want: ArrayLike<number>): number {
  if (got.length !== want.length) return 0;
  for (let x = 0; x < got.length; x++) if (got[x] !== want[x]) return x;
  return -1;
}

/** f32 sums of `n` terms: at most (n + 2) roundings of the terms' magnitude, doubled for slack. */
const sumBound = (n: number, mag: number): number => 2 * (n + 2) * 2 ** -24 * mag + 1e-30;

/** The keys `read()` returned are within the forward tolerance of the reference kconv (bitwise the raw keys without kconv). */
export function keyCheck(run: CacheRun, i: number, got: CacheContents): ToleranceCheck | string | null {
  const { ref, cal } = expectedKeys(run, i);
  const k = toFloat64(got.k);
  if (!run.weight) {
    const at = firstDiff(k, ref);
    return at < 0 ? null : `sequence ${i}: read().k[${at}] = ${k[at]}, expected the appended key ${ref[at]} (no kconv: bitwise)`;
  }
  return checkTolerance(`sequence ${i} keys after kconv (read().k)`, k, ref, cal, { kind: 'forward', dtype: run.spec.dtype, shape: [run.length(i), run.spec.Hkv, run.spec.D] });
}

/** Everything wrong with sequence i's `read()` against a recompute (empty when it is right). */
export function contentsErrors(run: CacheRun, i: number, got: CacheContents): string[] {
  const { Hkv, D, blockSize: B, width } = run.spec;
  const C = Hkv * D;
  const n = run.length(i);
  const lines: string[] = [];
  const where = `sequence ${i} (length ${n})`;
  if (got.length !== n) return [`${where}: read().length = ${got.length}, expected ${n}`];
  const shapeOk = (t: { shape: readonly number[] }, want: number[]): boolean => t.shape.length === want.length && t.shape.every((x, j) => x === want[j]);
  const full = Math.floor(n / B);
  const S = Math.max(0, width - 1);
  for (const [name, t, want] of [['k', got.k, [n, Hkv, D]], ['v', got.v, [n, Hkv, D]], ['centroids', got.centroids, [full, Hkv, D]], ['openSum', got.openSum, [Hkv, D]], ['kconvState', got.kconvState, [S, Hkv, D]]] as const) {
    if (!shapeOk(t, [...want])) lines.push(`${where}: read().${name}.shape = [${t.shape.join(', ')}], expected [${want.join(', ')}]`);
  }
  if (lines.length > 0) return lines;
  const kc = keyCheck(run, i, got);
  if (typeof kc === 'string') lines.push(kc);
  else if (kc && !kc.ok) lines.push(kc.message);
  const v = toFloat64(got.v);
  const vAt = firstDiff(v, run.values[i]!);
  if (vAt >= 0) lines.push(`${where}: read().v[${vAt}] = ${v[vAt]}, expected the appended value ${run.values[i]![vAt]} (bitwise)`);
  // centroids and the open sum: f32 sums of the keys the cache holds
  const k = toFloat64(got.k);
  const cent = toFloat64(got.centroids);
  const open = toFloat64(got.openSum);
  const check = (what: string, gotX: number, j0: number, j1: number, c: number, div: number): void => {
    let s = 0;
    let mag = 0;
    for (let p = j0; p < j1; p++) {
      s += k[p * C + c]!;
      mag += Math.abs(k[p * C + c]!);
    }
    const want = s / div;
    const bound = sumBound(j1 - j0, mag / div);
    if (!(Math.abs(gotX - want) <= bound) && lines.length < 8) lines.push(`${where}: ${what} = ${gotX}, expected ${want} (f32 bound ${bound.toExponential(2)})`);
  };
  for (let j = 0; j < full; j++) for (let c = 0; c < C; c++) check(`centroid of block ${j}, channel ${c}`, cent[j * C + c]!, j * B, (j + 1) * B, c, B);
  for (let c = 0; c < C; c++) check(`open block sum, channel ${c}`, open[c]!, full * B, n, c, 1);
  if (got.openCount !== n % B) lines.push(`${where}: read().openCount = ${got.openCount}, expected ${n % B}`);
  const st = toFloat64(got.kconvState);
  for (let r = 0; r < S; r++) {
    const p = n - S + r; // oldest first; zero before the sequence start
    for (let c = 0; c < C; c++) {
      const want = p >= 0 ? run.raw[i]![p * C + c]! : 0;
      if (st[r * C + c] !== want && lines.length < 8) lines.push(`${where}: read().kconvState[${r}, ${c}] = ${st[r * C + c]}, expected raw key ${p >= 0 ? `of position ${p}` : '0 (before the start)'} = ${want}`);
    }
  }
  if (got.pages.length !== Math.ceil(n / B)) lines.push(`${where}: read().pages has ${got.pages.length} pages, expected ceil(length / B) = ${Math.ceil(n / B)}`);
  return lines;
}

/**
 * Tolerance checks of one attend against the f64 reference on `keys[j]` (the j-th attended sequence's keys after
 * kconv) and the appended values; rows whose reference routing margin is within rounding noise are left out.
 */
export function attendChecks(run: CacheRun, res: AttendResult, keys: readonly Float64Array[]): { checks: ToleranceCheck[]; nearTies: number; rows: number } {
  const { Hq, Hkv, D, dtype, blockSize: B, topk, causal } = run.spec;
  const C = Hkv * D;
  const cuK = new Int32Array(res.seqs.length + 1);
  const cuQ = new Int32Array(res.seqs.length + 1);
  res.seqs.forEach((i, b) => {
    cuK[b + 1] = cuK[b]! + run.length(i);
    cuQ[b + 1] = cuQ[b]! + res.nq[b]!;
  });
  const Tk = cuK[res.seqs.length]!;
  const Tq = cuQ[res.seqs.length]!;
  const k = new Float64Array(Tk * C);
  const v = new Float64Array(Tk * C);
  res.seqs.forEach((i, b) => {
    k.set(keys[b]!, cuK[b]! * C);
    v.set(run.values[i]!, cuK[b]! * C);
  });
  const layout: QKLayout = { cuSeqlensQ: cuQ, cuSeqlensK: cuK };
  const shape: ProblemShape = { T: Tq, Tk, Hq, Hkv, D, dtype };
  const cfg = resolveConfig({ blockSize: B, topk, causal }, D);
  const idx = referenceRoute(res.q64, k, shape, layout, cfg);
  const f = referenceForward(res.q64, k, v, idx, shape, layout, cfg);
  const cf = referenceForward(res.q64, k, v, idx, shape, layout, cfg, Math.fround);
  const keep = clearRows(res.q64, k, shape, layout, cfg);
  const pick = (a: ArrayLike<number>, per: number): Float64Array => {
    const o: number[] = [];
    keep.forEach((ok, row) => { if (ok) for (let d = 0; d < per; d++) o.push(a[row * per + d]!); });
    return Float64Array.from(o);
  };
  const out = toFloat64(res.out);
  const lse = toFloat64(res.lse);
  const kept = keep.filter(Boolean).length;
  const checks = kept === 0 ? [] : [
    checkTolerance('attend out', pick(out, D), pick(f.out, D), pick(roundAll(dtype, cf.out), D), { kind: 'forward', dtype }),
    checkTolerance('attend lse', pick(lse, 1), pick(f.lse, 1), pick(cf.lse.map(Math.fround), 1), { kind: 'forward', dtype: 'f32' }),
  ];
  return { checks, nearTies: keep.length - kept, rows: keep.length };
}

/**
 * Per (query row, head): true when the reference routing is clear, i.e. the k-th selected candidate scores above
 * the best one left out by more than the rounding noise of f32 centroids and scores.
 */
function clearRows(q: Float64Array, k: Float64Array, shape: ProblemShape, layout: QKLayout, cfg: ReturnType<typeof resolveConfig>): boolean[] {
  const { Hq, Hkv, D } = shape;
  const B = cfg.blockSize;
  const cent = referenceCentroids(k, shape, layout, B);
  const seqs = sequences({ cuSeqlens: layout.cuSeqlensK }, B);
  const qr = queryRows(layout);
  const keep: boolean[] = [];
  for (let t = 0; t < qr.Tq; t++) {
    const s = seqs.seqs[qr.seqOf[t]!]!;
    const cb = Math.floor((qr.pos[t]! - s.start) / B);
    const cand = cfg.causal ? cb : s.nBlocks;
    const need = cfg.causal ? cfg.topk - 1 : cfg.topk;
    for (let h = 0; h < Hq; h++) {
      if (need === 0 || need >= cand) { keep.push(true); continue; } // every candidate (or none) is selected
      const kvh = Math.floor(h / (Hq / Hkv));
      const sc: number[] = [];
      let mag = 0;
      for (let j = 0; j < cand; j++) {
        let dot = 0;
        let m = 0;
        for (let d = 0; d < D; d++) {
          const x = q[(t * Hq + h) * D + d]! * cent[((s.blockBase + j) * Hkv + kvh) * D + d]!;
          dot += x;
          m += Math.abs(x);
        }
        sc.push(dot);
        mag = Math.max(mag, m);
      }
      sc.sort((a, b) => b - a);
      keep.push(sc[need - 1]! - sc[need]! > 2 * scoreEps(D, B, mag));
    }
  }
  return keep;
}
