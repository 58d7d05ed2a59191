/**
 * The CUDA backend's public types: its options (and the keys `createCudaBackend` accepts, checked before the
 * driver is loaded) and the `CudaBackend` interface (the Backend contract plus device facts and extras).
 */
import { type Backend, type DType, type MemoryStats, checkKeys } from '@moba/core';
import type { KernelPath, KernelPathChoice } from './path.js';

export interface CudaBackendOptions {
  /** Device ordinal (default 0). */
  ordinal?: number;
  /** Folder for compiled cubins (default `$XDG_CACHE_HOME/moba-ts/cuda`); `null` disables the disk cache. */
  cacheDir?: string | null;
  /**
   * Kernel path (path.ts): `'auto'` (default; `MOBA_CUDA_PATH` when set) takes `'sm90'` on Hopper (NVRTC for
   * `sm_90a`, `MOBA_SM90` defined) and `'sm80'` elsewhere; `'sm80'` forces the mma.sync path on Hopper too.
   */
  kernelPath?: KernelPathChoice;
  /**
   * Unstable experiment knobs: they may change or vanish in any release, results do not depend on them.
   * - `kvHeadsPerLaunch`: kv heads per launch of the partial-writing kernels (forward_kv, dkdv_tc) instead
   *   of the planned number (geometry.kvPerLaunch); null (default) plans it. Results are bitwise the same.
   * - `fastPaths`: use the tensor-core routing, forward and backward for f16/bf16 with D 64/128 (default
   *   true; `MOBA_CUDA_FAST=0` makes the default false). false runs the generic CUDA-core kernels everywhere
   *   (a cross-check for the tensor-core paths).
   */
  unstable?: { kvHeadsPerLaunch?: number | null; fastPaths?: boolean };
}

/**
 * The keys `createCudaBackend` accepts, per level (a new option adds its key here); any other key is E_RANGE
 * naming it, as is null except where it means something (`cacheDir`, `unstable.kvHeadsPerLaunch`).
 */
export const CUDA_OPTION_KEYS = Object.freeze({
  options: Object.freeze(['ordinal', 'cacheDir', 'kernelPath', 'unstable']),
  unstable: Object.freeze(['kvHeadsPerLaunch', 'fastPaths']),
}) satisfies Record<string, readonly string[]>;

/** Checks the keys of `createCudaBackend` options, `unstable` included, before the driver is loaded. */
export function checkCudaOptions(opts: unknown): void {
  checkKeys(opts, CUDA_OPTION_KEYS.options, 'CUDA backend option', ['cacheDir']);
  const u = (opts as CudaBackendOptions).unstable;
  if (u !== undefined) checkKeys(u, CUDA_OPTION_KEYS.unstable, 'CUDA unstable option', ['kvHeadsPerLaunch']);
}

/** The CUDA backend: the Backend contract plus device facts and an explicit synchronise for timing. */
export interface CudaBackend extends Backend {
  /** `arch`: the device's `sm_XY`; `kernelPath` and `targetArch` (what NVRTC compiles for): the chosen path (path.ts). */
  readonly device: {
    readonly name: string; readonly ordinal: number; readonly arch: string; readonly kernelPath: KernelPath; readonly targetArch: string;
    readonly sms: number; readonly l2Bytes: number; readonly totalBytes: number; readonly driverVersion: number; readonly nvrtcVersion: string;
  };
  /** Waits for all queued work (every op already does before it returns). */
  synchronize(): void;
  /** Free and total device memory now. */
  memoryInfo(): { free: number; total: number };
  /**
   * The contract's MemoryStats of this backend's own device allocations (the sizes asked of cuMemAlloc, at least
   * 16 B): `liveBytes` the caller's tensors and routings, `scratchBytes` the workspace slots kept between calls,
   * `pooledBytes` released buffers kept for reuse (at most 16 GiB; given back when an allocation would not fit
   * otherwise, and by destroy()), `peakBytes` the most in use at once since creation or `resetPeakMemory()`.
   * `cachedBytes` is `pooledBytes` under its earlier name.
   */
  memoryStats(): MemoryStats & { readonly cachedBytes: number };
  /**
   * Profiling: while `profiling` is true every kernel launch is synchronised and its wall time added to
   * a per-kernel total (ms); `takeProfile()` returns the totals since the last call and clears them.
   */
  profiling: boolean;
  takeProfile(): Record<string, number>;
  /** Whether the tensor-core kernels serve this dtype and head dim on this device. */
  usesTensorCores(dtype: DType, D: number): boolean;
  /** Ms of one synchronised device-to-device copy of `bytes` / streaming read of `bytes` (probe.ts; the decode bench). */
  timeDeviceCopy(bytes: number): Promise<number>;
  timeDeviceRead(bytes: number): Promise<number>;
  /** Bench helper: writes 2 × `device.l2Bytes` of scratch (freed after) and synchronises, leaving the L2 cold (l2.ts). */
  flushL2(): Promise<void>;
}
