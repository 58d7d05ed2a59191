/**
 * The decode bench's read bandwidth (decode-bandwidth.ts) and its place in the report: the slope counts read
 * bytes once (a copy's twice), the CPU backend has no read probe (the field says not measured, the "% read BW"
 * cells n/a, the copy column unchanged), and a measured read figure gives its own "% read BW" next to "% copy BW".
 */
import { createCpuBackend } from '@moba/backend-cpu';
import { describe, expect, it } from 'vitest';
import { measureReadBandwidth, slopeCopy, slopeRate } from '../decode-bandwidth.js';
import { type DecodeCase, type DecodeResult, decodeMarkdown, decodeTable } from '../decode-report.js';

const MiB = 2 ** 20;
const plan = { bytes: { total: 100 * MiB }, denseBytes: 400 * MiB, flops: { route: 1, attend: 1 } } as unknown as Extract<DecodeCase, { plan: unknown }>['plan'];
// 100 MiB in 0.05 ms: 2097.2 GB/s
const row: DecodeCase = { Hq: 16, Hkv: 16, N: 131072, batch: 16, length: 131098, attendMs: 0.05, stepMs: 0.06, reps: { attend: [0.05], step: [0.06] }, plan, dense: null };

function result(readBandwidth: DecodeResult['readBandwidth']): DecodeResult {
  return {
    machine: {}, date: '2026-12-04T00:00:00.000Z', command: 'bench', gitCommit: null, backend: { name: 'webgpu' },
    problem: { D: 128, blockSize: 128, topk: 8, dtype: 'bf16', reps: 3 },
    copy: { bytesPerSecond: 851e9, how: 'WebGPU copyBufferToBuffer' }, readBandwidth,
    torch: { measured: false, reason: '--no-torch' }, cases: [row, { Hq: 16, Hkv: 16, N: 524288, batch: 64, skipped: 'memory' }], prefill: [],
  };
}

describe('slopeRate', () => {
  it('a read counts its bytes once, a copy twice; the fixed cost cancels', async () => {
    const unit = 2 ** 28;
    const time = async (n: number): Promise<number> => 0.03 + 0.25 * n; // ms
    const read = await slopeRate(time, unit, 1, 2, 'probe', 'read');
    expect(read.bytesPerSecond).toBeCloseTo(unit / 0.25e-3, -6);
    expect(read.singleBytesPerSecond).toBeCloseTo((2 * unit) / 0.53e-3, -6);
    expect(read.how).toBe('probe: read bytes over the difference of the best of 7 of 2 and of 1 (fixed cost cancelled)');
    expect((await slopeCopy(time, unit, 1, 2, 'probe')).bytesPerSecond).toBeCloseTo((2 * unit) / 0.25e-3, -6);
    expect((await slopeRate(async () => 2, unit, 1, 2, 'flat', 'read')).how).toBe('flat: best of 7 of 2 (the 1-unit read was not faster), read counted');
  });
});

describe('read bandwidth in the decode report', () => {
  it('the CPU backend has no read probe: not measured, and the JSON field says so', async () => {
    const b = await createCpuBackend({ threads: 1 });
    try {
      const r = await measureReadBandwidth(b);
      expect(r).toEqual({ bytesPerSecond: null, how: 'not measured: the cpu backend has no read probe (timeDeviceRead)' });
      expect(JSON.parse(JSON.stringify(result(r))).readBandwidth).toEqual({ bytesPerSecond: null, how: 'not measured: the cpu backend has no read probe (timeDeviceRead)' });
    } finally {
      await b.destroy();
    }
  });
  it('not measured: "% read BW" is n/a, "% copy BW" as before, the header says why', () => {
    const r = result({ bytesPerSecond: null, how: 'not measured: the cpu backend has no read probe (timeDeviceRead)' });
    const txt = decodeTable(r);
    expect(txt).toContain('read bandwidth not measured: the cpu backend has no read probe (timeDeviceRead)');
    expect(txt).toMatch(/% copy BW\s+% read BW/);
    expect(txt).toMatch(/2097\s+246%\s+n\/a/); // GB/s, % of 851 GB/s, no read figure
    const md = decodeMarkdown(r);
    expect(md).toContain('- Read bandwidth (the "% read BW" reference): not measured: the cpu backend has no read probe (timeDeviceRead).');
    expect(md).toContain('| 2097 | 246% | n/a |');
    expect(md).toContain('| 16/16 | 512K | 64 | skipped (memory) |  |  |  |  |  |  |  |  |  | n/a |  |  |'); // 16 columns, as the header
  });
  it('measured: "% read BW" divides by the read figure', () => {
    const r = result({ bytesPerSecond: 4.2e12, singleBytesPerSecond: 3.5e12, how: 'webgpu read-and-reduce kernel over 1024 and 2048 MiB' });
    const txt = decodeTable(r);
    expect(txt).toContain('read bandwidth 4200.0 GB/s (webgpu read-and-reduce kernel over 1024 and 2048 MiB; one read with its fixed cost 3500.0 GB/s)');
    expect(txt).toMatch(/2097\s+246%\s+50%/);
    expect(decodeMarkdown(r)).toContain('| 2097 | 246% | 50% |');
  });
});
