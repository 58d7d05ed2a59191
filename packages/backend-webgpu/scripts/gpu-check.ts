/**
 * The WebGPU backend's device check, bundled for the GPU machine (scripts/bundle.sh): Dawn over the
 * machine's Vulkan driver. (a) the adapter, its limits and the tile sizes chosen for D = 128, (b) runConformance
 * with the package's golden cases, (c) wall-clock timings of route / forward / backward in the bench
 * configuration (batch 2, 16 heads, D 128, bf16 inputs, B 128, topk 8) at GPU_CHECK_SIZES (default 8192),
 * median of 3 after a warm-up, each timed to queue completion, (d) unless GPU_CHECK_PROFILE=0, GPU time per
 * kernel (timestamp queries, on another backend so that (c) stays unprofiled) for one route → forward (with
 * collect) → backward at the first size. Writes `$OUT/webgpu-report.json`. (c) and (d) run with a workspace
 * budget of GPU_CHECK_MEMORY_GB (default 96; the default budget of at most 8 GiB stops at about 64K tokens per
 * sequence here), (a) and (b) with the defaults. GPU_CHECK_VARIANTS='{"name": knobs, …}' times (c) and (d) once per
 * set of knobs, those of `WebGpuTuning` and of the unstable `WebGpuUnstable` in one object (A/B of kernels and
 * tile sets in one call).
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { type DeviceTensor, Rng, hostTensor, plan, resolveConfig } from '@moba/core';
import { runConformance, summaryLine } from '@moba/testkit';
import { type WebGpuBackend, type WebGpuTuning, type WebGpuUnstable, createWebGpuBackend } from '../src/index.js';
import { BufferPool, USAGE } from '../src/buffers.js';
import { getGpu } from '../src/device.js';
import { chooseTiles } from '../src/launch.js';

const log = (s: string): void => void process.stdout.write(`${s}\n`);
const sizes = (process.env.GPU_CHECK_SIZES ?? '8192').split(',').map(Number);

const memoryBytes = Number(process.env.GPU_CHECK_MEMORY_GB ?? 96) * 2 ** 30;

/** A variant's knobs: the tuning ones and the unstable experiment ones, in one object. */
type Knobs = WebGpuTuning & WebGpuUnstable;
function options({ dkdvShape, routeKernel, ...tuning }: Knobs): { tuning: WebGpuTuning; unstable: WebGpuUnstable } {
  return { tuning, unstable: { dkdvShape, routeKernel } };
}

/** Median wall time of `f` over n runs, each ended by waiting for the GPU queue to drain. */
async function median(device: GPUDevice, n: number, f: () => Promise<void>): Promise<number> {
  const ts: number[] = [];
  await device.queue.onSubmittedWorkDone();
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    await f();
    await device.queue.onSubmittedWorkDone(); // an op may return before its work finishes
    ts.push(performance.now() - t0);
  }
  return ts.sort((a, b) => a - b)[n >> 1]!;
}

const backend = await createWebGpuBackend();
const report: Record<string, unknown> = { date: new Date().toISOString() };
{
  const dev = backend.device;
  const info = (dev as GPUDevice & { adapterInfo?: GPUAdapterInfo }).adapterInfo;
  const lim = dev.limits;
  const limits = {
    maxComputeWorkgroupStorageSize: lim.maxComputeWorkgroupStorageSize, maxComputeInvocationsPerWorkgroup: lim.maxComputeInvocationsPerWorkgroup,
    maxStorageBufferBindingSize: lim.maxStorageBufferBindingSize, maxBufferSize: lim.maxBufferSize,
  };
  const tiles = chooseTiles(lim, 128);
  report.adapter = { vendor: info?.vendor, architecture: info?.architecture, description: info?.description, limits, tilesD128: tiles };
  log(`adapter: ${info?.vendor} ${info?.architecture} ${info?.description}; ${JSON.stringify(limits)}`);
  const adapter = await (await getGpu())?.requestAdapter({ powerPreference: 'high-performance' });
  const features = adapter ? [...adapter.features].sort() : [];
  const alim = adapter?.limits as unknown as Record<string, number | undefined> | undefined;
  const subgroups = { min: alim?.minSubgroupSize ?? (adapter?.info as unknown as Record<string, number> | undefined)?.subgroupMinSize, max: alim?.maxSubgroupSize ?? (adapter?.info as unknown as Record<string, number> | undefined)?.subgroupMaxSize };
  report.adapterFeatures = features;
  report.subgroups = subgroups;
  log(`adapter features: ${features.join(', ')}; subgroup sizes ${JSON.stringify(subgroups)}`);
  log(`tiles (D 128): forward ${JSON.stringify(tiles.forward)}, dK/dV ${JSON.stringify(tiles.dkdv)}, route ${JSON.stringify(tiles.route)}`);
}
const conf = process.env.GPU_CHECK_ONLY === 'timings' ? { passed: 0, failed: 0, skipped: 0, notCovered: [] as string[], results: [] } : await runConformance(backend, { onResult: (r) => log(`  ${r.ok ? (r.skipped ? '-' : '✓') : '✗'} ${r.group}: ${r.name}${r.ok ? '' : `\n${r.message}`}`) });
report.conformance = { passed: conf.passed, failed: conf.failed, skipped: conf.skipped, notCovered: conf.notCovered };
log(`conformance: ${summaryLine(conf)}`);
await backend.destroy();

