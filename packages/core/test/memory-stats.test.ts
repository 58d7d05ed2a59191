// MemoryStats through the shell (BackendShell + MemoryLedger), on a stub backend without device counts: what the
// caller holds, the peak, dispose and destroy. The testkit's memory property checks the same on every backend.
import { describe, expect, it } from 'vitest';
import { type Capabilities, hostTensor } from '../src/index.js';
import { StubBackend } from './stub-backend.js';

const caps: Capabilities = {
  dtypes: ['f32', 'f16', 'bf16'], maxHeadDim: 256, maxTopk: 64, maxBlockSize: 4096, nonCausal: true, kconv: true,
  maxKconvWidth: 8, memoryBytes: 1 << 30, deterministic: true,
};
const zero = { liveBytes: 0, liveTensors: 0, liveRoutings: 0, scratchBytes: 0, pooledBytes: 0, peakBytes: 0 };

describe('memoryStats (shell)', () => {
  it('counts tensors and routings the caller holds, keeps the peak, and returns to zero after dispose', async () => {
    const b = new StubBackend(caps);
    expect(b.memoryStats()).toEqual(zero);
    const q = await b.upload(hostTensor('f32', [8, 1, 4])); // 128 B
    const h = await b.upload(hostTensor('bf16', [8, 1, 4])); // 64 B
    expect(b.memoryStats()).toMatchObject({ liveBytes: 192, liveTensors: 2, liveRoutings: 0, peakBytes: 192 });
    const layout = { cuSeqlens: Int32Array.of(0, 8) };
    const r = await b.route(q, q, layout, { blockSize: 4, topk: 2 }); // 8·1·2 int32 = 64 B
    expect(b.memoryStats()).toMatchObject({ liveBytes: 256, liveTensors: 2, liveRoutings: 1, peakBytes: 256 });
    b.dispose(q, r, q);
    expect(b.memoryStats()).toMatchObject({ liveBytes: 64, liveTensors: 1, liveRoutings: 0, peakBytes: 256 });
    b.resetPeakMemory();
    expect(b.memoryStats().peakBytes).toBe(64);
    b.dispose(h);
    expect(b.memoryStats()).toEqual({ ...zero, peakBytes: 64 });
    await b.destroy();
  });

  it('after destroy every field is 0 (held tensors included) and resetPeakMemory is a no-op', async () => {
    const b = new StubBackend(caps);
    await b.upload(hostTensor('f32', [1000]));
    await b.destroy();
    expect(b.memoryStats()).toEqual(zero);
    expect(() => b.resetPeakMemory()).not.toThrow();
    expect(b.memoryStats()).toEqual(zero);
  });
});
