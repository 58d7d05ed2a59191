/**
 * The f32 FMA peak of a WebGPU device, measured with a WGSL kernel of long independent FMA chains: every
 * invocation runs CHAINS independent accumulators, each `x = fma(x, a, b)` UNROLL times per loop trip (a, b
 * from a uniform, so nothing folds), and stores their sum (so nothing is dead). The iteration count is doubled
 * until one dispatch takes `targetMs`; then the median and best of `runs` dispatches, each timed from submit
 * to `queue.onSubmittedWorkDone()`. FLOPs = invocations · iterations · CHAINS · UNROLL · 2.
 */
import type { WebGpuBackend } from '@moba/backend-webgpu';

type Device = WebGpuBackend['device'];

const CHAINS = 8;
const UNROLL = 8;
const WG = 256;
// GPUBufferUsage / GPUMapMode (the globals are absent in Node)
const U = { MAP_READ: 0x1, COPY_SRC: 0x4, COPY_DST: 0x8, UNIFORM: 0x40, STORAGE: 0x80 } as const;

/** The kernel's WGSL (exported for tests). */
export function fmaShader(chains = CHAINS, unroll = UNROLL): string {
  const xs = Array.from({ length: chains }, (_, c) => c);
  const body = Array.from({ length: unroll }, () => xs.map((c) => `x${c} = fma(x${c}, p.a, p.b);`).join(' ')).join('\n      ');
  return `
struct Params { a: f32, b: f32, iters: u32, pad: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let seed = f32(gid.x) * 1e-7;
  ${xs.map((c) => `var x${c} = seed + ${c}.0;`).join(' ')}
  for (var n = 0u; n < p.iters; n++) {
      ${body}
  }
  out[gid.x] = ${xs.map((c) => `x${c}`).join(' + ')};
}
`;
}

export interface FmaPeak {
  /** Median and best rate over the timed dispatches (GFLOP/s). */
  readonly gflopsMedian: number;
  readonly gflopsBest: number;
  readonly msMedian: number;
  readonly invocations: number;
  readonly iterations: number;
  readonly flopsPerDispatch: number;
  readonly runs: number;
  readonly chains: number;
  readonly unroll: number;
  /** The first invocation's stored sum (finite when the kernel ran). */
  readonly sample: number;
}

export interface FmaOptions {
  /** Workgroups of 256 invocations (default 4096: ~1M invocations, several waves on any current GPU). */
  readonly workgroups?: number;
  /** Grow the iteration count until one dispatch takes this long (default 100 ms). */
  readonly targetMs?: number;
  /** Timed dispatches at the final count (default 5). */
  readonly runs?: number;
  /** Upper bound of the iteration count (default 2^22). */
  readonly maxIterations?: number;
}

/** Measures the device's f32 FMA rate. Creates and destroys its own buffers; leaves the device usable. */
export async function measureFmaPeak(device: Device, opts: FmaOptions = {}): Promise<FmaPeak> {
  const workgroups = Math.min(opts.workgroups ?? 4096, device.limits.maxComputeWorkgroupsPerDimension);
  const invocations = workgroups * WG;
  const targetMs = opts.targetMs ?? 100;
  const runs = opts.runs ?? 5;
  const maxIterations = opts.maxIterations ?? 2 ** 22;
  const module = device.createShaderModule({ label: 'fma-peak', code: fmaShader() });
  const pipeline = await device.createComputePipelineAsync({ label: 'fma-peak', layout: 'auto', compute: { module, entryPoint: 'main' } });
  const params = device.createBuffer({ label: 'fma-peak params', size: 16, usage: U.UNIFORM | U.COPY_DST });
  const out = device.createBuffer({ label: 'fma-peak out', size: invocations * 4, usage: U.STORAGE | U.COPY_SRC });
  const read = device.createBuffer({ label: 'fma-peak read', size: 16, usage: U.MAP_READ | U.COPY_DST });
  const bind = device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries: [{ binding: 0, resource: { buffer: params } }, { binding: 1, resource: { buffer: out } }] });
  const setIters = (iters: number): void => {
    const p = new ArrayBuffer(16);
    new Float32Array(p, 0, 2).set([0.999, 0.001]); // x → 1: bounded, never denormal
    new Uint32Array(p, 8, 2).set([iters, 0]);
    device.queue.writeBuffer(params, 0, p);
  };
  const dispatch = async (): Promise<number> => {
    await device.queue.onSubmittedWorkDone();
    const enc = device.createCommandEncoder();
    const pass = enc.beginComputePass();
    pass.setPipeline(pipeline);
    pass.setBindGroup(0, bind);
    pass.dispatchWorkgroups(workgroups);
    pass.end();
    const t0 = performance.now();
    device.queue.submit([enc.finish()]);
    await device.queue.onSubmittedWorkDone();
    return performance.now() - t0;
  };
  device.pushErrorScope('validation');
  let scoped = true;
  try {
    let iters = 64;
    setIters(iters);
    let ms = await dispatch(); // also the pipeline's first run
    while (ms < targetMs && iters < maxIterations) {
      iters = Math.min(maxIterations, iters * Math.max(2, Math.min(16, 2 ** Math.floor(Math.log2(targetMs / Math.max(ms, 0.01))))));
      setIters(iters);
      ms = await dispatch();
    }
    const times: number[] = [];
    for (let i = 0; i < runs; i++) times.push(await dispatch());
    scoped = false;
    const err = await device.popErrorScope();
    if (err) throw new Error(`the FMA kernel failed validation: ${err.message}`);
    const enc = device.createCommandEncoder();
    enc.copyBufferToBuffer(out, 0, read, 0, 16);
    device.queue.submit([enc.finish()]);
    await read.mapAsync(U.MAP_READ);
    const sample = new Float32Array(read.getMappedRange().slice(0))[0]!;
    read.unmap();
    const flops = invocations * iters * CHAINS * UNROLL * 2;
    const sorted = [...times].sort((a, b) => a - b);
    const med = sorted.length % 2 ? sorted[sorted.length >> 1]! : (sorted[(sorted.length >> 1) - 1]! + sorted[sorted.length >> 1]!) / 2;
    return {
      gflopsMedian: flops / (med * 1e6), gflopsBest: flops / (sorted[0]! * 1e6), msMedian: med, invocations, iterations: iters,
      flopsPerDispatch: flops, runs, chains: CHAINS, unroll: UNROLL, sample,
    };
  } finally {
    if (scoped) await device.popErrorScope().catch(() => null);
    params.destroy();
    out.destroy();
    read.destroy();
  }
}