// GPU_CHECK_VARIANTS: a JSON object { name: knobs } of backends to time side by side (default: one, untuned)
const variants = Object.entries(JSON.parse(process.env.GPU_CHECK_VARIANTS ?? '{"default":{}}') as Record<string, Knobs>);
const rows: string[] = [];
const timings: unknown[] = [];
for (const [variant, tuning] of variants) {
  const timer = await createWebGpuBackend({ memoryBytes, ...options(tuning) });
  for (const N of sizes) {
    const batch = 2, H = 16, D = 128, T = batch * N;
    const rng = new Rng(N);
    const rand = (): Promise<DeviceTensor> => timer.upload(hostTensor('bf16', [T, H, D], rng.fastNormals(T * H * D, 'bf16')));
    let inputs: DeviceTensor[] = [];
    try {
      inputs = [await rand(), await rand(), await rand(), await rand()];
      const [q, k, v, dOut] = inputs as [DeviceTensor, DeviceTensor, DeviceTensor, DeviceTensor];
      const layout = { cuSeqlens: Int32Array.from([0, N, T]) };
      const cfg = { blockSize: 128, topk: 8 };
      const dev = timer.device;
      let r = await timer.route(q, k, layout, cfg);
      let f = await timer.forward(q, k, v, r, layout, cfg);
      const route = await median(dev, 3, async () => { timer.dispose(r); r = await timer.route(q, k, layout, cfg); });
      const fwd = await median(dev, 3, async () => { timer.dispose(f.out, f.lse); f = await timer.forward(q, k, v, r, layout, cfg); });
      const bwd = await median(dev, 3, async () => { const g = await timer.backward(q, k, v, f.out, f.lse, dOut, r, layout, cfg); timer.dispose(g.dq, g.dk, g.dv); });
      const p = plan({ T, Hq: H, Hkv: H, D, dtype: 'bf16' }, layout, resolveConfig(cfg, D));
      const t = { variant, N, routeMs: route, fwdMs: fwd, bwdMs: bwd, fwdTflops: p.flops.forward / fwd / 1e9, bwdTflops: p.flops.backward / bwd / 1e9 };
      timings.push(t);
      rows.push(`| ${variant} | ${N / 1024}K | ${route.toFixed(1)} | ${fwd.toFixed(1)} | ${bwd.toFixed(1)} | ${(route + fwd + bwd).toFixed(1)} | ${t.fwdTflops.toFixed(2)} / ${t.bwdTflops.toFixed(2)} |`);
      timer.dispose(r, f.out, f.lse);
    } catch (e) {
      rows.push(`| ${variant} | ${N / 1024}K | failed: ${(e as Error).message.split('\n')[0]} |`);
    }
    if (inputs.length > 0) timer.dispose(...inputs);
  }
  if (variant === variants[0]![0]) report.overheads = await overheads(timer.device);
  await timer.destroy();
}
log(`host-side costs (ms, median of 5): ${JSON.stringify(report.overheads)}`);
report.timings = timings;

/**
 * What an op pays outside its kernels, to explain wall time far above GPU time: an empty queue round trip, an
 * error-scope push/pop, and creating, clearing (first use) and destroying storage buffers of the sizes the ops
 * allocate per call (partials are ~1 GiB at 8K in the 16-head, D 128, bf16, B 128, top-8 bench configuration).
 */
