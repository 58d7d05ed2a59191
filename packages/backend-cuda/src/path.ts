/**
 * The kernel path of a device (pure: no FFI, unit-tested without a GPU). `sm90`: Hopper (compute capability
 * 9.x), NVRTC compiles for `sm_90a` (the arch-specific target on which `wgmma`, `setmaxnreg` and TMA are legal)
 * with `MOBA_SM90` defined; `sm80`: every other device, the `mma.sync` kernels, compiled for `sm_XY` of the
 * device. Chosen by the `kernelPath` option, else `MOBA_CUDA_PATH`, else from the compute capability (`auto`).
 */
import { MobaError } from '@moba/core';
import { archOf } from './compile.js';

/** The kernel paths a device may run. */
export type KernelPath = 'sm80' | 'sm90';
/** What `kernelPath` (and `MOBA_CUDA_PATH`) accepts: a path, or `auto` (from the compute capability). */
export const KERNEL_PATH_CHOICES = Object.freeze(['auto', 'sm80', 'sm90'] as const);
export type KernelPathChoice = (typeof KERNEL_PATH_CHOICES)[number];

/** The choice and where it came from (the name an error message gives). */
export interface KernelPathRequest {
  readonly choice: KernelPathChoice;
  readonly from: 'kernelPath' | 'MOBA_CUDA_PATH' | 'default';
}

const isChoice = (x: unknown): x is KernelPathChoice => (KERNEL_PATH_CHOICES as readonly unknown[]).includes(x);

/**
 * The requested path: the option when given (E_RANGE naming `kernelPath` unless one of auto, sm80, sm90), else
 * `MOBA_CUDA_PATH` when set and not empty (E_RANGE naming it likewise), else `auto`.
 */
export function kernelPathRequest(option: unknown, env: Record<string, string | undefined> = process.env): KernelPathRequest {
  const allowed = KERNEL_PATH_CHOICES.join(', ');
  if (option !== undefined) {
    if (!isChoice(option)) throw new MobaError('E_RANGE', `kernelPath = ${JSON.stringify(option)} is invalid: must be one of ${allowed}`, 'kernelPath');
    return { choice: option, from: 'kernelPath' };
  }
  const e = env.MOBA_CUDA_PATH;
  if (e === undefined || e === '') return { choice: 'auto', from: 'default' };
  if (!isChoice(e)) throw new MobaError('E_RANGE', `MOBA_CUDA_PATH = ${JSON.stringify(e)} is invalid: must be one of ${allowed}`, 'MOBA_CUDA_PATH');
  return { choice: e, from: 'MOBA_CUDA_PATH' };
}

/** Whether a compute capability is Hopper's (9.x): the devices the sm90 path runs on. */
export const isHopper = (major: number): boolean => major === 9;

/** A device's kernel path, what NVRTC compiles for and the macros it defines. */
export interface KernelTarget {
  readonly path: KernelPath;
  /** NVRTC's `--gpu-architecture`: `sm_90a` on the sm90 path, else the device's `sm_XY`. */
  readonly arch: string;
  /** `-D` options of every compile on this path (`MOBA_SM90=1` on sm90). */
  readonly defines: readonly string[];
}

/**
 * The target of a device of compute capability `major.minor` for `req`: `auto` takes sm90 on Hopper and sm80
 * elsewhere; sm80 runs anywhere (on Hopper compiled for `sm_90`); sm90 on a device that is not Hopper is
 * E_UNSUPPORTED naming the option (or the variable) it came from.
 */
export function kernelTarget(major: number, minor: number, req: KernelPathRequest): KernelTarget {
  const arch = archOf(major, minor); // E_DEVICE for an invalid capability
  const path: KernelPath = req.choice === 'auto' ? (isHopper(major) ? 'sm90' : 'sm80') : req.choice;
  if (path === 'sm90' && !isHopper(major)) {
    throw new MobaError('E_UNSUPPORTED', `${req.from} = sm90 needs a Hopper GPU (compute capability 9.x); this device is ${major}.${minor} (${arch}): use sm80 or auto`, req.from);
  }
  return path === 'sm90' ? { path, arch: `${arch}a`, defines: ['-DMOBA_SM90=1'] } : { path, arch, defines: [] };
}
