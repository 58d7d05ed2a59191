/**
 * A bench helper, not part of the contract: the device's streaming read bandwidth as a compute kernel sees it
 * (the decode bench's "% read BW", bench/decode-bandwidth.ts; the CUDA backend runs the same probe,
 * `read_probe` in cache.cu). copyBufferToBuffer on the H200 via Dawn reaches a quarter of CUDA's copy rate;
 * this probe says whether storage-buffer loads in a compute shader, which the decode attend is made of, are
 * limited the same way.
 */
import { MobaError } from '@moba/core';
import { USAGE } from './buffers.js';
import type { GpuContext } from './device.js';
import type { ShaderSpec } from './pipelines.js';

/** Most workgroups of one dispatch (grid-strided beyond). */
const MAX_GROUPS = 4096;

/**
 * `main`: every vec4<u32> of `src` (the whole binding) read once, grid-strided with four independent 16-byte
 * loads in flight per invocation; the invocations' sums added in workgroup memory and one word per workgroup
 * written to `sink`, so no load can be optimised away.
 */
export const READ_PROBE: ShaderSpec = {
  name: 'read-probe',
  bindings: ['read', 'rw'],
  code: /* wgsl */ `
@group(0) @binding(0) var<storage, read> src: array<vec4<u32>>;
@group(0) @binding(1) var<storage, read_write> sink: array<u32>;
var<workgroup> total: atomic<u32>;

fn fold(a: vec4<u32>, b: vec4<u32>) -> u32 {
  return (a.x ^ b.y) + (a.y ^ b.z) + (a.z ^ b.w) + (a.w ^ b.x);
}

@compute @workgroup_size(256)
fn main(@builtin(local_invocation_index) li: u32, @builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>) {
  let n = arrayLength(&src);
  let s = nw.x * 256u;
  var i = wg.x * 256u + li;
  var acc = 0u;
  loop {
    if (i + 3u * s >= n) { break; }
    let a = src[i];
    let b = src[i + s];
    let c = src[i + 2u * s];
    let d = src[i + 3u * s];
    acc += fold(a, b) + fold(c, d);
    i += 4u * s;
  }
  loop {
    if (i >= n) { break; }
    let a = src[i];
    acc += a.x + a.y + a.z + a.w;
    i += s;
  }
  atomicAdd(&total, acc);
  workgroupBarrier();
  if (li == 0u) { sink[wg.x] = atomicLoad(&total); }
}
`,
};

/** Workgroups of the probe over `words` vec4 words: about four loads per invocation, at most MAX_GROUPS. */
export function readProbeGroups(words: number): number {
  return Math.max(1, Math.min(MAX_GROUPS, Math.ceil(words / 1024)));
}

/**
 * The buffer sizes a read of `bytes` is split into: as many of the largest binding (a multiple of 16 within
 * maxStorageBufferBindingSize and maxBufferSize) as fit, then the rest. Pure.
 */
export function readProbePieces(bytes: number, limits: { maxStorageBufferBindingSize: number; maxBufferSize: number }): number[] {
  const most = Math.floor(Math.min(limits.maxStorageBufferBindingSize, limits.maxBufferSize) / 16) * 16;
  const out: number[] = [];
  for (let left = bytes; left > 0; left -= most) out.push(Math.min(most, left));
  return out;
}

/**
 * Ms of one streaming read of `bytes` (a positive multiple of 16) by `main`: host-timed from an idle queue to
 * onSubmittedWorkDone of one submission of one dispatch per piece (readProbePieces). The scratch buffers are made
 * for the call, read once untimed first (so Dawn's lazy zeroing and the pipeline's compilation stay out of the
 * timing), and destroyed afterwards. E_MEMORY when they would not fit `memoryBytes` next to what is in use.
 */
export async function timeDeviceRead(ctx: GpuContext, memoryBytes: number, bytes: number): Promise<number> {
  if (!Number.isSafeInteger(bytes) || bytes < 16 || bytes % 16 !== 0) {
    throw new MobaError('E_RANGE', `bytes = ${String(bytes)} is invalid: must be a positive safe integer and a multiple of 16`, 'bytes');
  }
  const pieces = readProbePieces(bytes, ctx.limits);
  const sinkBytes = 4 * MAX_GROUPS;
  if (bytes + sinkBytes > memoryBytes - ctx.buffers.inUseBytes) {
    throw new MobaError('E_MEMORY', `timeDeviceRead(): ${bytes} bytes of scratch do not fit the ${memoryBytes - ctx.buffers.inUseBytes} bytes free of memoryBytes`, 'bytes');
  }
  const bufs: GPUBuffer[] = [];
  try {
    for (const size of pieces) bufs.push(ctx.buffers.buffer('read probe', size, USAGE.STORAGE));
    const sink = ctx.buffers.buffer('read probe sink', sinkBytes, USAGE.STORAGE);
    bufs.push(sink);
    const pipeline = ctx.pipeline(READ_PROBE, 'main');
    const dispatches = pieces.map((size, i) => ({ pipeline, buffers: [bufs[i]!, sink], grid: [readProbeGroups(size / 16)] as const }));
    await ctx.run('read probe (warm-up)', dispatches);
    await ctx.device.queue.onSubmittedWorkDone();
    const t0 = performance.now();
    await ctx.run('read probe', dispatches);
    await ctx.device.queue.onSubmittedWorkDone();
    return performance.now() - t0;
  } finally {
    ctx.buffers.free(...bufs); // not COPY_DST: destroyed, not pooled
  }
}
