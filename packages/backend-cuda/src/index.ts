/**
 * @moba/backend-cuda: MoBA on NVIDIA GPUs. CUDA C++ kernels (`kernels/*.cu`) compiled at run time by
 * NVRTC for the device's architecture (cubins cached on disk) and launched through the CUDA driver API
 * via koffi: no native addon, nothing compiled at install time.
 */
import { MobaError } from '@moba/core';
import { CUDA_OPTION_KEYS, type CudaBackend, type CudaBackendOptions } from './api.js';
import { CudaBackendImpl } from './backend.js';
import { CU_ATTR, CudaDriver, Nvrtc } from './driver.js';
import { kernelPathRequest, kernelTarget } from './path.js';

export type { CudaBackend, CudaBackendOptions } from './api.js';
export { cuError, nvrtcError, CU_RESULT_NAMES } from './status.js';
export { CUDA_OPTION_KEYS } from './api.js';
export { KERNEL_PATH_CHOICES, type KernelPath, type KernelPathChoice } from './path.js';

/** The uniform name of the factory's (top-level) option keys in every backend module; unknown keys and nulls are E_RANGE. */
export const optionKeys: readonly string[] = CUDA_OPTION_KEYS.options;

/** Creates a CUDA backend on device `ordinal` (default 0); throws MobaError E_DEVICE with the reason when unavailable. */
export function createCudaBackend(opts: CudaBackendOptions = {}): CudaBackend {
  return new CudaBackendImpl(opts);
}

/** The uniform factory name every backend module exports (used by CLIs). */
export const createBackend = createCudaBackend;

/** Why CUDA is unavailable here, or null when it is available (libcuda, a device and NVRTC all found). Never throws. */
export function unavailableReason(): string | null {
  try {
    const drv = new CudaDriver();
    drv.init();
    if (drv.deviceCount() < 1) return 'no CUDA device found';
    new Nvrtc();
    return null;
  } catch (e) {
    // The reason alone: callers wrap it in their own MobaError, so the code prefix would appear twice.
    return e instanceof MobaError ? e.message.replace(/^\[E_[A-Z]+\] /, '') : String(e);
  }
}

/**
 * For `listBackends()` / `moba info`: whether CUDA is usable, and device 0 with the kernel path `createBackend('cuda')`
 * takes there (`MOBA_CUDA_PATH` honoured; an invalid value or sm90 on a device that is not Hopper is shown instead). Never throws.
 */
export async function probeAdapter(): Promise<{ available: boolean; reason?: string; adapter?: string; software: false }> {
  const why = unavailableReason();
  if (why !== null) return { available: false, reason: why, software: false };
  try {
    const drv = new CudaDriver();
    drv.init();
    const dev = drv.device(0);
    const [major, minor] = [drv.attribute(dev, CU_ATTR.COMPUTE_CAPABILITY_MAJOR), drv.attribute(dev, CU_ATTR.COMPUTE_CAPABILITY_MINOR)];
    let path: string;
    try {
      const t = kernelTarget(major, minor, kernelPathRequest(undefined));
      path = `kernel path ${t.path} (NVRTC ${t.arch})`;
    } catch (e) {
      path = `kernel path: ${e instanceof Error ? e.message.replace(/^\[E_[A-Z]+\] /, '') : String(e)}`;
    }
    return { available: true, adapter: `${drv.deviceName(dev)} (compute capability ${major}.${minor}), ${path}`, software: false };
  } catch (e) {
    return { available: false, reason: e instanceof Error ? e.message.replace(/^\[E_[A-Z]+\] /, '') : String(e), software: false };
  }
}

/** Whether a CUDA device, its driver and NVRTC are usable. Never throws. */
export function isAvailable(): boolean {
  return unavailableReason() === null;
}
