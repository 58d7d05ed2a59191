/**
 * The CUDA backend's device check, bundled for the GPU machine (scripts/bundle.sh):
 *  (a) the conformance suite (runConformance, every dtype the caps list), (b) the golden cases alone,
 *  (c) a large routing check: T = 65536, Hq = 16, D = 128, B = 128, topk = 8, bf16: identical across two
 *      runs, and equal to an exact top-k (f64 scores of f32 centroids) on ~256 sampled rows outside near-ties,
 *  (d) the tensor-core kernels against the generic ones on larger shapes (fast path vs generic),
 *  (e) timings of the bench configuration (batch 2, 16 heads, D 128, bf16, B 128, top-8) at N = 8K, 32K, 128K:
 *      routing (with the collect split), attention forward, backward, each CUDA-synchronised, median of 5
 *      after a warm-up, with effective TFLOP/s from plan() and a per-kernel profile of one run.
 * Subsets: `--quick` (fast path + timings at 8K, 32K), `GPU_CHECK_ONLY=conformance,golden,routing,fastpath,timings,cache,qk` (cache:
 * gpu-check-cache.ts; qk: fewer queries than keys against self-attention, gpu-check-qk.ts),
 * `GPU_CHECK_SIZES=8192,32768`.
 * Writes `$OUT/cuda-report.json` when OUT is set and prints a short table last. Exit 1 on any failure;
 * without CUDA it prints "cuda unavailable: <why>" and exits 0 (1 when MOBA_REQUIRE names cuda).
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { type Backend, type DeviceTensor, type Layout, Rng, bf16ToF32, f16ToF32, f32ToBf16, f32ToF16, hostTensor, plan, resolveConfig } from '@moba/core';
import { type Report, runConformance, summaryLine } from '@moba/testkit';
import { type CudaBackend, createCudaBackend, probeAdapter, unavailableReason } from '../src/index.js';
import { cacheStep } from './gpu-check-cache.js';
import { qkStep } from './gpu-check-qk.js';
import { collectStep } from './gpu-check-collect.js';

// FlashMoBA measured on the H200 in the bench configuration: forward incl. routing, routing, attention forward, backward (ms)
const FM: Record<number, { fwd: number; routing: number; attn: number; bwd: number }> = {
  8192: { fwd: 3.74, routing: 1.16, attn: 2.82, bwd: 2.14 }, 32768: { fwd: 17.6, routing: 4.23, attn: 13.19, bwd: 7.67 },
  131072: { fwd: 139.45, routing: 34.38, attn: 105.11, bwd: 29.47 },
};
// Steps: GPU_CHECK_ONLY=conformance,golden,routing,fastpath,timings,cache,qk,collect (default all but collect); --quick: fastpath + timings at 8K, 32K.
const quick = process.argv.includes('--quick') || process.env.GPU_CHECK_QUICK === '1';
const only = (process.env.GPU_CHECK_ONLY ?? '').split(',').map((s) => s.trim()).filter(Boolean);
const wanted = (step: string): boolean => (only.length > 0 ? only.includes(step) : !quick || step === 'fastpath' || step === 'timings');
const sizes = (process.env.GPU_CHECK_SIZES ?? (quick ? '8192,32768' : '8192,32768,131072')).split(',').map(Number);
const log = (s: string): void => void process.stdout.write(`${s}\n`);
const required = (process.env.MOBA_REQUIRE ?? '').split(',').map((s) => s.trim().toLowerCase()).includes('cuda');

function summarize(r: Report): { passed: number; failed: number; skipped: number; failures: { name: string; message?: string }[]; notCovered: string[] } {
  return { passed: r.passed, failed: r.failed, skipped: r.skipped, failures: r.results.filter((x) => !x.ok).map((x) => ({ name: `${x.group}: ${x.name}`, message: x.message })), notCovered: r.notCovered };
}

/** Random bf16 data: normal values (std 1), as raw bits and as their exact f32 values. */
function randomBf16(n: number, rng: Rng): { bits: Uint16Array; values: Float32Array } {
  const bits = new Uint16Array(n);
  const values = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    bits[i] = f32ToBf16(rng.normal());
    values[i] = bf16ToF32(bits[i]!);
  }
  return { bits, values };
}

