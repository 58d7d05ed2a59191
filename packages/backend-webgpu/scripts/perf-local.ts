/**
 * Local timing of the WebGPU backend (not a test): route, forward (first call, which also collects the
 * routing, then a second call), backward, each timed to queue completion (`onSubmittedWorkDone`), median of
 * PERF_REPS (default 3) after a warm-up. On a software adapter (lavapipe) only the ratios mean anything.
 *   node --conditions=@moba/source --import tsx packages/backend-webgpu/scripts/perf-local.ts
 * Env: PERF_T (tokens per sequence, default 2048), PERF_BATCH (2), PERF_H (2), PERF_D (128), PERF_B (128),
 * PERF_K (8), PERF_REPS (3), PERF_PROFILE=1 for a per-kernel breakdown (timestamp queries, when the adapter has them),
 * PERF_TUNING='{"workgroupStorage":16384}' for the `tuning` option (smaller budgets than the device's).
 */
import { type DeviceTensor, Rng, hostTensor, plan, resolveConfig } from '@moba/core';
import { createWebGpuBackend } from '../src/index.js';

const env = (name: string, dflt: number): number => Number(process.env[name] ?? dflt);
const N = env('PERF_T', 2048);
const batch = env('PERF_BATCH', 2);
const H = env('PERF_H', 2);
const D = env('PERF_D', 128);
const cfg = { blockSize: env('PERF_B', 128), topk: env('PERF_K', 8) };
const reps = env('PERF_REPS', 3);
const T = batch * N;

const backend = await createWebGpuBackend({ profile: process.env.PERF_PROFILE === '1', ...(process.env.PERF_TUNING ? { tuning: JSON.parse(process.env.PERF_TUNING) } : {}) });
const device = backend.device;

async function timed(f: () => Promise<void>): Promise<number> {
  await device.queue.onSubmittedWorkDone();
  const t0 = performance.now();
  await f();
  await device.queue.onSubmittedWorkDone(); // an op may return before its work finishes
  return performance.now() - t0;
}

async function median(f: () => Promise<void>): Promise<number> {
  const ts: number[] = [];
  for (let i = 0; i < reps; i++) ts.push(await timed(f));
  return ts.sort((a, b) => a - b)[reps >> 1]!;
}

const rng = new Rng(N);
const rand = (): Promise<DeviceTensor> => backend.upload(hostTensor('f32', [T, H, D], Float32Array.from({ length: T * H * D }, () => rng.normal())));
const [q, k, v, dOut] = [await rand(), await rand(), await rand(), await rand()];
const layout = { cuSeqlens: Int32Array.from({ length: batch + 1 }, (_, i) => i * N) };

// warm-up: compiles every pipeline
let r = await backend.route(q, k, layout, cfg);
let f = await backend.forward(q, k, v, r, layout, cfg);
const g0 = await backend.backward(q, k, v, f.out, f.lse, dOut, r, layout, cfg);
backend.dispose(g0.dq, g0.dk, g0.dv);
backend.clearTimings();

const route = await median(async () => { backend.dispose(r); r = await backend.route(q, k, layout, cfg); });
const first = await median(async () => {
  backend.dispose(r, f.out, f.lse);
  r = await backend.route(q, k, layout, cfg);
  f = await backend.forward(q, k, v, r, layout, cfg);
}) - route;
const fwd = await median(async () => { backend.dispose(f.out, f.lse); f = await backend.forward(q, k, v, r, layout, cfg); });
const bwd = await median(async () => { const g = await backend.backward(q, k, v, f.out, f.lse, dOut, r, layout, cfg); backend.dispose(g.dq, g.dk, g.dv); });
const p = plan({ T, Hq: H, Hkv: H, D, dtype: 'f32' }, layout, resolveConfig(cfg, D));
const info = (device as GPUDevice & { adapterInfo?: GPUAdapterInfo }).adapterInfo;
process.stdout.write(`${info?.description ?? 'webgpu'}: batch ${batch} × T ${N}, H ${H}, D ${D}, B ${cfg.blockSize}, k ${cfg.topk} (median of ${reps})\n`);
process.stdout.write(`route ${route.toFixed(1)} ms | forward ${fwd.toFixed(1)} ms (first, with collect: ${first.toFixed(1)} ms) | backward ${bwd.toFixed(1)} ms\n`);
process.stdout.write(`GFLOP/s: forward ${(p.flops.forward / fwd / 1e6).toFixed(1)}, backward ${(p.flops.backward / bwd / 1e6).toFixed(1)}\n`);
const kernels = backend.timings();
if (kernels.size > 0) {
  process.stdout.write('per kernel (GPU time, all timed calls):\n');
  for (const [name, ms] of [...kernels].sort((a, b) => b[1] - a[1])) process.stdout.write(`  ${name.padEnd(40)} ${ms.toFixed(1)} ms\n`);
}
backend.dispose(q, k, v, dOut, r, f.out, f.lse);
await backend.destroy();
process.exit(0);
