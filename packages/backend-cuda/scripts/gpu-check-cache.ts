/**
 * The `cache` step of gpu-check.ts: the CUDA KV cache (src/cache.ts) against the float64 reference on random
 * schedules (several sequences, chunks of 1..300 tokens, attends of nq = 1 and > 1; f32/f16/bf16; kconv off and W = 3;
 * GQA 32/8 and 16/16 at D 128 B 128, small D/B, non-causal). Checks: read() (k' against referenceKconv rounded to
 * the dtype, v bitwise, centroids / open sum against f64 means of the cache's own keys, kconv state bitwise),
 * every attend against referenceRoute + referenceForward on a QKLayout over the cache's own keys (sampled rows;
 * row-heads whose k-th and next block scores are within rounding noise are skipped as near-ties), batch
 * invariance and determinism (bitwise), fork, and E_MEMORY leaving the cache unchanged. Then the long (split router)
 * and dense cases of gpu-check-cache-long.ts and the decode timings.
 */
import {
  type CacheContents, type DType, type KVCache, MobaError, createCache, Rng, bf16ToF32, dtypeEps, f16ToF32, f32ToBf16, f32ToF16, hostTensor, resolveConfig, roundTo,
} from '@moba/core';
import { type QKLayout, referenceBlockScores, referenceCentroids, referenceForward, referenceKconv, referenceRoute } from '@moba/core/reference';
import type { CudaBackend } from '../src/index.js';
import { LONG_CASES, longCase } from './gpu-check-cache-long.js';
import { cacheTiming } from './gpu-check-cache-time.js';
import { FUSED_CASES, fusedCase } from './gpu-check-cache-fused.js';

export interface CacheCase { name: string; dtype: DType; Hq: number; Hkv: number; D: number; B: number; W: number; topk: number; causal: boolean; seqs: number; len: number }

export const CACHE_CASES: CacheCase[] = [
  { name: 'bf16 GQA 32/8 D128 B128 kconv3 top4', dtype: 'bf16', Hq: 32, Hkv: 8, D: 128, B: 128, W: 3, topk: 4, causal: true, seqs: 3, len: 1000 },
  { name: 'f16 16/16 D128 B128 no kconv top3', dtype: 'f16', Hq: 16, Hkv: 16, D: 128, B: 128, W: 0, topk: 3, causal: true, seqs: 3, len: 700 },
  { name: 'f32 GQA 4/2 D16 B8 kconv3 top64 (dense)', dtype: 'f32', Hq: 4, Hkv: 2, D: 16, B: 8, W: 3, topk: 64, causal: true, seqs: 4, len: 420 },
  { name: 'bf16 2/1 D64 B16 kconv3 top5 non-causal', dtype: 'bf16', Hq: 2, Hkv: 1, D: 64, B: 16, W: 3, topk: 5, causal: false, seqs: 3, len: 500 },
  { name: 'f16 6/3 D40 B32 no kconv top2', dtype: 'f16', Hq: 6, Hkv: 3, D: 40, B: 32, W: 0, topk: 2, causal: true, seqs: 2, len: 650 },
  { name: 'f32 8/8 D128 B128 kconv3 top8', dtype: 'f32', Hq: 8, Hkv: 8, D: 128, B: 128, W: 3, topk: 8, causal: true, seqs: 2, len: 1100 },
];

const toNum = (dtype: DType, bits: number): number => (dtype === 'bf16' ? bf16ToF32(bits) : f16ToF32(bits));
/** Random values of `dtype`: bits for the device, exact values for the reference. */
export function randomData(dtype: DType, n: number, rng: Rng, scale = 1): { data: Float32Array | Uint16Array; values: Float64Array } {
  const values = new Float64Array(n);
  if (dtype === 'f32') {
    const data = new Float32Array(n);
    for (let i = 0; i < n; i++) values[i] = data[i] = Math.fround(rng.normal() * scale);
    return { data, values };
  }
  const data = new Uint16Array(n);
  for (let i = 0; i < n; i++) {
    data[i] = dtype === 'bf16' ? f32ToBf16(rng.normal() * scale) : f32ToF16(rng.normal() * scale);
    values[i] = toNum(dtype, data[i]!);
  }
  return { data, values };
}