export async function routingCheck(b: Backend): Promise<Record<string, unknown>> {
  const T = 65536, Hq = 16, Hkv = 16, D = 128, B = 128, topk = 8;
  const rng = new Rng(20260101);
  const q = randomBf16(T * Hq * D, rng);
  const k = randomBf16(T * Hkv * D, rng);
  const layout: Layout = { cuSeqlens: Int32Array.from([0, T]) };
  const cfg = { blockSize: B, topk };
  const qd = await b.upload(hostTensor('bf16', [T, Hq, D], q.bits));
  const kd = await b.upload(hostTensor('bf16', [T, Hkv, D], k.bits));
  const t0 = performance.now();
  const r1 = await b.route(qd, kd, layout, cfg);
  const ms1 = performance.now() - t0;
  const r2 = await b.route(qd, kd, layout, cfg);
  const [a1, a2] = [await b.routingIndices(r1), await b.routingIndices(r2)];
  let differ = 0;
  for (let row = 0; row < T * Hq; row++) {
    for (let i = 0; i < topk; i++) if (a1[row * topk + i] !== a2[row * topk + i]) { differ++; break; }
  }
  b.dispose(qd, kd, r1, r2);
  // f32 centroids on the host (mean in f64, rounded to f32), then exact f64 scores for sampled rows
  const NB = T / B;
  const cent = new Float64Array(NB * Hkv * D);
  for (let j = 0; j < NB; j++) {
    for (let p = j * B; p < (j + 1) * B; p++) for (let c = 0; c < Hkv * D; c++) cent[j * Hkv * D + c]! += k.values[p * Hkv * D + c]!;
    for (let c = 0; c < Hkv * D; c++) cent[j * Hkv * D + c] = Math.fround(cent[j * Hkv * D + c]! / B);
  }
  let sampled = 0, exact = 0, nearTies = 0;
  const bad: string[] = [];
  for (let s = 0; s < 256; s++) {
    const t = rng.int(B * 9, T - 1); // rows with at least 9 past blocks: a real choice
    const h = rng.int(0, Hq - 1);
    const cb = Math.floor(t / B);
    const scores: { j: number; s: number; mag: number }[] = [];
    for (let j = 0; j < cb; j++) {
      let dot = 0, mag = 0;
      for (let d = 0; d < D; d++) {
        const x = q.values[(t * Hq + h) * D + d]! * cent[(j * Hkv + h) * D + d]!;
        dot += x;
        mag += Math.abs(x);
      }
      scores.push({ j, s: dot, mag });
    }
    scores.sort((x, y) => y.s - x.s || y.j - x.j);
    const want = [...scores.slice(0, topk - 1).map((x) => x.j), cb].sort((x, y) => x - y);
    const got = Array.from(a1.subarray((t * Hq + h) * topk, (t * Hq + h + 1) * topk));
    sampled++;
    if (want.every((x, i) => x === got[i])) { exact++; continue; }
    // a near-tie: every chosen past block scores within rounding noise of the k-th best
    const kth = scores[topk - 2]!.s;
    const eps = 16 * 2 ** -24 * (D + B + 8) * Math.max(...scores.map((x) => x.mag));
    const ok = got.every((j) => j === cb || (scores.find((x) => x.j === j)?.s ?? -Infinity) >= kth - eps);
    if (ok) nearTies++;
    else bad.push(`row (t=${t}, h=${h}): got [${got.join(', ')}], exact [${want.join(', ')}]`);
  }
  return { T, Hq, D, B, topk, dtype: 'bf16', routeMs: +ms1.toFixed(2), rerunDifferingRows: differ, sampled, exact, nearTies, wrong: bad.length, examples: bad.slice(0, 5), ok: differ === 0 && bad.length === 0 };
}

