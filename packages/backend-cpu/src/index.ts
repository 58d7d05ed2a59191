/**
 * @moba/backend-cpu: MoBA on the CPU in plain TypeScript. f32 kernels (f16/bf16 accepted), fused
 * routing, collect-and-densify forward, deterministic backward, kconv, and worker_threads across
 * cores for large problems; plus a dense causal baseline on the same kernels for benchmarks.
 */
import { type CpuBackend, type CpuBackendOptions, CpuBackendImpl } from './backend.js';

export type { CpuBackend, CpuBackendOptions, DenseOptions } from './backend.js';

/**
 * Creates a CPU backend. `threads` (default: the available cores, at most 16) workers share the
 * work of problems above `minParallelWork` FLOPs (default 2e7; 0 sends everything to the workers);
 * `threads: 1` runs everything in the calling thread. Results do not depend on the thread count.
 */
export function createCpuBackend(opts: CpuBackendOptions = {}): CpuBackend {
  return new CpuBackendImpl(opts);
}

/** The uniform factory name every backend module exports (used by CLIs). */
export const createBackend = createCpuBackend;

/** The CPU backend runs wherever Node does. */
export function isAvailable(): boolean {
  return true;
}