export function valuesOf(dtype: DType, data: ArrayLike<number>): Float64Array {
  return dtype === 'f32' ? Float64Array.from(data) : Float64Array.from(data, (b) => toNum(dtype, b));
}

interface Call { seqs: number[]; lens: number[]; cuQ: Int32Array; q: Float64Array; out: Float64Array; lse: Float32Array }

/** One case: a random schedule on a fresh cache, then every check. Returns the failures (empty: passed). */
export async function cacheCase(b: CudaBackend, c: CacheCase, seed: number): Promise<{ failures: string[]; stats: Record<string, number> }> {
  const rng = new Rng(seed);
  const C = c.Hkv * c.D;
  const fail: string[] = [];
  const wHost = c.W > 0 ? randomData(c.dtype, C * c.W, rng, 0.5) : null;
  const wDev = wHost ? await b.upload(hostTensor(c.dtype, [C, c.W], wHost.data)) : undefined;
  const cache = await createCache(b, { Hkv: c.Hkv, D: c.D, dtype: c.dtype, blockSize: c.B, capacityTokens: c.seqs * (c.len + 300 + 4 * c.B) * 4, maxSequences: 16, kconvWeight: wDev });
  const ids = Array.from({ length: c.seqs }, () => cache.newSequence());
  const raw = new Map<number, { k: number[]; v: number[] }>(ids.map((id) => [id, { k: [], v: [] }]));
  const calls: Call[] = [];
  let nq1 = 0, nqMany = 0;
  const rc = resolveConfig({ blockSize: c.B, topk: c.topk, causal: c.causal }, c.D);
  while (ids.some((id) => cache.length(id) < c.len)) {
    const live = ids.filter((id) => cache.length(id) < c.len);
    const pick = live.filter(() => rng.next() < 0.7);
    const seqs = pick.length > 0 ? pick : [live[0]!];
    const counts = seqs.map(() => { const r = rng.next(); return r < 0.35 ? 1 : r < 0.6 ? rng.int(2, 9) : rng.int(10, 300); });
    const cu = Int32Array.from([0, ...counts.map((_, i) => counts.slice(0, i + 1).reduce((a, x) => a + x, 0))]);
    const T = cu[cu.length - 1]!;
    const k = randomData(c.dtype, T * C, rng), v = randomData(c.dtype, T * C, rng);
    const kd = await b.upload(hostTensor(c.dtype, [T, c.Hkv, c.D], k.data)), vd = await b.upload(hostTensor(c.dtype, [T, c.Hkv, c.D], v.data));
    await cache.append(seqs, kd, vd, cu);
    b.dispose(kd, vd);
    seqs.forEach((id, i) => {
      const r = raw.get(id)!;
      for (let x = cu[i]! * C; x < cu[i + 1]! * C; x++) { r.k.push(k.values[x]!); r.v.push(v.values[x]!); }
    });
    const nq = counts.map((n) => (rng.next() < 0.5 ? 1 : rng.int(1, n)));
    nq.forEach((n) => (n === 1 ? nq1++ : nqMany++));
    const cuQ = Int32Array.from([0, ...nq.map((_, i) => nq.slice(0, i + 1).reduce((a, x) => a + x, 0))]);
    const Tq = cuQ[cuQ.length - 1]!;
    const q = randomData(c.dtype, Tq * c.Hq * c.D, rng);
    const qd = await b.upload(hostTensor(c.dtype, [Tq, c.Hq, c.D], q.data));
    const o = await cache.attend(seqs, qd, cuQ, { topk: c.topk, causal: c.causal });
    calls.push({ seqs, lens: seqs.map((id) => cache.length(id)), cuQ, q: q.values, out: valuesOf(c.dtype, (await b.download(o.out)).data), lse: (await b.download(o.lse)).data as Float32Array });
    b.dispose(qd, o.out, o.lse);
  }
  const contents = new Map<number, CacheContents>();
  for (const id of ids) contents.set(id, await cache.read(id));
  checkContents(c, ids, raw, contents, wHost?.values ?? null, fail);
  const att = checkAttends(c, calls, contents, rc, rng, fail);
  await checkInvariance(b, c, cache, ids, rng, fail);
  await checkForkAndMemory(b, c, cache, ids, rng, fail);
  await cache.destroy();
  if (wDev) b.dispose(wDev);
  return { failures: fail, stats: { attends: calls.length, nq1, nqMany, ...att } };
}

