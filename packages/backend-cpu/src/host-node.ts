/**
 * The Node host (`#host` under the `node` condition): cores and memory from node:os; worker_threads are
 * imported (node-workers.ts) only when a backend with threads > 1 runs its first job on workers.
 */
import os from 'node:os';
import type { Host } from './host.js';

export const host: Host = {
  totalMemory: () => os.totalmem(),
  workers: {
    defaultCount: () => (typeof os.availableParallelism === 'function' ? os.availableParallelism() : os.cpus().length),
    load: async () => (await import('./node-workers.js')).startNodeWorker,
  },
};
