/**
 * The bench read probe (read-probe.wgsl.ts, the decode bench's "% read BW"): a read of one or several bindings
 * takes a positive, finite time and gives a positive, finite rate by the bench's slope; its scratch buffers are
 * gone afterwards; bad sizes are E_RANGE, sizes past memoryBytes E_MEMORY. A missing adapter skips, unless
 * MOBA_REQUIRE names webgpu.
 */
import { MobaError } from '@moba/core';
import { describe, expect, it } from 'vitest';
import { slopeRate } from '../../../bench/decode-bandwidth.js';
import { createWebGpuBackend } from '../src/index.js';
import { readProbeGroups, readProbePieces } from '../src/read-probe.wgsl.js';
import { testBackend } from './cache-setup.js';

const MiB = 2 ** 20;
const tb = testBackend();

describe('webgpu read probe (timeDeviceRead)', () => {
  it('splits a read into bindings within the limits, four loads per invocation at most 4096 workgroups', () => {
    expect(readProbePieces(48, { maxStorageBufferBindingSize: 40, maxBufferSize: 1000 })).toEqual([32, 16]);
    expect(readProbePieces(300 * MiB, { maxStorageBufferBindingSize: 128 * MiB, maxBufferSize: 2 ** 32 - 1 })).toEqual([128 * MiB, 128 * MiB, 44 * MiB]);
    expect(readProbePieces(64, { maxStorageBufferBindingSize: 2 ** 31, maxBufferSize: 40 })).toEqual([32, 32]);
    expect([readProbeGroups(1), readProbeGroups(1025), readProbeGroups(2 ** 26)]).toEqual([1, 2, 4096]);
  });
  it('times one and several bindings (positive, finite), frees its buffers, and its slope is a positive finite rate', async (t) => {
    if (tb.unavailable) return t.skip(tb.unavailable);
    const b = tb.backend;
    const live = b.liveBuffers;
    const bind = b.device.limits.maxStorageBufferBindingSize;
    for (const bytes of [16, 4 * MiB + 16, Math.floor(bind / 16) * 16 + 4 * MiB]) {
      const ms = await b.timeDeviceRead(bytes);
      expect(Number.isFinite(ms) && ms > 0, `${bytes} bytes: ${ms} ms`).toBe(true);
      expect(b.liveBuffers).toBe(live);
    }
    const unit = 8 * MiB;
    const r = await slopeRate((n) => b.timeDeviceRead(n * unit), unit, 1, 4, 'webgpu read probe', 'read');
    expect(Number.isFinite(r.bytesPerSecond) && r.bytesPerSecond! > 0, JSON.stringify(r)).toBe(true);
    expect(Number.isFinite(r.singleBytesPerSecond) && r.singleBytesPerSecond! > 0).toBe(true);
    expect(r.how).toMatch(/^webgpu read probe: (read bytes over the difference|best of 7 of 4 \(the 1-unit read was not faster\), read counted)/);
  });
  it('bad sizes are E_RANGE naming bytes; a read past memoryBytes is E_MEMORY and allocates nothing', async (t) => {
    if (tb.unavailable) return t.skip(tb.unavailable);
    const b = tb.backend;
    for (const bytes of [0, 8, 17, -16, 1.5 * 16, Number.NaN]) {
      await expect(b.timeDeviceRead(bytes)).rejects.toMatchObject({ code: 'E_RANGE', param: 'bytes' });
    }
    const small = await createWebGpuBackend({ device: b.device, memoryBytes: MiB });
    try {
      const live = small.liveBuffers;
      const e = await small.timeDeviceRead(2 * MiB).catch((x: unknown) => x);
      expect(e).toBeInstanceOf(MobaError);
      expect(e).toMatchObject({ code: 'E_MEMORY' });
      expect(small.liveBuffers).toBe(live);
      expect(await small.timeDeviceRead(64 * 1024)).toBeGreaterThan(0);
    } finally {
      await small.destroy();
    }
  });
});