function checkContents(c: CacheCase, ids: number[], raw: Map<number, { k: number[]; v: number[] }>, contents: Map<number, CacheContents>, w: Float64Array | null, fail: string[]): void {
  const C = c.Hkv * c.D;
  for (const id of ids) {
    const r = raw.get(id)!, got = contents.get(id)!;
    const L = got.length;
    const want = w ? referenceKconv(Float64Array.from(r.k), w, C, c.W, { cuSeqlens: Int32Array.from([0, L]) }).map((x) => roundTo(c.dtype, x)) : Float64Array.from(r.k);
    const gk = valuesOf(c.dtype, got.k.data), gv = valuesOf(c.dtype, got.v.data);
    let kBad = 0, vBad = 0;
    const kTol = (c.dtype === 'f32' ? 64 : 4) * dtypeEps(c.dtype); // f32: the device's f32 conv and expf; 16-bit: one rounding
    for (let i = 0; i < L * C; i++) {
      if (!(Math.abs(gk[i]! - want[i]!) <= kTol * (Math.abs(want[i]!) + 1))) kBad++;
      if (gv[i] !== r.v[i]) vBad++;
    }
    if (kBad) fail.push(`seq ${id}: ${kBad} keys differ from referenceKconv (rounded to ${c.dtype})`);
    if (vBad) fail.push(`seq ${id}: ${vBad} values differ (must be bitwise)`);
    const nb = Math.floor(L / c.B);
    let cBad = 0;
    for (let j = 0; j <= nb; j++) {
      const n = j < nb ? c.B : L - nb * c.B;
      if (n === 0) continue;
      for (let x = 0; x < C; x++) {
        let s = 0;
        for (let p = j * c.B; p < j * c.B + n; p++) s += gk[p * C + x]!;
        const g = j < nb ? got.centroids.data[j * C + x]! : got.openSum.data[x]!;
        const ref = j < nb ? s / c.B : s;
        if (!(Math.abs(g - ref) <= 1e-5 * (Math.abs(ref) + (j < nb ? 1 : n)))) cBad++;
      }
    }
    if (cBad) fail.push(`seq ${id}: ${cBad} centroid / open-sum values off the f64 means of its keys`);
    if (got.openCount !== L % c.B) fail.push(`seq ${id}: openCount ${got.openCount}, want ${L % c.B}`);
    const R = Math.max(0, c.W - 1);
    for (let i = 0; i < R * C; i++) {
      const p = L - R + Math.floor(i / C);
      const ref = p < 0 ? 0 : r.k[p * C + (i % C)]!;
      if (got.kconvState.data[i] !== ref) { fail.push(`seq ${id}: kconv state differs at ${i}`); break; }
    }
  }
}

