/**
 * Runs kernel jobs: in the calling thread for small work or `threads: 1`, else on worker_threads
 * sharing memory (SharedArrayBuffer) and claiming items from one atomic counter. Every output element
 * belongs to one item and each item runs the same operations wherever it runs, so results are
 * bitwise identical for any thread count. Jobs run one at a time; idle workers are unref'd.
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';
import { MobaError } from '@moba/core';
import { type JobMessage, type KernelArgs, type KernelName, runJob } from './kernels.js';

interface WorkerReply {
  readonly ok: boolean;
  readonly message?: string;
}

/**
 * How to start the worker. From the built `dist/` it is plain `worker.js`. From sources (this file is
 * `.ts`: under vitest or `node --import tsx`) it is `worker.ts`, which needs tsx's loader and the
 * `@moba/source` condition; Node 20 ignores `--import` in a worker's execArgv, so a small `data:`
 * bootstrap registers tsx's ESM API (the ESM build: its CJS build resolves its loader wrongly there)
 * and then imports the worker.
 */
function workerEntry(): { url: URL; execArgv: string[] } {
  const self = import.meta.url;
  if (!/\.ts($|\?)/.test(self)) return { url: new URL('./worker.js', self), execArgv: [] };
  const pkgFile = createRequire(self).resolve('tsx/package.json');
  const pkg = JSON.parse(readFileSync(pkgFile, 'utf8')) as { exports: Record<string, { import: { default: string } }> };
  const api = pathToFileURL(join(dirname(pkgFile), pkg.exports['./esm/api']!.import.default)).href;
  const worker = new URL('./worker.ts', self.replace(/\?.*$/, '')).href;
  const boot = `const { register } = await import(${JSON.stringify(api)}); register(); await import(${JSON.stringify(worker)});`;
  return { url: new URL(`data:text/javascript,${encodeURIComponent(boot)}`), execArgv: ['--conditions=@moba/source'] };
}

export class Pool {
  readonly #workers: Worker[] = [];
  #queue: Promise<unknown> = Promise.resolve();
  #closed = false;

  constructor(
    readonly threads: number,
    readonly minParallelWork: number,
  ) {}

  /** Runs `items` items of `kernel`; `work` (FLOPs or a proxy) decides whether workers are used. */
  run<N extends KernelName>(kernel: N, args: KernelArgs<N>, items: number, work: number): Promise<void> {
    if (this.#closed) return Promise.reject(new MobaError('E_DEVICE', 'the CPU backend was destroyed', 'backend'));
    if (items <= 0) return Promise.resolve();
    if (this.threads <= 1 || work < this.minParallelWork) {
      runJob({ kernel, args, items, counter: new Int32Array(1) });
      return Promise.resolve();
    }
    const job: JobMessage = { kernel, args, items, counter: new Int32Array(new SharedArrayBuffer(4)) };
    const next = this.#queue.then(() => this.#dispatch(job));
    this.#queue = next.catch(() => undefined);
    return next;
  }

  /** Terminates the workers; later runs reject with E_DEVICE. */
  async close(): Promise<void> {
    this.#closed = true;
    const ws = this.#workers.splice(0);
    await Promise.all(ws.map((w) => w.terminate()));
  }

  async #dispatch(job: JobMessage): Promise<void> {
    if (this.#closed) throw new MobaError('E_DEVICE', 'the CPU backend was destroyed', 'backend');
    const n = Math.min(this.threads, job.items);
    while (this.#workers.length < n) this.#workers.push(this.#spawn());
    const ws = this.#workers.slice(0, n);
    // wait for every worker (not just the first failure), so no worker is still busy with this job later
    const results = await Promise.allSettled(ws.map((w) => this.#post(w, job)));
    for (const w of ws) w.unref(); // an idle worker must not keep the process alive
    const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) throw failed.reason;
  }

  #spawn(): Worker {
    const { url, execArgv } = workerEntry();
    const w = new Worker(url, { execArgv });
    w.unref();
    return w;
  }

  #post(w: Worker, job: JobMessage): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const done = (): void => {
        w.off('message', onMessage);
        w.off('error', onError);
        w.off('exit', onExit);
      };
      const fail = (why: string): void => {
        done();
        const i = this.#workers.indexOf(w);
        if (i >= 0) this.#workers.splice(i, 1); // a broken worker is replaced on the next job
        void w.terminate();
        reject(new MobaError('E_DEVICE', `CPU worker failed running ${job.kernel}: ${why}`, 'worker'));
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
    });
  }
}
