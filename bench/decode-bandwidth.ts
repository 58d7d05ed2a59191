/**
 * The device bandwidths a decode run is judged against, measured in the same run: the copy bandwidth (a large
 * device-to-device copy, read + write bytes counted) and the read bandwidth (a streaming read-and-reduce kernel
 * over a large buffer, read bytes counted: the access pattern of a decode attend). Both are slopes over two sizes,
 * so the fixed launch and synchronisation cost of one timing cancels.
 */
import { type Backend, MobaError } from 'moba-ts';
import { median } from './measure.js';

/** A device bandwidth ("% copy BW" and "% read BW" divide by these). */
export interface Bandwidth {
  /** Bytes per second (copy: read + written; read: read) of a large operation on the device; null when not measured. */
  readonly bytesPerSecond: number | null;
  /** The plain figure of the larger operation, its fixed launch + sync cost included (slopeRate). */
  readonly singleBytesPerSecond?: number;
  readonly how: string;
}

/** The copy bandwidth (read + write bytes counted). */
export type CopyBandwidth = Bandwidth;

/** What a bandwidth counts: a copy's bytes twice (read + write), a read's once. */
export type Counted = 'read + write' | 'read';

/**
 * Bandwidth from the slope of two sizes: `time(n)` runs (and waits for) an operation on `n` units of `unit` bytes;
 * best of 7 each of `lo` and `hi` units, interleaved, after a warm-up of both. The bytes counted of `hi − lo` units
 * over the difference of the bests: the fixed launch and synchronisation cost of one timing cancels, as in torch's
 * CUDA-event figure. `singleBytesPerSecond` keeps the plain figure of the `hi` operation (cost included).
 */
export async function slopeRate(time: (n: number) => Promise<number>, unit: number, lo: number, hi: number, what: string, counted: Counted): Promise<Bandwidth> {
  const k = counted === 'read' ? 1 : 2;
  const noun = counted === 'read' ? 'read' : 'copy';
  await time(lo);
  await time(hi);
  const a: number[] = [];
  const c: number[] = [];
  for (let i = 0; i < 7; i++) {
    a.push(await time(lo));
    c.push(await time(hi));
  }
  const ta = Math.min(...a);
  const tc = Math.min(...c);
  const single = (k * unit * hi) / (tc / 1e3);
  if (!(tc > ta)) return { bytesPerSecond: single, singleBytesPerSecond: single, how: `${what}: best of 7 of ${hi} (the ${lo}-unit ${noun} was not faster), ${counted} counted` };
  return {
    bytesPerSecond: (k * unit * (hi - lo)) / ((tc - ta) / 1e3), singleBytesPerSecond: single,
    how: `${what}: ${counted} bytes over the difference of the best of 7 of ${hi} and of ${lo} (fixed cost cancelled)`,
  };
}

/** `slopeRate` of a copy (read + write bytes counted). */
export function slopeCopy(time: (n: number) => Promise<number>, unit: number, lo: number, hi: number, what: string): Promise<Bandwidth> {
  return slopeRate(time, unit, lo, hi, what, 'read + write');
}

/**
 * The bench probes a backend may offer (CUDA and WebGPU do): ms of one device-to-device copy of `bytes`, and of
 * one streaming read of `bytes` (a multiple of 16) by a read-and-reduce kernel, each on scratch buffers and
 * waited for.
 */
interface BenchProbes {
  timeDeviceCopy(bytes: number): Promise<number>;
  timeDeviceRead(bytes: number): Promise<number>;
}

/** `slopeRate` of `probe` over 1 and 2 units of 1 GiB, or of 256 MiB where that does not fit (E_MEMORY). */
async function slopeOfProbe(probe: (bytes: number) => Promise<number>, counted: Counted, what: (unit: number) => string): Promise<Bandwidth> {
  for (const unit of [2 ** 30, 2 ** 28]) {
    try {
      return await slopeRate((n) => probe(n * unit), unit, 1, 2, what(unit), counted);
    } catch (e) {
      if (!(e instanceof MobaError && e.code === 'E_MEMORY')) throw e;
    }
  }
  return { bytesPerSecond: null, how: counted === 'read' ? 'not measured: no room for a 512 MiB read' : 'no room for a 512 MiB device copy' };
}

const sizes = (unit: number): string => `${unit / 2 ** 20} and ${2 * unit / 2 ** 20} MiB`;

