/**
 * @moba/backend-webgpu: MoBA in WGSL on any GPUDevice (navigator.gpu in browsers, Dawn's `webgpu` package in
 * Node): fused tiled routing, parallel collect, collect-and-densify forward (one workgroup per chunk of a key
 * block's rows, register-tiled, online softmax, partials merged per row in slot order), deterministic backward
 * (Δ, dK/dV per 64-key tile with the dQ partials, dQ merged per row), kconv. f32 compute; f16/bf16 tensors
 * stored in 16 bits and decoded in the shaders (no shader-f16 needed). Kernel design: docs/webgpu.md.
 */
/// <reference types="@webgpu/types" />
import { MobaError } from '@moba/core';
import { WEBGPU_OPTION_KEYS, checkWebGpuOptions } from './backend.js';
import { type WebGpuBackend, WebGpuBackendImpl, type WebGpuTuning, type WebGpuUnstable } from './backend.js';
import { GpuContext, openDevice, probeAdapter } from './device.js';

export type { WebGpuBackend, WebGpuTuning, WebGpuUnstable } from './backend.js';
export type { RouteKernel } from './route.js';
export { liveBufferCount } from './buffers.js';
export type { AdapterProbe } from './dawn.js';
export { describeAdapter } from './dawn.js';
export { probeAdapter } from './device.js';

export interface WebGpuBackendOptions {
  /** Run on this device (the backend never destroys it); default: open one with the adapter's limits. */
  device?: GPUDevice;
  /** Workspace budget of one call in bytes (caps.memoryBytes); default 4 × maxStorageBufferBindingSize, in [512 MiB, 8 GiB]. */
  memoryBytes?: number;
  /**
   * Time every kernel with timestamp queries (requests `timestamp-query` when opening the device; on a
   * caller's device only if it has the feature). Read with `backend.timings()`. Slows every op down a little.
   */
  profile?: boolean;
  /**
   * Most bytes of freed temporaries (and disposed tensors) kept for reuse instead of destroyed, so that an op
   * does not pay buffer creation per call (docs/webgpu.md, buffer recycling); default min(512 MiB,
   * memoryBytes / 8); 0 disables recycling. Kept bytes are reported as memoryStats().pooledBytes.
   */
  bufferCacheBytes?: number;
  /** Tuning and test knobs (smaller workgroup-memory and partial-buffer budgets than the device allows). */
  tuning?: WebGpuTuning;
  /**
   * Unstable experiment knobs, for timing kernel variants against each other: `dkdvShape` imposes fields of the
   * dK/dV kernel's shape, `routeKernel` picks the routing top-k kernel. They may change or vanish in any
   * release (including a patch release).
   */
  unstable?: WebGpuUnstable;
}

export { WEBGPU_OPTION_KEYS } from './backend.js';
/** The uniform name of the factory's (top-level) option keys in every backend module; unknown keys and nulls are E_RANGE. */
export const optionKeys: readonly string[] = WEBGPU_OPTION_KEYS.options;

/**
 * Creates a WebGPU backend. Without `device` it opens one (and destroys it in `destroy()`); throws
 * `MobaError('E_UNSUPPORTED')` when there is no WebGPU at all (in Node: the optional `webgpu` package is not
 * installed; the message says so) and `MobaError('E_DEVICE')` when no adapter or device can be obtained.
 * Any adapter is accepted, software ones (llvmpipe, SwiftShader) included: see `probeAdapter()`.
 */
export async function createWebGpuBackend(opts: WebGpuBackendOptions = {}): Promise<WebGpuBackend> {
  checkWebGpuOptions(opts); // unknown keys and nulls (E_RANGE), before any adapter is requested
  const own = !opts.device;
  const opened = opts.device ? { gpu: null, device: opts.device } : await openDevice({ timestamps: !!opts.profile });
  const device = opened.device;
  const limit = device.limits.maxStorageBufferBindingSize;
  const memoryBytes = opts.memoryBytes ?? Math.min(8 * 2 ** 30, Math.max(2 ** 29, 4 * limit));
  if (typeof memoryBytes !== 'number' || !(memoryBytes > 0)) {
    throw new MobaError('E_RANGE', `memoryBytes = ${String(memoryBytes)} is invalid: must be a number > 0`, 'memoryBytes');
  }
  const cache = opts.bufferCacheBytes;
  if (cache !== undefined && (typeof cache !== 'number' || !(cache >= 0))) {
    if (own) device.destroy();
    throw new MobaError('E_RANGE', `bufferCacheBytes = ${String(cache)} is invalid: must be a number >= 0`, 'bufferCacheBytes');
  }
  const ctx = new GpuContext(device, own, opened.gpu);
  if (opts.profile) ctx.enableProfiling();
  const backend = new WebGpuBackendImpl(ctx, memoryBytes, opts.tuning, opts.unstable);
  if (cache !== undefined) ctx.buffers.poolCapBytes = Math.floor(cache);
  ctx.buffers.poisonFreed = opts.tuning?.poisonRecycled === true;
  return backend;
}

/** The uniform factory name every backend module exports (used by CLIs). */
export const createBackend = createWebGpuBackend;

/** Whether a WebGPU adapter (hardware or software) can be obtained here (navigator.gpu, or Dawn in Node). */
export async function isAvailable(): Promise<boolean> {
  return (await probeAdapter()).available;
}