function checkAttends(c: CacheCase, calls: Call[], contents: Map<number, CacheContents>, rc: ReturnType<typeof resolveConfig>, rng: Rng, fail: string[]): Record<string, number> {
  const C = c.Hkv * c.D;
  let checked = 0, nearTies = 0, bad = 0;
  const outTol = c.dtype === 'f32' ? 2e-5 : 4 * dtypeEps(c.dtype);
  for (const call of calls) {
    const Tk = call.lens.reduce((a, x) => a + x, 0);
    const k = new Float64Array(Tk * C), v = new Float64Array(Tk * C);
    let off = 0;
    const cuK = new Int32Array(call.lens.length + 1);
    call.seqs.forEach((id, i) => {
      const g = contents.get(id)!;
      k.set(valuesOf(c.dtype, g.k.data.subarray(0, call.lens[i]! * C)), off * C);
      v.set(valuesOf(c.dtype, g.v.data.subarray(0, call.lens[i]! * C)), off * C);
      off += call.lens[i]!;
      cuK[i + 1] = off;
    });
    const layout: QKLayout = { cuSeqlensQ: call.cuQ, cuSeqlensK: cuK };
    const Tq = call.cuQ[call.cuQ.length - 1]!;
    const shape = { T: Tq, Tk, Hq: c.Hq, Hkv: c.Hkv, D: c.D, dtype: c.dtype };
    const idx = referenceRoute(call.q, k, shape, layout, rc);
    const rows = [...new Set(Array.from({ length: Math.min(Tq, 12) }, (_, i) => (i < 4 ? Tq - 1 - i : rng.int(0, Tq - 1))))].filter((r) => r >= 0);
    const ref = referenceForward(call.q, k, v, idx, shape, layout, rc, undefined, rows);
    const cent = referenceCentroids(k, shape, layout, c.B);
    for (const t of rows) {
      const seq = call.cuQ.findIndex((x, i) => i + 1 < call.cuQ.length && t >= x && t < call.cuQ[i + 1]!);
      const pos = call.lens[seq]! - (call.cuQ[seq + 1]! - t);
      const cb = Math.floor(pos / c.B);
      for (let h = 0; h < c.Hq; h++) {
        const sc = Array.from(referenceBlockScores(call.q, cent, shape, layout, c.B, t, h)).slice(0, c.causal ? cb : undefined).sort((a, x) => x - a);
        const kk = c.causal ? c.topk - 1 : c.topk;
        const mag = Math.max(1, ...sc.map(Math.abs));
        if (kk > 0 && sc.length > kk && sc[kk - 1]! - sc[kk]! < 1e-4 * mag) { nearTies++; continue; }
        checked++;
        const row = t * c.Hq + h;
        let maxRef = 0, maxDiff = 0;
        for (let d = 0; d < c.D; d++) {
          maxRef = Math.max(maxRef, Math.abs(ref.out[row * c.D + d]!));
          maxDiff = Math.max(maxDiff, Math.abs(ref.out[row * c.D + d]! - call.out[row * c.D + d]!));
        }
        const lseDiff = Math.abs(ref.lse[row]! - call.lse[row]!);
        if (!(maxDiff <= outTol * (maxRef + 0.05)) || !(lseDiff <= 1e-3 * Math.max(1, Math.abs(ref.lse[row]!)))) {
          if (bad++ < 5) fail.push(`attend seqs [${call.seqs.join(', ')}] lens [${call.lens.join(', ')}] row ${t} (pos ${pos}) head ${h}: out max diff ${maxDiff.toExponential(2)} (ref max ${maxRef.toFixed(3)}), lse ${call.lse[row]} vs ${ref.lse[row]}`);
        }
      }
    }
  }
  if (bad > 5) fail.push(`… ${bad} row-heads off the reference in all`);
  return { rowHeadsChecked: checked, nearTies, rowHeadsBad: bad };
}

const bitsEqual = (a: ArrayLike<number>, b: ArrayLike<number>): boolean => a.length === b.length && Array.from(a).every((x, i) => Object.is(x, b[i]));