/** Fast random bf16 bits (xorshift32; values ±[0.5, 2) with random mantissas): for large timing inputs. */
function fastBf16(n: number, seed: number): Uint16Array {
  const out = new Uint16Array(n);
  let x = (seed | 0) || 0x9e3779b9;
  for (let i = 0; i < n; i++) {
    x ^= x << 13; x ^= x >>> 17; x ^= x << 5;
    out[i] = (x & 0x8000) | (0x3f00 + ((x >>> 16) & 0xff)); // sign | exponent 126/127 | 7-bit mantissa
  }
  return out;
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

async function timings(b: CudaBackend, sizes: readonly number[]): Promise<Record<string, unknown>[]> {
  const rows: Record<string, unknown>[] = [];
  for (const N of sizes) {
    const T = 2 * N, H = 16, D = 128;
    const layout: Layout = { cuSeqlens: Int32Array.from([0, N, 2 * N]) };
    const cfg = { blockSize: 128, topk: 8 };
    const rc = resolveConfig(cfg, D);
    const pl = plan({ T, Hq: H, Hkv: H, D, dtype: 'bf16' }, layout, rc);
    const up = async (seed: number): Promise<DeviceTensor> => b.upload(hostTensor('bf16', [T, H, D], fastBf16(T * H * D, seed + N)));
    const [q, k, v, dOut] = [await up(1), await up(2), await up(3), await up(4)];
    const time = async (fn: () => Promise<void>, reps = 5): Promise<number> => {
      await fn(); // warm-up (and compilation)
      const ms: number[] = [];
      for (let i = 0; i < reps; i++) {
        b.synchronize();
        const t0 = performance.now();
        await fn(); // every op synchronises before it returns
        ms.push(performance.now() - t0);
      }
      return median(ms);
    };
    const routing = await time(async () => b.dispose(await b.route(q, k, layout, cfg)));
    b.profiling = true; // one profiled routing: per-kernel split (each launch synchronised)
    b.takeProfile();
    b.dispose(await b.route(q, k, layout, cfg));
    const stages = b.takeProfile();
    b.profiling = false;
    const r = await b.route(q, k, layout, cfg);
    const attn = await time(async () => {
      const o = await b.forward(q, k, v, r, layout, cfg);
      b.dispose(o.out, o.lse);
    });
    const o = await b.forward(q, k, v, r, layout, cfg);
    const bwd = await time(async () => {
      const g = await b.backward(q, k, v, o.out, o.lse, dOut, r, layout, cfg);
      b.dispose(g.dq, g.dk, g.dv);
    });
    b.profiling = true;
    b.takeProfile();
    b.dispose(...Object.values(await b.backward(q, k, v, o.out, o.lse, dOut, r, layout, cfg)));
    Object.assign(stages, b.takeProfile());
    b.profiling = false;
    b.dispose(q, k, v, dOut, r, o.out, o.lse);
    const collect = Object.entries(stages).filter(([n]) => n.startsWith('collect_')).reduce((x, [, ms]) => x + ms, 0); // either collect path
    const tf = (flops: number, ms: number): number => +(flops / (ms * 1e9)).toFixed(1);
    rows.push({
      N, batch: 2, heads: H, D, dtype: 'bf16', blockSize: 128, topk: 8, tensorCores: b.usesTensorCores('bf16', D),
      routingMs: +routing.toFixed(2), collectMs: +collect.toFixed(2), attnFwdMs: +attn.toFixed(2), fwdMs: +(routing + attn).toFixed(2),
      bwdMs: +bwd.toFixed(2), fwdBwdMs: +(routing + attn + bwd).toFixed(2),
      tflops: { route: tf(pl.flops.route, routing), attnFwd: tf(pl.flops.forward, attn), bwd: tf(pl.flops.backward, bwd) },
      stagesMs: Object.fromEntries(Object.entries(stages).map(([n, ms]) => [n, +ms.toFixed(2)])),
      fm: FM[N] ?? null,
    });
    log(`  N=${N / 1024}K: routing ${routing.toFixed(2)} ms (collect ${collect.toFixed(2)}), attn fwd ${attn.toFixed(2)} ms, bwd ${bwd.toFixed(2)} ms; stages ${JSON.stringify(rows[rows.length - 1]!.stagesMs)}`);
  }
  return rows;
}

/** Largest |a − b| over max |b|, and whether any NaN differs. */
function relDiff(a: Float32Array, b: Float32Array): { maxRel: number; rms: number; nanMismatch: number } {
  let max = 0, ref = 0, se = 0, ss = 0, nan = 0;
  for (let i = 0; i < a.length; i++) {
    const x = a[i]!, y = b[i]!;
    if (Number.isNaN(x) !== Number.isNaN(y)) { nan++; continue; }
    if (Number.isNaN(x) || (x === y)) continue;
    const d = Math.abs(x - y);
    if (Number.isFinite(d)) { max = Math.max(max, d); se += d * d; }
    else nan++;
  }
  for (let i = 0; i < b.length; i++) if (Number.isFinite(b[i]!)) { ref = Math.max(ref, Math.abs(b[i]!)); ss += b[i]! * b[i]!; }
  return { maxRel: ref > 0 ? max / ref : max, rms: ss > 0 ? Math.sqrt(se / ss) : Math.sqrt(se), nanMismatch: nan };
}

async function toF32(b: Backend, t: DeviceTensor): Promise<Float32Array> {
  const h = await b.download(t);
  if (h.dtype === 'f32') return h.data as Float32Array;
  const bits = h.data as Uint16Array;
  const out = new Float32Array(bits.length);
  for (let i = 0; i < bits.length; i++) out[i] = h.dtype === 'bf16' ? bf16ToF32(bits[i]!) : f16ToF32(bits[i]!);
  return out;
}

/**
 * The tensor-core kernels against the generic CUDA-core kernels (already conformant) on shapes the
 * small conformance problems do not reach: several windows per sequence, partial blocks, GQA,
 * non-causal, D 64 and 128, both 16-bit dtypes; plus bitwise equality of two fast runs, the second with one kv head per launch of the partial-writing kernels.
 */
/** `split`: a tensor-core backend created with `unstable: { kvHeadsPerLaunch: 1 }` (its results must equal `fast`'s bitwise). */
export async function fastPathCheck(fast: CudaBackend, slow: CudaBackend, split: CudaBackend): Promise<Record<string, unknown>> {
  const cases = [
    { name: 'bf16 D128 B128 k8 causal, 2 seqs (4100, 2900), GQA 4/2', dtype: 'bf16' as const, D: 128, B: 128, topk: 8, causal: true, lens: [4100, 2900], Hq: 4, Hkv: 2 },
    { name: 'f16 D64 B80 k4 non-causal, 3 seqs', dtype: 'f16' as const, D: 64, B: 80, topk: 4, causal: false, lens: [1500, 77, 2100], Hq: 3, Hkv: 1 },
    { name: 'bf16 D64 B48 k16 causal, 1 seq 6000', dtype: 'bf16' as const, D: 64, B: 48, topk: 16, causal: true, lens: [6000], Hq: 2, Hkv: 2 },
    { name: 'f16 D128 B32 k64 causal (dense-ish), 1 seq 2500', dtype: 'f16' as const, D: 128, B: 32, topk: 64, causal: true, lens: [2500], Hq: 2, Hkv: 1 },
  ];
  const results: Record<string, unknown>[] = [];
  let ok = true;
  for (const c of cases) {
    const T = c.lens.reduce((a, x) => a + x, 0);
    const cu = new Int32Array(c.lens.length + 1);
    c.lens.forEach((x, i) => (cu[i + 1] = cu[i]! + x));
    const layout: Layout = { cuSeqlens: cu };
    const cfg = { blockSize: c.B, topk: c.topk, causal: c.causal };
    const rng = new Rng(T + c.D);
    const gen = (n: number): Uint16Array => {
      const out = new Uint16Array(n);
      for (let i = 0; i < n; i++) out[i] = c.dtype === 'bf16' ? f32ToBf16(rng.normal()) : f32ToF16(rng.normal());
      return out;
    };
    const host = { q: gen(T * c.Hq * c.D), k: gen(T * c.Hkv * c.D), v: gen(T * c.Hkv * c.D), dOut: gen(T * c.Hq * c.D) };
    const run = async (b: CudaBackend): Promise<{ indices: Int32Array; out: Float32Array; lse: Float32Array; dq: Float32Array; dk: Float32Array; dv: Float32Array }> => {
      const q = await b.upload(hostTensor(c.dtype, [T, c.Hq, c.D], host.q));
      const k = await b.upload(hostTensor(c.dtype, [T, c.Hkv, c.D], host.k));
      const v = await b.upload(hostTensor(c.dtype, [T, c.Hkv, c.D], host.v));
      const dOut = await b.upload(hostTensor(c.dtype, [T, c.Hq, c.D], host.dOut));
      const r = await b.route(q, k, layout, cfg);
      const o = await b.forward(q, k, v, r, layout, cfg);
      const g = await b.backward(q, k, v, o.out, o.lse, dOut, r, layout, cfg);
      const res = { indices: await b.routingIndices(r), out: await toF32(b, o.out), lse: await toF32(b, o.lse), dq: await toF32(b, g.dq), dk: await toF32(b, g.dk), dv: await toF32(b, g.dv) };
      b.dispose(q, k, v, dOut, r, o.out, o.lse, g.dq, g.dk, g.dv);
      return res;
    };
    const a = await run(fast);
    const a2 = await run(split); // the rerun splits the partial-writing kernels into one launch per kv head
    const s = await run(slow);
    const sameRouting = a.indices.every((x, i) => x === s.indices[i]);
    const det = (['out', 'lse', 'dq', 'dk', 'dv'] as const).every((n) => a[n]!.every((x, i) => Object.is(x, a2[n]![i])));
    const diffs = Object.fromEntries((['out', 'lse', 'dq', 'dk', 'dv'] as const).map((n) => [n, relDiff(a[n]!, s[n]!)]));
    // 16-bit outputs: a few ulps of the largest value; gradients go through 16-bit P and dS (as FlashAttention)
    const bad = Object.entries(diffs).filter(([n, d]) => d.nanMismatch > 0 || d.maxRel > (n === 'lse' ? 1e-3 : 3e-2) || d.rms > 2e-2);
    const pass = sameRouting && det && bad.length === 0;
    ok &&= pass;
    results.push({ name: c.name, pass, sameRouting, deterministic: det, diffs });
    log(`  ${pass ? '✓' : '✗'} ${c.name}: ${Object.entries(diffs).map(([n, d]) => `${n} maxRel ${d.maxRel.toExponential(2)} rms ${d.rms.toExponential(2)}${d.nanMismatch ? ` NaN≠ ${d.nanMismatch}` : ''}`).join('; ')}${sameRouting ? '' : '; ROUTING DIFFERS'}${det ? '' : '; NOT DETERMINISTIC (rerun with one kv head per launch)'}`);
  }
  return { ok, results };
}

async function main(): Promise<number> {
  const why = unavailableReason();
  if (why !== null) {
    log(`cuda unavailable: ${why}`);
    return required ? 1 : 0;
  }
  const b = createCudaBackend();
  const report: Record<string, unknown> = { date: new Date().toISOString(), device: b.device, caps: b.caps, listBackendsAdapter: (await probeAdapter()).adapter ?? null };
  let failed = 0;
  const step = async (name: string, fn: () => Promise<unknown>): Promise<unknown> => {
    const t0 = performance.now();
    try {
      const r = await fn();
      log(`[${name}] done in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
      return r;
    } catch (e) {
      failed++;
      const msg = e instanceof Error ? `${e.message}\n${e.stack ?? ''}` : String(e);
      log(`[${name}] CRASHED: ${msg}`);
      return { crashed: msg };
    }
  };
  log(`device: ${b.device.name} (${b.device.arch}, ${b.device.sms} SMs, kernel path ${b.device.kernelPath}: NVRTC ${b.device.targetArch}), driver ${b.device.driverVersion}, NVRTC ${b.device.nvrtcVersion}; listBackends: ${String(report.listBackendsAdapter)}; steps: ${['conformance', 'golden', 'routing', 'fastpath', 'timings', 'cache', 'qk'].filter(wanted).join(', ')}`);
  let conf: unknown = 'skipped', golden: unknown = 'skipped', routing: Record<string, unknown> = { skipped: true }, fastp: Record<string, unknown> = { skipped: true };
  let times: Record<string, unknown>[] | { crashed: string } | 'skipped' = 'skipped';
  if (wanted('conformance')) {
    conf = await step('conformance', async () => {
      const r = await runConformance(b, { factory: () => createCudaBackend(), onResult: (x) => log(`  ${x.skipped ? '-' : x.ok ? '✓' : '✗'} ${x.group}: ${x.name} (${x.ms} ms)${x.ok && !x.skipped ? '' : `\n      ${(x.message ?? '').split('\n').join('\n      ')}`}`) });
      if (r.failed > 0) failed++;
      log(`  conformance: ${summaryLine(r)}`);
      return summarize(r);
    });
    report.conformance = conf;
  }
  if (wanted('golden')) {
    golden = await step('golden', async () => {
      const r = await runConformance(b, { goldenOnly: true });
      if (r.failed > 0) failed++;
      log(`  golden: ${summaryLine(r)}`);
      return summarize(r);
    });
    report.golden = golden;
  }
  if (wanted('routing')) {
    routing = (await step('routing T=64K', async () => {
      const r = await routingCheck(b);
      if (!r.ok) failed++;
      return r;
    })) as Record<string, unknown>;
    report.routing64k = routing;
  }
  if (wanted('fastpath')) {
    fastp = (await step('fast path vs generic kernels', async () => {
      const slow = createCudaBackend({ unstable: { fastPaths: false } });
      const split = createCudaBackend({ unstable: { kvHeadsPerLaunch: 1 } });
      try {
        const r = await fastPathCheck(b, slow, split);
        if (!r.ok) failed++;
        return r;
      } finally {
        await slow.destroy();
        await split.destroy();
      }
    })) as Record<string, unknown>;
    report.fastPath = fastp;
  }
  if (wanted('timings')) {
    times = (await step('timings', () => timings(b, sizes))) as Record<string, unknown>[] | { crashed: string };
    report.timings = times;
  }
  if (wanted('cache')) report.cache = await step('kv cache', async () => { const r = await cacheStep(b, log); if (!r.ok) failed++; return r; });
  if (only.includes('collect')) report.collect = await step('collect two-launch vs legacy', async () => { const r = await collectStep(b, log); if (!r.ok) failed++; return r; });
  if (wanted('qk')) report.qk = await step('qk layout', async () => {
    const generic = createCudaBackend({ unstable: { fastPaths: false } });
    try { const r = await qkStep(b, generic, log); if (!r.ok) failed++; return r; } finally { await generic.destroy(); }
  });
  await b.destroy();
  if (process.env.OUT) {
    mkdirSync(process.env.OUT, { recursive: true });
    writeFileSync(join(process.env.OUT, 'cuda-report.json'), JSON.stringify(report, null, 2));
  }
  // the short table, last
  const line = (x: unknown): string => (x === 'skipped' ? 'skipped' : x && typeof x === 'object' && 'passed' in x ? summaryLine(x as Report) : 'crashed');
  log('');
  log(`conformance (all dtypes): ${line(conf)}`);
  log(`golden cases:             ${line(golden)}`);
  if (routing.skipped) log('routing T=64K bf16:       skipped');
  else log(`routing T=64K bf16:       ${routing.ok ? 'ok' : 'FAILED'} (rerun differs in ${String(routing.rerunDifferingRows)} rows; sampled ${String(routing.sampled)}: exact ${String(routing.exact)}, near-ties ${String(routing.nearTies)}, wrong ${String(routing.wrong)}; route ${String(routing.routeMs)} ms)`);
  log(`fast path vs generic:     ${fastp.skipped ? 'skipped' : fastp.ok ? 'ok' : 'FAILED'}`);
  if (Array.isArray(times)) {
    log('| N | routing ms (collect) | attn fwd ms | fwd ms (incl. routing) | bwd ms | fwd+bwd ms | TFLOP/s route / fwd / bwd | FM fwd | FM attn | FM bwd | FM fwd+bwd |');
    log('|---|---|---|---|---|---|---|---|---|---|---|');
    for (const t of times) {
      const fm = t.fm as { fwd: number; attn: number; bwd: number } | null;
      const tf = t.tflops as { route: number; attnFwd: number; bwd: number };
      log(`| ${Number(t.N) / 1024}K | ${String(t.routingMs)} (${String(t.collectMs)}) | ${String(t.attnFwdMs)} | ${String(t.fwdMs)} | ${String(t.bwdMs)} | ${String(t.fwdBwdMs)} | ${tf.route} / ${tf.attnFwd} / ${tf.bwd} | ${fm ? `${fm.fwd} | ${fm.attn} | ${fm.bwd} | ${(fm.fwd + fm.bwd).toFixed(2)}` : '- | - | - | -'} |`);
    }
  } else log(`timings: ${times === 'skipped' ? 'skipped' : 'crashed'}`);
  if (report.cache) log(`kv cache:                 ${(report.cache as { ok?: boolean }).ok ? 'ok' : 'FAILED'}`);
  if (report.qk) log(`qk layout vs self:        ${(report.qk as { ok?: boolean }).ok ? 'ok' : 'FAILED'}`);
  log(failed === 0 ? 'gpu-check: all passed' : `gpu-check: ${failed} step(s) failed`);
  return failed === 0 ? 0 : 1;
}

if (!process.env.MOBA_GPU_CHECK_NO_MAIN) main().then((code) => process.exit(code), (e: unknown) => {
  log(`gpu-check crashed: ${e instanceof Error ? e.stack : String(e)}`);
  process.exit(1);
});
