/**
 * A/B of the two dK/dV kernels on one GPU (not a test): `tuning: { dkdv: 'v1' }` (the first kernel,
 * backward-dkdv-v1.wgsl.ts) against the default 'v2' (backward-dkdv.wgsl.ts), in the peers.md configuration
 * (batch 2, 16 heads, D 128, bf16, B 128, topk 8, causal) at AB_SIZES tokens per sequence (default 32768).
 * Per kernel and size: GPU ms per backward of every backward kernel (timestamp queries, mean of AB_REPS calls
 * after a warm-up that compiles), the backward's wall time on an unprofiled backend (median of AB_REPS, each to
 * queue completion), and whether dq, dk, dv are bit-identical between the kernels (they sum in the same order).
 * Bundle and run on the GPU machine like gpu-check (scripts/bundle.sh builds .device/webgpu/dkdv-ab.mjs):
 *   source .device/enter.sh && AB_SIZES=8192,32768 OUT=$OUT node .device/webgpu/dkdv-ab.mjs
 * Locally: node --conditions=@moba/source --import tsx packages/backend-webgpu/scripts/dkdv-ab.ts
 * Env: AB_SIZES, AB_REPS (3), AB_BATCH (2), AB_H (16), AB_D (128), AB_MEMORY_GB (96), AB_DTYPE (bf16 | f32),
 * AB_KERNELS: variants separated by ';', default 'v1;v2'; a v2 variant may impose shape fields
 * (tuning.dkdvShape), e.g. 'v1;v2;v2:dk=8;v2:rc=4,vk=4'. Every variant is compared with the first.
 * Writes $OUT/dkdv-ab.json when OUT is set.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { type DType, type DeviceTensor, type HostTensor, Rng, f32ToBf16, hostTensor, plan, resolveConfig } from '@moba/core';
import { type WebGpuBackend, type WebGpuTuning, createWebGpuBackend } from '../src/index.js';

const log = (s: string): void => void process.stdout.write(`${s}\n`);
const env = (name: string, dflt: string): string => process.env[name] ?? dflt;
const sizes = env('AB_SIZES', '32768').split(',').map(Number);
const reps = Number(env('AB_REPS', '3'));
const batch = Number(env('AB_BATCH', '2'));
const H = Number(env('AB_H', '16'));
const D = Number(env('AB_D', '128'));
const kernels = env('AB_KERNELS', 'v1;v2').split(';');
const memoryBytes = Number(env('AB_MEMORY_GB', '96')) * 2 ** 30;
const dtype = env('AB_DTYPE', 'bf16') as DType;
const cfg = { blockSize: 128, topk: 8 };

/** 'v1', 'v2' or 'v2:dk=8,rc=4' → the tuning option. */
function tuningOf(variant: string): WebGpuTuning {
  const [kernel, fields] = variant.split(':');
  const shape = Object.fromEntries((fields ?? '').split(',').filter(Boolean).map((f) => [f.split('=')[0], Number(f.split('=')[1])]));
  return { dkdv: kernel as 'v1' | 'v2', dkdvShape: shape };
}

interface Inputs { q: DeviceTensor; k: DeviceTensor; v: DeviceTensor; dOut: DeviceTensor }

const hostInputs = new Map<number, HostTensor[]>(); // per size, made once (the RNG is slow) and uploaded to every backend

async function inputs(b: WebGpuBackend, N: number): Promise<Inputs> {
  const T = batch * N;
  let host = hostInputs.get(N);
  if (!host) {
    const rng = new Rng(N);
    const one = (): HostTensor => {
      if (dtype === 'f32') return hostTensor('f32', [T, H, D], Float32Array.from({ length: T * H * D }, () => rng.normal()));
      const bits = new Uint16Array(T * H * D);
      for (let i = 0; i < bits.length; i++) bits[i] = f32ToBf16(rng.normal());
      return hostTensor('bf16', [T, H, D], bits);
    };
    hostInputs.set(N, (host = [one(), one(), one(), one()]));
  }
  const [q, k, v, dOut] = await Promise.all(host.map((t) => b.upload(t)));
  return { q: q!, k: k!, v: v!, dOut: dOut! };
}

/** GPU ms per backward kernel (mean of `reps` calls) and the last call's dq, dk, dv. */
async function profiled(kernel: string, N: number): Promise<{ ms: Record<string, number>; grads: HostTensor[] }> {
  const b = await createWebGpuBackend({ profile: true, memoryBytes, tuning: tuningOf(kernel) });
  try {
    const x = await inputs(b, N);
    const layout = { cuSeqlens: Int32Array.from({ length: batch + 1 }, (_, i) => i * N) };
    const r = await b.route(x.q, x.k, layout, cfg);
    const f = await b.forward(x.q, x.k, x.v, r, layout, cfg);
    let grads: HostTensor[] = [];
    for (let i = 0; i <= reps; i++) {
      if (i === 1) b.clearTimings(); // call 0 compiles
      const g = await b.backward(x.q, x.k, x.v, f.out, f.lse, x.dOut, r, layout, cfg);
      if (i === reps) grads = [await b.download(g.dq), await b.download(g.dk), await b.download(g.dv)];
      b.dispose(g.dq, g.dk, g.dv);
    }
    const ms = Object.fromEntries([...b.timings()].map(([name, t]) => [name, t / reps]));
    b.dispose(x.q, x.k, x.v, x.dOut, r, f.out, f.lse);
    return { ms, grads };
  } finally {
    await b.destroy();
  }
}

