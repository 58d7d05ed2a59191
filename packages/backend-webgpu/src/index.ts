/**
 * @moba/backend-webgpu: MoBA in WGSL on any GPUDevice (navigator.gpu in browsers, Dawn's `webgpu` package in
 * Node): fused tiled routing, collect, gather-and-densify forward with online softmax, deterministic backward
 * (Δ, dK/dV per key block, dQ query-major), kconv. f32 compute; f16/bf16 I/O converted at the boundary.
 */
/// <reference types="@webgpu/types" />
import { MobaError } from '@moba/core';
import { type WebGpuBackend, WebGpuBackendImpl } from './backend.js';
import { GpuContext, getGpu, openDevice } from './device.js';

export type { WebGpuBackend } from './backend.js';
export { liveBufferCount } from './device.js';

export interface WebGpuBackendOptions {
  /** Run on this device (the backend never destroys it); default: open one with the adapter's limits. */
  device?: GPUDevice;
  /** Workspace budget of one call in bytes (caps.memoryBytes); default 4 × maxStorageBufferBindingSize, in [512 MiB, 8 GiB]. */
  memoryBytes?: number;
}

/**
 * Creates a WebGPU backend. Without `device` it opens one (and destroys it in `destroy()`); throws
 * `MobaError('E_DEVICE')` when no adapter can be obtained.
 */
export async function createWebGpuBackend(opts: WebGpuBackendOptions = {}): Promise<WebGpuBackend> {
  const own = !opts.device;
  const opened = opts.device ? { gpu: null, device: opts.device } : await openDevice();
  const device = opened.device;
  const limit = device.limits.maxStorageBufferBindingSize;
  const memoryBytes = opts.memoryBytes ?? Math.min(8 * 2 ** 30, Math.max(2 ** 29, 4 * limit));
  if (typeof memoryBytes !== 'number' || !(memoryBytes > 0)) {
    throw new MobaError('E_RANGE', `memoryBytes = ${String(memoryBytes)} is invalid: must be a number > 0`, 'memoryBytes');
  }
  return new WebGpuBackendImpl(new GpuContext(device, own, opened.gpu), memoryBytes);
}

/** The uniform factory name every backend module exports (used by CLIs). */
export const createBackend = createWebGpuBackend;

/** Whether a WebGPU adapter can be obtained here (navigator.gpu, or Dawn in Node). */
export async function isAvailable(): Promise<boolean> {
  try {
    const gpu = await getGpu();
    return !!gpu && (await gpu.requestAdapter()) !== null;
  } catch {
    return false;
  }
}
