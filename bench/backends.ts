/**
 * Opens a backend for the bench. The concrete kinds are imported with literal specifiers so that esbuild
 * bundles them into `.device/bench.mjs` (moba-ts's `createBackend` imports them by a computed name, which a
 * bundle cannot follow); `auto` goes through moba-ts. In a bundle the CUDA kernels are found in `kernels/`
 * beside it (`MOBA_CUDA_KERNELS` wins when set).
 */
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { type Backend, type BackendKind, MobaError, createBackend } from 'moba-ts';

const HERE = dirname(fileURLToPath(import.meta.url));

export async function openBackend(kind: BackendKind, opts: { threads?: number; memoryBytes?: number } = {}): Promise<Backend> {
  switch (kind) {
    case 'cpu': {
      const { createCpuBackend } = await import('@moba/backend-cpu');
      return createCpuBackend(opts.threads !== undefined ? { threads: opts.threads } : {});
    }
    case 'webgpu': {
      const { createWebGpuBackend } = await import('@moba/backend-webgpu');
      // MOBA_BENCH_PROFILE=1: GPU time per kernel (timestamp queries around every pass; the decode bench records it)
      const profile = process.env.MOBA_BENCH_PROFILE === '1' ? { profile: true } : {};
      return createWebGpuBackend({ ...(opts.memoryBytes !== undefined ? { memoryBytes: opts.memoryBytes } : {}), ...profile });
    }
    case 'cuda': {
      const beside = join(HERE, 'kernels');
      if (!process.env.MOBA_CUDA_KERNELS && existsSync(join(beside, 'forward.cu'))) process.env.MOBA_CUDA_KERNELS = beside;
      const { createCudaBackend, unavailableReason } = await import('@moba/backend-cuda');
      const why = unavailableReason();
      if (why !== null) throw new MobaError('E_UNSUPPORTED', `backend 'cuda' is not available here: ${why}`, 'backend');
      return createCudaBackend();
    }
    default:
      return createBackend(kind, opts.threads !== undefined ? { threads: opts.threads } : undefined);
  }
}