/** Median wall ms of one backward (to queue completion) on an unprofiled backend. */
async function wall(kernel: string, N: number): Promise<number> {
  const b = await createWebGpuBackend({ memoryBytes, tuning: tuningOf(kernel) });
  try {
    const x = await inputs(b, N);
    const layout = { cuSeqlens: Int32Array.from({ length: batch + 1 }, (_, i) => i * N) };
    const r = await b.route(x.q, x.k, layout, cfg);
    const f = await b.forward(x.q, x.k, x.v, r, layout, cfg);
    const ts: number[] = [];
    for (let i = 0; i <= reps; i++) {
      await b.device.queue.onSubmittedWorkDone();
      const t0 = performance.now();
      const g = await b.backward(x.q, x.k, x.v, f.out, f.lse, x.dOut, r, layout, cfg);
      await b.device.queue.onSubmittedWorkDone();
      if (i > 0) ts.push(performance.now() - t0); // call 0 compiles
      b.dispose(g.dq, g.dk, g.dv);
    }
    b.dispose(x.q, x.k, x.v, x.dOut, r, f.out, f.lse);
    return ts.sort((p, q) => p - q)[ts.length >> 1]!;
  } finally {
    await b.destroy();
  }
}

/** Elements whose bits differ, and the largest absolute difference. */
function compare(a: HostTensor, b: HostTensor): { differ: number; maxAbs: number } {
  const x = a.data;
  const y = b.data;
  let differ = 0;
  let maxAbs = 0;
  for (let i = 0; i < x.length; i++) {
    if (x[i] !== y[i]) {
      differ++;
      const u = a.dtype === 'f32' ? x[i]! : new Float32Array(new Uint32Array([x[i]! << 16]).buffer)[0]!;
      const w = b.dtype === 'f32' ? y[i]! : new Float32Array(new Uint32Array([y[i]! << 16]).buffer)[0]!;
      maxAbs = Math.max(maxAbs, Math.abs(u - w));
    }
  }
  return { differ, maxAbs };
}

const report: Record<string, unknown>[] = [];
for (const N of sizes) {
  const p = plan({ T: batch * N, Hq: H, Hkv: H, D, dtype }, { cuSeqlens: Int32Array.from({ length: batch + 1 }, (_, i) => i * N) }, resolveConfig(cfg, D));
  const runs = new Map<string, { ms: Record<string, number>; grads: HostTensor[]; wall: number }>();
  for (const kernel of kernels) {
    const prof = await profiled(kernel, N);
    const w = await wall(kernel, N);
    runs.set(kernel, { ...prof, wall: w });
    const dkdv = Object.entries(prof.ms).filter(([name]) => name.includes('dkdv')).reduce((a, [, t]) => a + t, 0);
    const gpu = Object.values(prof.ms).reduce((a, t) => a + t, 0);
    log(`${N / 1024}K ${kernel}: backward-dkdv ${dkdv.toFixed(2)} ms GPU (${(p.flops.backward / dkdv / 1e9).toPrecision(3)} TFLOP/s of the whole backward's FLOP), `
      + `all backward kernels ${gpu.toFixed(2)} ms GPU, backward wall ${w.toFixed(1)} ms`);
    for (const [name, t] of Object.entries(prof.ms).sort((a, b) => b[1] - a[1])) log(`    ${name.padEnd(44)} ${t.toFixed(2)}`);
    report.push({ N, kernel, dkdvMs: dkdv, backwardGpuMs: gpu, backwardWallMs: w, kernels: prof.ms, backwardFlop: p.flops.backward });
  }
  const a = runs.get(kernels[0]!)!;
  for (const kernel of kernels.slice(1)) {
    const b = runs.get(kernel)!;
    const same = ['dq', 'dk', 'dv'].map((name, i) => ({ name, ...compare(a.grads[i]!, b.grads[i]!) }));
    log(`${N / 1024}K ${kernels[0]} vs ${kernel}: ${same.map((s) => `${s.name} ${s.differ === 0 ? 'bit-identical' : `${s.differ} differ (max |Δ| ${s.maxAbs})`}`).join(', ')}`);
    report.push({ N, compare: [kernels[0], kernel], result: same });
  }
}
if (process.env.OUT) {
  mkdirSync(process.env.OUT, { recursive: true });
  writeFileSync(join(process.env.OUT, 'dkdv-ab.json'), JSON.stringify(report, null, 1));
}
process.exit(0);
