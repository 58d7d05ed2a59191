/**
 * A bench helper (docs/api.md, `flushL2`): leaves the GPU's caches cold before a timed op by clearing a scratch
 * buffer larger than them with a command encoder's `clearBuffer`, then waiting for the queue. WebGPU cannot
 * query a cache size, so the buffer is 256 MiB (WebGPU's default `maxBufferSize`, so every adapter allows it):
 * over 2 × the largest last-level GPU caches we know of (NVIDIA H100/H200 L2 50/60 MiB, AMD RDNA2 Infinity Cache
 * 128 MiB, Apple M-series system caches up to 96 MiB). The buffer is made on the first flush, kept (outside the
 * memory accounting) and destroyed with the backend.
 */
/// <reference types="@webgpu/types" />
import { MobaError, fmtBytes } from '@moba/core';
import { USAGE } from './buffers.js';

/** The scratch size: 256 MiB, or the device's `maxBufferSize` when that is smaller (whole words). */
export const flushBytes = (maxBufferSize: number): number => Math.floor(Math.min(2 ** 28, maxBufferSize) / 4) * 4;

export class L2Flush {
  #buf: GPUBuffer | null = null;

  constructor(private readonly device: GPUDevice) {}

  /** Clears the scratch buffer on the queue and waits for all submitted work. */
  async flush(): Promise<void> {
    const dev = this.device;
    if (!this.#buf) {
      const size = flushBytes(dev.limits.maxBufferSize);
      dev.pushErrorScope('out-of-memory');
      const buf = dev.createBuffer({ label: 'flushL2 scratch', size, usage: USAGE.COPY_DST });
      if (await dev.popErrorScope()) {
        buf.destroy();
        throw new MobaError('E_MEMORY', `flushL2(): the ${fmtBytes(size)} scratch buffer could not be allocated`, 'flushL2');
      }
      this.#buf = buf;
    }
    const enc = dev.createCommandEncoder({ label: 'flushL2' });
    enc.clearBuffer(this.#buf);
    dev.queue.submit([enc.finish()]);
    await dev.queue.onSubmittedWorkDone();
  }

  destroy(): void {
    this.#buf?.destroy();
    this.#buf = null;
  }
}
