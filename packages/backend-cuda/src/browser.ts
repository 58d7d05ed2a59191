/**
 * @moba/backend-cuda in a browser bundle (the `browser` export condition): CUDA needs Node, the NVIDIA driver
 * and koffi, none of which exist in a page, so this entry never loads them. `isAvailable()` is false and the
 * factories throw `MobaError('E_UNSUPPORTED')`; the types are those of the Node entry.
 */
import { MobaError } from '@moba/core';
import type { CudaBackend, CudaBackendOptions } from './api.js';

export type { CudaBackend, CudaBackendOptions } from './api.js';
export { cuError, nvrtcError, CU_RESULT_NAMES } from './status.js';

const REASON = 'CUDA runs in Node only (the NVIDIA driver is not reachable from a browser)';

export function unavailableReason(): string | null {
  return REASON;
}

export function isAvailable(): boolean {
  return false;
}

export function createCudaBackend(_opts: CudaBackendOptions = {}): CudaBackend {
  throw new MobaError('E_UNSUPPORTED', `backend 'cuda' is not available: ${REASON}`, 'backend');
}

export const createBackend = createCudaBackend;
