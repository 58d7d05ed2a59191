// Tensors and routing indices over a SharedArrayBuffer (queue.writeBuffer refuses shared views) upload and
// round-trip bitwise, as plain ones do.
import { hostTensor } from '@moba/core';
import { beforeAll, describe, expect, it } from 'vitest';
import { createWebGpuBackend } from '../src/index.js';
import { webgpuUnavailable } from './gate.js';

describe('WebGPU upload of SharedArrayBuffer-backed data', () => {
  let unavailable: string | null = null;
  beforeAll(async () => {
    unavailable = await webgpuUnavailable();
  });

  it('f32 and odd-length bf16 tensors and routing indices', async (t) => {
    if (unavailable) return t.skip(unavailable);
    const b = await createWebGpuBackend();
    try {
      const f = new Float32Array(new SharedArrayBuffer(4 * 8 * 2 * 4));
      f.forEach((_, i) => { f[i] = i / 7; });
      const u = new Uint16Array(new SharedArrayBuffer(2 * 3));
      u.set([0x3f80, 0x4000, 0xbf80]);
      const back = await b.download(await b.upload(hostTensor('f32', [8, 2, 4], f)));
      expect(back.data).toEqual(new Float32Array(f));
      expect((await b.download(await b.upload(hostTensor('bf16', [3], u)))).data).toEqual(new Uint16Array(u));
      const ix = new Int32Array(new SharedArrayBuffer(8 * 2 * 2 * 4));
      ix.fill(-1);
      for (let t = 0; t < 8; t++) for (let h = 0; h < 2; h++) ix[(t * 2 + h) * 2] = t >> 2;
      const r = await b.routingFromIndices(ix, { T: 8, Hq: 2 }, { cuSeqlens: Int32Array.of(0, 8) }, { blockSize: 4, topk: 2 });
      expect(await b.routingIndices(r)).toEqual(new Int32Array(ix));
    } finally {
      await b.destroy();
    }
  });
});
