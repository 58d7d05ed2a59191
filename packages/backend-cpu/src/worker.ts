/**
 * Worker entry (Node only: started by node-workers.ts): receives jobs from the pool (pool.ts), runs them
 * on shared memory and answers `{ ok: true }` or `{ ok: false, message }`. Holds no state between jobs.
 */
import { parentPort } from 'node:worker_threads';
import { type JobMessage, runJob } from './kernels.js';

parentPort?.on('message', (job: JobMessage) => {
  try {
    runJob(job);
    parentPort?.postMessage({ ok: true });
  } catch (e) {
    parentPort?.postMessage({ ok: false, message: e instanceof Error ? e.stack ?? e.message : String(e) });
  }
});