/** Each sequence alone against all of them batched (nq 1 and 3), twice: bitwise equal rows. */
async function checkInvariance(b: CudaBackend, c: CacheCase, cache: KVCache, ids: number[], rng: Rng, fail: string[]): Promise<void> {
  const nq = ids.map((_, i) => (i % 2 === 0 ? 1 : 3));
  const cuQ = Int32Array.from([0, ...nq.map((_, i) => nq.slice(0, i + 1).reduce((a, x) => a + x, 0))]);
  const Tq = cuQ[cuQ.length - 1]!, E = c.Hq * c.D;
  const q = randomData(c.dtype, Tq * E, rng);
  const run = async (seqs: number[], data: Float32Array | Uint16Array, cu: Int32Array): Promise<{ out: ArrayLike<number>; lse: ArrayLike<number> }> => {
    const qd = await b.upload(hostTensor(c.dtype, [cu[cu.length - 1]!, c.Hq, c.D], data));
    const o = await cache.attend(seqs, qd, cu, { topk: c.topk, causal: c.causal });
    const r = { out: (await b.download(o.out)).data, lse: (await b.download(o.lse)).data };
    b.dispose(qd, o.out, o.lse);
    return r;
  };
  const all = await run(ids, q.data, cuQ);
  const again = await run(ids, q.data, cuQ);
  if (!bitsEqual(all.out, again.out) || !bitsEqual(all.lse, again.lse)) fail.push('attend is not deterministic (two equal calls differ)');
  const rev = await run([...ids].reverse(), concatRev(q.data, cuQ, E), Int32Array.from([0, ...[...nq].reverse().map((_, i, a) => a.slice(0, i + 1).reduce((x, y) => x + y, 0))]));
  for (let i = 0; i < ids.length; i++) {
    const one = await run([ids[i]!], q.data.slice(cuQ[i]! * E, cuQ[i + 1]! * E), Int32Array.from([0, nq[i]!]));
    const r0 = cuQ[i]!, r1 = cuQ[i + 1]!;
    if (!bitsEqual(one.out, Array.from(all.out).slice(r0 * E, r1 * E)) || !bitsEqual(one.lse, Array.from(all.lse).slice(r0 * c.Hq, r1 * c.Hq))) fail.push(`batch invariance: sequence ${ids[i]} alone differs from batched`);
    const ro = Tq - r1; // its rows in the reversed batch
    if (!bitsEqual(one.out, Array.from(rev.out).slice(ro * E, (ro + r1 - r0) * E))) fail.push(`batch invariance: sequence ${ids[i]} differs in a reversed batch`);
  }
}

function concatRev(data: Float32Array | Uint16Array, cu: Int32Array, E: number): Float32Array | Uint16Array {
  const out = data.slice();
  let o = 0;
  for (let i = cu.length - 2; i >= 0; i--) { out.set(data.subarray(cu[i]! * E, cu[i + 1]! * E), o); o += (cu[i + 1]! - cu[i]!) * E; }
  return out;
}

/** fork + equal appends give equal contents; an append that does not fit is E_MEMORY and changes nothing. */
async function checkForkAndMemory(b: CudaBackend, c: CacheCase, cache: KVCache, ids: number[], rng: Rng, fail: string[]): Promise<void> {
  const C = c.Hkv * c.D, id = ids[0]!;
  const f = await cache.fork(id);
  const n = 5;
  const k = randomData(c.dtype, n * C, rng), v = randomData(c.dtype, n * C, rng);
  const kd = await b.upload(hostTensor(c.dtype, [n, c.Hkv, c.D], k.data)), vd = await b.upload(hostTensor(c.dtype, [n, c.Hkv, c.D], v.data));
  await cache.append([id], kd, vd, Int32Array.from([0, n]));
  await cache.append([f], kd, vd, Int32Array.from([0, n]));
  const [a, x] = [await cache.read(id), await cache.read(f)];
  if (!bitsEqual(a.k.data, x.k.data) || !bitsEqual(a.v.data, x.v.data) || !bitsEqual(a.openSum.data, x.openSum.data) || !bitsEqual(a.centroids.data, x.centroids.data) || !bitsEqual(a.kconvState.data, x.kconvState.data)) {
    fail.push('fork: equal appends to a sequence and its fork give different contents');
  }
  const before = cache.memoryStats();
  const big = (before.freePages + 1) * c.B + 1; // more than every free page plus the fork's open one can hold
  const bk = await b.upload(hostTensor(c.dtype, [big, c.Hkv, c.D])), bv = await b.upload(hostTensor(c.dtype, [big, c.Hkv, c.D]));
  let code = 'none';
  try { await cache.append([f], bk, bv, Int32Array.from([0, big])); } catch (e) { code = e instanceof MobaError ? e.code : String(e); }
  if (code !== 'E_MEMORY') fail.push(`an append past the pool gave ${code}, want E_MEMORY`);
  const after = await cache.read(f);
  if (after.length !== x.length || !bitsEqual(after.k.data, x.k.data) || JSON.stringify(cache.memoryStats()) !== JSON.stringify(before)) fail.push('E_MEMORY append changed the cache');
  await cache.append([f], kd, vd, Int32Array.from([0, n])); // still usable
  if (cache.length(f) !== x.length + n) fail.push('cache unusable after E_MEMORY');
  cache.free(f);
  b.dispose(kd, vd, bk, bv);
}