/**
 * The device's read bandwidth: the backend's `timeDeviceRead` (CUDA: `read_probe` in cache.cu; WebGPU: the WGSL
 * probe of read-probe.wgsl.ts) of 1 GiB and 2 GiB (256 and 512 MiB where that does not fit), by `slopeRate`;
 * not measured (bytesPerSecond null, `how` says why) on a backend without the probe, the CPU backend included.
 */
export async function measureReadBandwidth(b: Backend): Promise<Bandwidth> {
  const p = b as Partial<BenchProbes>;
  if (typeof p.timeDeviceRead !== 'function') return { bytesPerSecond: null, how: `not measured: the ${b.name} backend has no read probe (timeDeviceRead)` };
  return slopeOfProbe((n) => p.timeDeviceRead!(n), 'read', (unit) => `${b.name} read-and-reduce kernel over ${sizes(unit)} (16-byte loads, host-timed)`);
}

/**
 * The device's copy bandwidth: on CUDA the backend's `timeDeviceCopy` of 1 GiB and 2 GiB (256 and 512 MiB where
 * that does not fit), on WebGPU copyBufferToBuffer of up to 1 GiB, 1 and 3 per submit, both by `slopeRate`; on
 * the CPU backend a 256 MiB typed-array copy in this thread (read + write counted; one core's figure).
 */
export async function measureCopyBandwidth(b: Backend): Promise<Bandwidth> {
  const dev = (b as { device?: WebGpuDeviceLike }).device;
  if (b.name === 'webgpu' && dev) return webgpuCopy(dev);
  const p = b as Partial<BenchProbes>;
  if (typeof p.timeDeviceCopy === 'function') return slopeOfProbe((n) => p.timeDeviceCopy!(n), 'read + write', (unit) => `device copies of ${sizes(unit)} (host-timed)`);
  if (b.name !== 'cpu') return { bytesPerSecond: null, how: `the ${b.name} backend has no device copy timer (timeDeviceCopy)` };
  const size = 256 * 2 ** 20;
  const src = new Float32Array(size / 4).fill(1);
  const dst = new Float32Array(size / 4);
  dst.set(src);
  const ms: number[] = [];
  for (let i = 0; i < 5; i++) {
    const t0 = performance.now();
    dst.set(src);
    ms.push(performance.now() - t0);
  }
  return { bytesPerSecond: (2 * size) / (median(ms) / 1e3), how: `Float32Array copy of ${size / 2 ** 20} MiB in one thread, median of 5` };
}

/** The parts of a GPUDevice the copy timing uses (the WebGPU backend exposes its device as `device`). */
interface WebGpuDeviceLike {
  readonly limits: { readonly maxBufferSize: number };
  createBuffer(d: { size: number; usage: number }): { destroy(): void };
  createCommandEncoder(): { copyBufferToBuffer(a: unknown, ao: number, b: unknown, bo: number, n: number): void; finish(): unknown };
  readonly queue: { submit(c: unknown[]): void; onSubmittedWorkDone(): Promise<void> };
}

/** copyBufferToBuffer between two device buffers (n per submit, waited for with onSubmittedWorkDone), by `slopeRate`. */
async function webgpuCopy(dev: WebGpuDeviceLike): Promise<Bandwidth> {
  const size = Math.min(2 ** 30, Math.floor(dev.limits.maxBufferSize / 4) * 4);
  const COPY_SRC = 0x4, COPY_DST = 0x8, STORAGE = 0x80;
  const a = dev.createBuffer({ size, usage: COPY_SRC | COPY_DST | STORAGE });
  const c = dev.createBuffer({ size, usage: COPY_SRC | COPY_DST | STORAGE });
  const time = async (n: number): Promise<number> => {
    await dev.queue.onSubmittedWorkDone();
    const t0 = performance.now();
    const e = dev.createCommandEncoder();
    for (let i = 0; i < n; i++) e.copyBufferToBuffer(i % 2 ? c : a, 0, i % 2 ? a : c, 0, size);
    dev.queue.submit([e.finish()]);
    await dev.queue.onSubmittedWorkDone();
    return performance.now() - t0;
  };
  try {
    return await slopeCopy(time, size, 1, 3, `WebGPU copyBufferToBuffer of ${(size / 2 ** 20).toFixed(0)} MiB, 1 and 3 per submit`);
  } finally {
    a.destroy();
    c.destroy();
  }
}
