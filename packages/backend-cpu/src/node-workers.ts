/**
 * Worker threads for the pool in Node. Imported dynamically by host-node.ts on the first job that runs on
 * workers, so node:worker_threads (and the file-system helpers below) are never loaded at module evaluation
 * and never reach a browser bundle.
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';
import type { JobMessage } from './kernels.js';
import type { PoolWorker } from './pool.js';
import { WORKER_SOURCE } from './worker-source.js';

interface WorkerReply {
  readonly ok: boolean;
  readonly message?: string;
}

/**
 * How to start the worker.
 * - From sources (this file is `.ts`: under vitest or `node --import tsx`) it is `worker.ts`, which needs
 *   tsx's loader and the `@moba/source` condition; Node 20 ignores `--import` in a worker's execArgv, so a
 *   small `data:` bootstrap registers tsx's ESM API (the ESM build: its CJS build resolves its loader wrongly
 *   there) and then imports the worker.
 * - From the built package it is the embedded, self-contained worker module (worker-source.js, made by the
 *   build) as a `data:` URL: it works wherever this file ends up, also inside an application bundle with no
 *   node_modules and no worker.js beside it. A build without the embedding step falls back to `worker.js`.
 */
function workerEntry(): { url: URL; execArgv: string[] } {
  const self = import.meta.url;
  if (!/\.ts($|\?)/.test(self)) {
    if (WORKER_SOURCE) return { url: new URL(`data:text/javascript,${encodeURIComponent(WORKER_SOURCE)}`), execArgv: [] };
    return { url: new URL('./worker.js', self), execArgv: [] };
  }
  const pkgFile = createRequire(self).resolve('tsx/package.json');
  const pkg = JSON.parse(readFileSync(pkgFile, 'utf8')) as { exports: Record<string, { import: { default: string } }> };
  const api = pathToFileURL(join(dirname(pkgFile), pkg.exports['./esm/api']!.import.default)).href;
  const worker = new URL('./worker.ts', self.replace(/\?.*$/, '')).href;
  const boot = `const { register } = await import(${JSON.stringify(api)}); register(); await import(${JSON.stringify(worker)});`;
  return { url: new URL(`data:text/javascript,${encodeURIComponent(boot)}`), execArgv: ['--conditions=@moba/source'] };
}

/** Starts one worker_threads worker, unref'd while idle (an idle worker must not keep the process alive). */
export function startNodeWorker(): PoolWorker {
  const { url, execArgv } = workerEntry();
  const w = new Worker(url, { execArgv });
  w.unref();
  return {
    run: (job: JobMessage) =>
      new Promise<void>((resolve, reject) => {
        const done = (): void => {
          w.off('message', onMessage);
          w.off('error', onError);
          w.off('exit', onExit);
          w.unref();
        };
        const fail = (why: string): void => {
          done();
          void w.terminate();
          reject(new Error(why));
        };
        const onMessage = (r: WorkerReply): void => {
          if (!r.ok) return fail(r.message ?? 'unknown error');
          done();
          resolve();
        };
        const onError = (e: Error): void => fail(e.message);
        const onExit = (code: number): void => fail(`exited with code ${code}`);
        w.on('message', onMessage);
        w.on('error', onError);
        w.on('exit', onExit);
        w.ref(); // keep the process alive while the job runs
        w.postMessage(job);
      }),
    terminate: async () => {
      await w.terminate();
    },
  };
}
