/**
 * Status codes of the CUDA driver API and NVRTC, and the one place they become errors: every binding
 * call goes through `checkCu` / `checkNvrtc`, which turn a non-zero status into `MobaError('E_DEVICE')`
 * naming the call and the driver's error name. Pure (no FFI), so it is unit-tested without a GPU.
 */
import { MobaError } from '@moba/core';

/** CUresult values (cuda.h) we name ourselves when `cuGetErrorName` is unavailable or fails. */
export const CU_RESULT_NAMES: Readonly<Record<number, string>> = Object.freeze({
  0: 'CUDA_SUCCESS', 1: 'CUDA_ERROR_INVALID_VALUE', 2: 'CUDA_ERROR_OUT_OF_MEMORY', 3: 'CUDA_ERROR_NOT_INITIALIZED',
  4: 'CUDA_ERROR_DEINITIALIZED', 34: 'CUDA_ERROR_STUB_LIBRARY', 36: 'CUDA_ERROR_CALL_REQUIRES_NEWER_DRIVER',
  46: 'CUDA_ERROR_DEVICE_UNAVAILABLE', 100: 'CUDA_ERROR_NO_DEVICE', 101: 'CUDA_ERROR_INVALID_DEVICE',
  200: 'CUDA_ERROR_INVALID_IMAGE', 201: 'CUDA_ERROR_INVALID_CONTEXT', 209: 'CUDA_ERROR_NO_BINARY_FOR_GPU',
  214: 'CUDA_ERROR_ECC_UNCORRECTABLE', 218: 'CUDA_ERROR_INVALID_PTX', 221: 'CUDA_ERROR_JIT_COMPILER_NOT_FOUND',
  222: 'CUDA_ERROR_UNSUPPORTED_PTX_VERSION', 300: 'CUDA_ERROR_INVALID_SOURCE', 301: 'CUDA_ERROR_FILE_NOT_FOUND',
  400: 'CUDA_ERROR_INVALID_HANDLE', 500: 'CUDA_ERROR_NOT_FOUND', 600: 'CUDA_ERROR_NOT_READY',
  700: 'CUDA_ERROR_ILLEGAL_ADDRESS', 701: 'CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES', 702: 'CUDA_ERROR_LAUNCH_TIMEOUT',
  709: 'CUDA_ERROR_CONTEXT_IS_DESTROYED', 710: 'CUDA_ERROR_ASSERT', 714: 'CUDA_ERROR_HARDWARE_STACK_ERROR',
  715: 'CUDA_ERROR_ILLEGAL_INSTRUCTION', 716: 'CUDA_ERROR_MISALIGNED_ADDRESS', 717: 'CUDA_ERROR_INVALID_ADDRESS_SPACE',
  718: 'CUDA_ERROR_INVALID_PC', 719: 'CUDA_ERROR_LAUNCH_FAILED', 800: 'CUDA_ERROR_NOT_PERMITTED',
  801: 'CUDA_ERROR_NOT_SUPPORTED', 802: 'CUDA_ERROR_SYSTEM_NOT_READY', 803: 'CUDA_ERROR_SYSTEM_DRIVER_MISMATCH',
  804: 'CUDA_ERROR_COMPAT_NOT_SUPPORTED_ON_DEVICE', 999: 'CUDA_ERROR_UNKNOWN',
});

/** nvrtcResult values (nvrtc.h). */
export const NVRTC_RESULT_NAMES: Readonly<Record<number, string>> = Object.freeze({
  0: 'NVRTC_SUCCESS', 1: 'NVRTC_ERROR_OUT_OF_MEMORY', 2: 'NVRTC_ERROR_PROGRAM_CREATION_FAILURE',
  3: 'NVRTC_ERROR_INVALID_INPUT', 4: 'NVRTC_ERROR_INVALID_PROGRAM', 5: 'NVRTC_ERROR_INVALID_OPTION',
  6: 'NVRTC_ERROR_COMPILATION', 7: 'NVRTC_ERROR_BUILTIN_OPERATION_FAILURE',
  8: 'NVRTC_ERROR_NO_NAME_EXPRESSIONS_AFTER_COMPILATION', 9: 'NVRTC_ERROR_NO_LOWERED_NAMES_BEFORE_COMPILATION',
  10: 'NVRTC_ERROR_NAME_EXPRESSION_NOT_VALID', 11: 'NVRTC_ERROR_INTERNAL_ERROR', 12: 'NVRTC_ERROR_TIME_FILE_WRITE_FAILED',
});

/** Errors after which the context is unusable (sticky): the message says so. */
const STICKY = new Set([214, 700, 710, 714, 715, 716, 717, 718, 719]);

/** The name of a CUresult: the driver's own (when given), else ours, else `CUresult <n>`. */
export function cuResultName(status: number, driverName?: string | null): string {
  if (driverName) return driverName;
  return CU_RESULT_NAMES[status] ?? `CUresult ${status}`;
}

/**
 * The error for a failed driver call (`status` ≠ 0): `E_DEVICE` naming the call, the error name and,
 * when known, the driver's description. `describe` is asked only on failure (it calls back into the driver).
 */
export function cuError(call: string, status: number, describe?: (s: number) => { name?: string | null; text?: string | null }): MobaError {
  let info: { name?: string | null; text?: string | null } = {};
  try {
    info = describe?.(status) ?? {};
  } catch {
    info = {};
  }
  const name = cuResultName(status, info.name);
  const text = info.text ? `: ${info.text}` : '';
  const sticky = STICKY.has(status) ? ' (the CUDA context is now unusable: destroy this backend and create a new one)' : '';
  return new MobaError('E_DEVICE', `${call} failed with ${name} (${status})${text}${sticky}`, 'cuda');
}

/** Throws `cuError` unless `status` is CUDA_SUCCESS (0). */
export function checkCu(call: string, status: number, describe?: (s: number) => { name?: string | null; text?: string | null }): void {
  if (status !== 0) throw cuError(call, status, describe);
}

/** The error for a failed NVRTC call; `log` is the compile log (compilation errors). */
export function nvrtcError(call: string, status: number, log?: string): MobaError {
  const name = NVRTC_RESULT_NAMES[status] ?? `nvrtcResult ${status}`;
  const tail = log && log.trim() ? `\n${log.trim()}` : '';
  return new MobaError('E_DEVICE', `${call} failed with ${name} (${status})${tail}`, 'nvrtc');
}

/** Throws `nvrtcError` unless `status` is NVRTC_SUCCESS (0). */
export function checkNvrtc(call: string, status: number, log?: () => string): void {
  if (status !== 0) throw nvrtcError(call, status, log?.());
}
