/**
 * Bench probes of the decode bench (bench/decode-report.ts): the device's copy bandwidth (cuMemcpyDtoD) and its
 * streaming read bandwidth (`read_probe` in cache.cu), each one synchronised operation on scratch buffers that
 * are freed afterwards. The WebGPU backend offers the same two measures (its `timeDeviceRead`).
 */
import { MobaError } from '@moba/core';
import { ptr, i64 } from './params.js';
import type { Cuda } from './shared.js';

function checkBytes(bytes: number, align: number): void {
  if (!Number.isSafeInteger(bytes) || bytes < align || bytes % align !== 0) {
    throw new MobaError('E_RANGE', `bytes = ${String(bytes)} is invalid: must be a positive safe integer${align > 1 ? ` and a multiple of ${align}` : ''}`, 'bytes');
  }
}

/** Ms of one device-to-device copy of `bytes` (synchronised), on two scratch buffers freed afterwards. */
export function timeDeviceCopy(c: Cuda, bytes: number): number {
  checkBytes(bytes, 1);
  c.mem.fits('timeDeviceCopy()', 2 * bytes);
  const a = c.drv.memAlloc(bytes);
  let b: bigint | null = null;
  try {
    b = c.drv.memAlloc(bytes);
    c.drv.synchronize();
    const t0 = performance.now();
    c.drv.copyDtoD(b, a, bytes);
    c.drv.synchronize();
    return performance.now() - t0;
  } finally {
    c.drv.memFree(a);
    if (b !== null) c.drv.memFree(b);
  }
}

/** CTAs of `read_probe`: 8 of 256 threads per SM (full occupancy), each thread four 16-byte loads in flight. */
const readProbeGrid = (sms: number): number => Math.max(1, sms) * 8;

/**
 * Ms of one streaming read of `bytes` (a multiple of 16) by `read_probe` (synchronised): every 16-byte word read
 * once, summed per CTA into a small sink; scratch buffers freed afterwards.
 */
export function timeDeviceRead(c: Cuda, bytes: number): number {
  checkBytes(bytes, 16);
  const grid = readProbeGrid(c.sms);
  c.mem.fits('timeDeviceRead()', bytes + 4 * grid);
  const src = c.drv.memAlloc(bytes);
  let sink: bigint | null = null;
  try {
    sink = c.drv.memAlloc(4 * grid);
    const L = { grid: [grid, 1, 1], block: [256, 1, 1], shared: 0 } as const;
    const args = { src: ptr(src), n: i64(bytes / 16), sink: ptr(sink) };
    c.drv.synchronize();
    const t0 = performance.now();
    c.prog.launch('cache.cu', 'read_probe', L, args);
    c.drv.synchronize();
    return performance.now() - t0;
  } finally {
    c.drv.memFree(src);
    if (sink !== null) c.drv.memFree(sink);
  }
}
