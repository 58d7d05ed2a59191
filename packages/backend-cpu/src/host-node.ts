/**
 * The Node host (`#host` under the `node` condition): cores and memory from node:os, the cgroup memory limit
 * from /proc and /sys (cgroupMemoryLimit in host.ts); worker_threads are imported (node-workers.ts) only when a
 * backend with threads > 1 runs its first job on workers.
 */
import { readFileSync } from 'node:fs';
import os from 'node:os';
import { type Host, cgroupMemoryLimit } from './host.js';

/** A small text file, or null when it cannot be read (absent, no permission, not Linux). */
function readText(path: string): string | null {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return null;
  }
}

export const host: Host = {
  totalMemory: () => os.totalmem(),
  memoryLimit: () => (process.platform === 'linux' ? cgroupMemoryLimit(readText('/proc/self/cgroup'), readText) : null),
  workers: {
    defaultCount: () => (typeof os.availableParallelism === 'function' ? os.availableParallelism() : os.cpus().length),
    load: async () => (await import('./node-workers.js')).startNodeWorker,
  },
};
