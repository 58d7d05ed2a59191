/**
 * @moba/backend-cpu: MoBA on the CPU in plain TypeScript. f32 kernels (f16/bf16 accepted), fused
 * routing, collect-and-densify forward, deterministic backward, kconv, and worker_threads across
 * cores for large problems in Node; plus a dense causal baseline on the same kernels for benchmarks.
 * Safe to import in a browser: no Node built-in is imported there (see host.ts), and kernels run in
 * the calling thread on plain ArrayBuffers.
 */
import { CPU_BACKEND_OPTION_KEYS, type CpuBackend, type CpuBackendOptions, CpuBackendImpl } from './backend.js';

export type { CpuBackend, CpuBackendOptions, DenseOptions } from './backend.js';
export { CPU_BACKEND_OPTION_KEYS, DENSE_OPTION_KEYS } from './backend.js';
export type { CpuCache } from './cache.js';

/** The uniform name of the factory's option keys in every backend module (unknown keys are E_RANGE). */
export const optionKeys: readonly string[] = CPU_BACKEND_OPTION_KEYS;

/**
 * Creates a CPU backend. In Node, `threads` (default: the available cores, at most 16) workers share
 * the work of problems above `minParallelWork` FLOPs (default 2e7; 0 sends everything to the
 * workers); they are started, and node:worker_threads loaded, by the first such job. `threads: 1`
 * runs everything in the calling thread, as does every backend in a browser (`threads` then reads
 * 1). Tensors are in SharedArrayBuffers only when workers may use them. Results do not depend on the
 * thread count.
 */
export function createCpuBackend(opts: CpuBackendOptions = {}): CpuBackend {
  return new CpuBackendImpl(opts);
}

/** The uniform factory name every backend module exports (used by CLIs). */
export const createBackend = createCpuBackend;

/** The CPU backend runs wherever JavaScript does (Node, browsers). */
export function isAvailable(): boolean {
  return true;
}
