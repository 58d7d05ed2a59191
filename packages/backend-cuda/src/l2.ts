/**
 * A bench helper (docs/api.md, `flushL2`): evicts the device's L2 by writing a scratch buffer twice its size
 * (`CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE`), allocated for the call and freed after it, so that the next timed
 * op starts with a cold L2 as the published peer measurements did. Outside the backend's memory accounting.
 */
import type { Cuda } from './shared.js';

/** Bytes written by one flush: 2 × the L2 (at least 2 × 1 MiB when the driver reports none). */
export const flushBytes = (l2Bytes: number): number => 2 * Math.max(l2Bytes, 1 << 20);

/** Writes `flushBytes(l2Bytes)` on the null stream and waits for it. */
export function flushL2(c: Cuda, l2Bytes: number): void {
  const bytes = flushBytes(l2Bytes);
  c.mem.fits('flushL2()', bytes);
  const p = c.drv.memAlloc(bytes);
  try {
    c.drv.memsetD8(p, 0x5a, bytes);
    c.drv.synchronize();
  } finally {
    c.drv.memFree(p);
  }
}
