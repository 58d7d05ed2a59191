/**
 * The WebGPU backend's device check, bundled for the GPU machine (scripts/bundle.sh): Dawn over the
 * machine's Vulkan driver. (a) runConformance with the package's golden cases, (b) wall-clock timings of
 * route / forward / backward in the peers.md configuration (batch 2, 16 heads, D 128, bf16 inputs, B 128,
 * topk 8) at GPU_CHECK_SIZES (default 8192), median of 3 after a warm-up, each timed to queue completion. Writes `$OUT/webgpu-report.json`.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { type DeviceTensor, Rng, f32ToBf16, hostTensor, plan, resolveConfig } from '@moba/core';
import { runConformance, summaryLine } from '@moba/testkit';
import { createWebGpuBackend } from '../src/index.js';

const log = (s: string): void => void process.stdout.write(`${s}\n`);
const sizes = (process.env.GPU_CHECK_SIZES ?? '8192').split(',').map(Number);

/** Median wall time of `f` over n runs, each ended by waiting for the GPU queue to drain. */
async function median(n: number, f: () => Promise<void>): Promise<number> {
  const ts: number[] = [];
  await backend.device.queue.onSubmittedWorkDone();
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    await f();
    await backend.device.queue.onSubmittedWorkDone(); // an op may return before its work finishes
    ts.push(performance.now() - t0);
  }
  return ts.sort((a, b) => a - b)[n >> 1]!;
}

const backend = await createWebGpuBackend();
const report: Record<string, unknown> = { date: new Date().toISOString() };
const conf = process.env.GPU_CHECK_ONLY === 'timings' ? { passed: 0, failed: 0, skipped: 0, notCovered: [] as string[], results: [] } : await runConformance(backend, { onResult: (r) => log(`  ${r.ok ? (r.skipped ? '-' : '✓') : '✗'} ${r.group}: ${r.name}${r.ok ? '' : `\n${r.message}`}`) });
report.conformance = { passed: conf.passed, failed: conf.failed, skipped: conf.skipped, notCovered: conf.notCovered };
log(`conformance: ${summaryLine(conf)}`);

const rows: string[] = [];
const timings: unknown[] = [];
for (const N of sizes) {
  const batch = 2, H = 16, D = 128, T = batch * N;
  const rng = new Rng(N);
  const rand = (): DeviceTensor | Promise<DeviceTensor> => {
    const bits = new Uint16Array(T * H * D);
    for (let i = 0; i < bits.length; i++) bits[i] = f32ToBf16(rng.normal());
    return backend.upload(hostTensor('bf16', [T, H, D], bits));
  };
  const [q, k, v, dOut] = [await rand(), await rand(), await rand(), await rand()];
  const layout = { cuSeqlens: Int32Array.from([0, N, T]) };
  const cfg = { blockSize: 128, topk: 8 };
  try {
    let r = await backend.route(q, k, layout, cfg);
    let f = await backend.forward(q, k, v, r, layout, cfg);
    const route = await median(3, async () => { backend.dispose(r); r = await backend.route(q, k, layout, cfg); });
    const fwd = await median(3, async () => { backend.dispose(f.out, f.lse); f = await backend.forward(q, k, v, r, layout, cfg); });
    const bwd = await median(3, async () => { const g = await backend.backward(q, k, v, f.out, f.lse, dOut, r, layout, cfg); backend.dispose(g.dq, g.dk, g.dv); });
    const p = plan({ T, Hq: H, Hkv: H, D, dtype: 'bf16' }, layout, resolveConfig(cfg, D));
    const t = { N, routeMs: route, fwdMs: fwd, bwdMs: bwd, fwdTflops: p.flops.forward / fwd / 1e9, bwdTflops: p.flops.backward / bwd / 1e9 };
    timings.push(t);
    rows.push(`| ${N / 1024}K | ${route.toFixed(1)} | ${fwd.toFixed(1)} | ${bwd.toFixed(1)} | ${(route + fwd + bwd).toFixed(1)} | ${t.fwdTflops.toFixed(2)} / ${t.bwdTflops.toFixed(2)} |`);
    backend.dispose(r, f.out, f.lse);
  } catch (e) {
    rows.push(`| ${N / 1024}K | failed: ${(e as Error).message.split('\n')[0]} |`);
  }
  backend.dispose(q, k, v, dOut);
}
report.timings = timings;
if (process.env.OUT) {
  mkdirSync(process.env.OUT, { recursive: true });
  writeFileSync(join(process.env.OUT, 'webgpu-report.json'), JSON.stringify(report, null, 1));
}
await backend.destroy();
log('| N | route ms | fwd ms | bwd ms | total ms | TFLOP/s fwd / bwd |');
log('|---|---|---|---|---|---|');
for (const r of rows) log(r);
process.exit(conf.failed > 0 ? 1 : 0);
