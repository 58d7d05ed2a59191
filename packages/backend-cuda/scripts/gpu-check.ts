/**
 * The CUDA backend's device check, bundled for the GPU machine (scripts/bundle.sh):
 *  (a) the conformance suite (runConformance, every dtype the caps list), (b) the golden cases alone,
 *  (c) a large routing check: T = 65536, Hq = 16, D = 128, B = 128, topk = 8, bf16: identical across two
 *      runs, and equal to an exact top-k (f64 scores of f32 centroids) on ~256 sampled rows outside near-ties,
 *  (d) timings of the peers.md configuration (batch 2, 16 heads, D 128, bf16, B 128, k 8) at N = 8K and 32K.
 * Writes `$OUT/cuda-report.json` when OUT is set and prints a short table last. Exit 1 on any failure;
 * without CUDA it prints "cuda unavailable: <why>" and exits 0 (1 when MOBA_REQUIRE names cuda).
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { type Backend, type DeviceTensor, type Layout, Rng, bf16ToF32, f32ToBf16, hostTensor } from '@moba/core';
import { type Report, runConformance, summaryLine } from '@moba/testkit';
import { type CudaBackend, createCudaBackend, unavailableReason } from '../src/index.js';

const FM: Record<number, { fwd: number; routing: number; bwd: number }> = { 8192: { fwd: 3.74, routing: 1.16, bwd: 2.14 }, 32768: { fwd: 17.6, routing: 4.23, bwd: 7.67 } };
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

async function timings(b: CudaBackend): Promise<Record<string, unknown>[]> {
  const rows: Record<string, unknown>[] = [];
  for (const N of [8192, 32768]) {
    const T = 2 * N, H = 16, D = 128;
    const rng = new Rng(N);
    const layout: Layout = { cuSeqlens: Int32Array.from([0, N, 2 * N]) };
    const cfg = { blockSize: 128, topk: 8 };
    const up = async (): Promise<DeviceTensor> => b.upload(hostTensor('bf16', [T, H, D], randomBf16(T * H * D, rng).bits));
    const [q, k, v, dOut] = [await up(), await up(), await up(), await up()];
    const time = async (fn: () => Promise<void>, reps = 5): Promise<number> => {
      await fn(); // warm-up (and compilation)
      const ms: number[] = [];
      for (let i = 0; i < reps; i++) {
        b.synchronize();
        const t0 = performance.now();
        await fn(); // every op synchronises before it returns
        ms.push(performance.now() - t0);
      }
      return ms.sort((x, y) => x - y)[Math.floor(reps / 2)]!;
    };
    const routing = await time(async () => b.dispose(await b.route(q, k, layout, cfg)));
    const fwd = await time(async () => {
      const r = await b.route(q, k, layout, cfg);
      const o = await b.forward(q, k, v, r, layout, cfg);
      b.dispose(r, o.out, o.lse);
    });
    const r = await b.route(q, k, layout, cfg);
    const o = await b.forward(q, k, v, r, layout, cfg);
    const bwd = await time(async () => {
      const g = await b.backward(q, k, v, o.out, o.lse, dOut, r, layout, cfg);
      b.dispose(g.dq, g.dk, g.dv);
    });
    b.dispose(q, k, v, dOut, r, o.out, o.lse);
    const fm = FM[N]!;
    rows.push({ N, batch: 2, heads: H, D, dtype: 'bf16', blockSize: 128, topk: 8, routingMs: +routing.toFixed(2), fwdMs: +fwd.toFixed(2), bwdMs: +bwd.toFixed(2), fwdBwdMs: +(fwd + bwd).toFixed(2), fm });
  }
  return rows;
}

async function main(): Promise<number> {
  const why = unavailableReason();
  if (why !== null) {
    log(`cuda unavailable: ${why}`);
    return required ? 1 : 0;
  }
  const b = createCudaBackend();
  const report: Record<string, unknown> = { date: new Date().toISOString(), device: b.device, caps: b.caps };
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
  log(`device: ${b.device.name} (${b.device.arch}, ${b.device.sms} SMs), driver ${b.device.driverVersion}, NVRTC ${b.device.nvrtcVersion}`);
  const conf = (await step('conformance', async () => {
    const r = await runConformance(b, { factory: () => createCudaBackend(), onResult: (x) => log(`  ${x.skipped ? '-' : x.ok ? '✓' : '✗'} ${x.group}: ${x.name} (${x.ms} ms)${x.ok && !x.skipped ? '' : `\n      ${(x.message ?? '').split('\n').join('\n      ')}`}`) });
    if (r.failed > 0) failed++;
    log(`  conformance: ${summaryLine(r)}`);
    return summarize(r);
  })) as ReturnType<typeof summarize> | { crashed: string };
  report.conformance = conf;
  const golden = (await step('golden', async () => {
    const r = await runConformance(b, { goldenOnly: true });
    if (r.failed > 0) failed++;
    log(`  golden: ${summaryLine(r)}`);
    return summarize(r);
  })) as ReturnType<typeof summarize> | { crashed: string };
  report.golden = golden;
  const routing = (await step('routing T=64K', async () => {
    const r = await routingCheck(b);
    if (!r.ok) failed++;
    return r;
  })) as Record<string, unknown>;
  report.routing64k = routing;
  const times = (await step('timings', () => timings(b))) as Record<string, unknown>[] | { crashed: string };
  report.timings = times;
  await b.destroy();
  if (process.env.OUT) {
    mkdirSync(process.env.OUT, { recursive: true });
    writeFileSync(join(process.env.OUT, 'cuda-report.json'), JSON.stringify(report, null, 2));
  }
  // the short table, last
  const line = (x: unknown): string => (x && typeof x === 'object' && 'passed' in x ? summaryLine(x as Report) : 'crashed');
  log('');
  log(`conformance (all dtypes): ${line(conf)}`);
  log(`golden cases:             ${line(golden)}`);
  log(`routing T=64K bf16:       ${routing.ok ? 'ok' : 'FAILED'} (rerun differs in ${String(routing.rerunDifferingRows)} rows; sampled ${String(routing.sampled)}: exact ${String(routing.exact)}, near-ties ${String(routing.nearTies)}, wrong ${String(routing.wrong)}; route ${String(routing.routeMs)} ms)`);
  if (Array.isArray(times)) {
    log('| N | routing ms | fwd ms (incl. routing) | bwd ms | fwd+bwd ms | FM fwd | FM bwd | FM fwd+bwd |');
    log('|---|---|---|---|---|---|---|---|');
    for (const t of times) {
      const fm = t.fm as { fwd: number; bwd: number };
      log(`| ${Number(t.N) / 1024}K | ${String(t.routingMs)} | ${String(t.fwdMs)} | ${String(t.bwdMs)} | ${String(t.fwdBwdMs)} | ${fm.fwd} | ${fm.bwd} | ${(fm.fwd + fm.bwd).toFixed(2)} |`);
    }
  } else log('timings: crashed');
  log(failed === 0 ? 'gpu-check: all passed' : `gpu-check: ${failed} step(s) failed`);
  return failed === 0 ? 0 : 1;
}

if (!process.env.MOBA_GPU_CHECK_NO_MAIN) main().then((code) => process.exit(code), (e: unknown) => {
  log(`gpu-check crashed: ${e instanceof Error ? e.stack : String(e)}`);
  process.exit(1);
});