type CaseResult = { failures: string[]; stats: Record<string, number> };

/** Runs one case (a crash is a failure), records and logs it; true when it passed. */
async function oneCase(name: string, f: () => Promise<CaseResult>, cases: Record<string, unknown>[], log: (s: string) => void): Promise<boolean> {
  const t0 = performance.now();
  let r: CaseResult;
  try {
    r = await f();
  } catch (e) {
    r = { failures: [`crashed: ${e instanceof Error ? `${e.message}\n${e.stack ?? ''}` : String(e)}`], stats: {} };
  }
  cases.push({ name, pass: r.failures.length === 0, ...r, ms: Math.round(performance.now() - t0) });
  log(`  ${r.failures.length === 0 ? '✓' : '✗'} ${name} (${Math.round(performance.now() - t0)} ms): ${JSON.stringify(r.stats)}${r.failures.map((x) => `\n      ${x}`).join('')}`);
  return r.failures.length === 0;
}

/**
 * The whole step: every case (seeded), the long and dense cases (gpu-check-cache-long.ts), fused vs route + attend
 * bitwise with both timed at 8K (gpu-check-cache-fused.ts), then the decode timings (cacheTiming).
 */
export async function cacheStep(b: CudaBackend, log: (s: string) => void): Promise<Record<string, unknown> & { ok: boolean }> {
  const cases: Record<string, unknown>[] = [];
  let ok = true;
  for (const [i, c] of CACHE_CASES.entries()) ok = (await oneCase(c.name, () => cacheCase(b, c, 20261203 + i), cases, log)) && ok;
  for (const [i, c] of LONG_CASES.entries()) ok = (await oneCase(c.name, () => longCase(b, c, 777 + 10 * i), cases, log)) && ok;
  for (const [i, c] of FUSED_CASES.entries()) {
    const name = `fused vs route + attend: ${c.N} x ${c.batch} ${c.Hq}/${c.Hkv} top${c.topk}${c.causal ? '' : ' non-causal'}`;
    ok = (await oneCase(name, () => fusedCase(b, c, 4242 + 10 * i), cases, log)) && ok;
  }
  const timing: Record<string, unknown>[] = [];
  for (const [N, batch] of [[8192, 1], [131072, 16], [524288, 16], [524288, 1]] as const) {
    try {
      const t = await cacheTiming(b, N, batch);
      timing.push(t);
      log(`  decode step ${N / 1024}K x ${batch}, 16/16 heads, D 128, bf16, top-8: attend ${String(t.attendMs)} ms (reads ${String(t.readMB)} MB: ${String(t.readGBs)} GB/s; device copy ${String(t.copyGBs)} GB/s), mobaStep ${String(t.stepMs)} ms; route split ${String(t.nsplit)}; stages ${JSON.stringify(t.stagesMs)}`);
    } catch (e) {
      ok = false;
      const crashed = e instanceof Error ? `${e.message}\n${e.stack ?? ''}` : String(e);
      timing.push({ N, batch, crashed });
      log(`  decode timing ${N} x ${batch} CRASHED: ${crashed}`);
    }
  }
  return { ok, cases, timing };
}