async function overheads(dev: GPUDevice): Promise<Record<string, number>> {
  const med = async (f: () => Promise<void>): Promise<number> => {
    const ts: number[] = [];
    for (let i = 0; i < 5; i++) {
      await dev.queue.onSubmittedWorkDone();
      const t0 = performance.now();
      await f();
      ts.push(performance.now() - t0);
    }
    return ts.sort((a, b) => a - b)[2]!;
  };
  const out: Record<string, number> = {};
  out.queueRoundTrip = await med(() => dev.queue.onSubmittedWorkDone());
  out.errorScope = await med(async () => { dev.pushErrorScope('validation'); await dev.popErrorScope(); });
  for (const mib of [64, 1024]) {
    out[`buffer${mib}MiB`] = await med(async () => {
      const b = dev.createBuffer({ size: mib * 2 ** 20, usage: USAGE.STORAGE | USAGE.COPY_DST });
      const enc = dev.createCommandEncoder();
      enc.clearBuffer(b);
      dev.queue.submit([enc.finish()]);
      await dev.queue.onSubmittedWorkDone();
      b.destroy();
    });
  }
  { // the same 64 MiB through the backend's recycler: acquired from its free list, cleared, given back
    const pool = new BufferPool(dev, dev.limits);
    pool.poolCapBytes = 2 ** 27;
    pool.free(pool.buffer('warm', 2 ** 26, undefined, true));
    out.recycled64MiB = await med(async () => {
      const b = pool.buffer('recycled', 2 ** 26, undefined, true);
      await dev.queue.onSubmittedWorkDone();
      pool.free(b);
    });
    pool.destroy();
  }
  return out;
}

/** GPU ms per kernel for one route → forward (collects) → backward on a profiled backend, after a warm-up. */
async function breakdown(N: number, knobs: Knobs): Promise<[string, number][]> {
  const b: WebGpuBackend = await createWebGpuBackend({ profile: true, memoryBytes, ...options(knobs) });
  try {
    const batch = 2, H = 16, D = 128, T = batch * N;
    const rng = new Rng(N);
    const up = (): Promise<DeviceTensor> => b.upload(hostTensor('bf16', [T, H, D], rng.fastNormals(T * H * D, 'bf16')));
    const [q, k, v, dOut] = [await up(), await up(), await up(), await up()];
    const layout = { cuSeqlens: Int32Array.from([0, N, T]) };
    const cfg = { blockSize: 128, topk: 8 };
    for (let rep = 0; rep < 2; rep++) { // the first run compiles the pipelines
      b.clearTimings();
      const r = await b.route(q, k, layout, cfg);
      const f = await b.forward(q, k, v, r, layout, cfg);
      const g = await b.backward(q, k, v, f.out, f.lse, dOut, r, layout, cfg);
      b.dispose(r, f.out, f.lse, g.dq, g.dk, g.dv);
    }
    b.dispose(q, k, v, dOut);
    return [...b.timings()].sort((x, y) => y[1] - x[1]);
  } finally {
    await b.destroy();
  }
}

if (process.env.GPU_CHECK_PROFILE !== '0' && sizes.length > 0) {
  const perVariant: Record<string, unknown> = {};
  for (const [variant, tuning] of variants) {
    try {
      const kernels = await breakdown(sizes[0]!, tuning);
      perVariant[variant] = Object.fromEntries(kernels);
      log(`GPU ms per kernel at ${sizes[0]! / 1024}K, ${variant} (route, forward with collect, backward):`);
      for (const [name, ms] of kernels) log(`  ${name.padEnd(36)} ${ms.toFixed(2)}`);
    } catch (e) {
      log(`per-kernel profile (${variant}) failed: ${(e as Error).message.split('\n')[0]}`);
    }
  }
  report.kernels = { N: sizes[0], ms: perVariant };
}
if (process.env.OUT) {
  mkdirSync(process.env.OUT, { recursive: true });
  writeFileSync(join(process.env.OUT, 'webgpu-report.json'), JSON.stringify(report, null, 1));
}
log('| variant | N | route ms | fwd ms | bwd ms | total ms | TFLOP/s fwd / bwd |');
log('|---|---|---|---|---|---|---|');
for (const r of rows) log(r);
process.exit(conf.failed > 0 ? 1 : 0);
