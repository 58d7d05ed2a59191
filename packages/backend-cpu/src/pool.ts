/**
 * Runs kernel jobs: in the calling thread for small work or `threads: 1`, else on worker threads sharing
 * memory (SharedArrayBuffer) and claiming items from one atomic counter. Every output element belongs to
 * one item and each item runs the same operations wherever it runs, so results are bitwise identical for
 * any thread count. Jobs run one at a time. The pool is lazy: the worker implementation is loaded (a dynamic
 * import of worker_threads in Node, see host-node.ts) and workers are started by the first job that needs
 * them, never when the module is evaluated or the backend is created.
 */
import { MobaError } from '@moba/core';
import { type JobMessage, type KernelArgs, type KernelName, runInline } from './kernels.js';

/** A started worker as the pool sees it (node-workers.ts makes them from worker_threads). */
export interface PoolWorker {
  /**
   * Runs the items of `job` it claims; resolves when it has no more. Rejects with the reason when the
   * worker failed, after which it is terminated and must not be used again.
   */
  run(job: JobMessage): Promise<void>;
  terminate(): Promise<void>;
}

/** Starts one idle worker (it must not keep the process alive while idle). */
export type StartWorker = () => PoolWorker;

const destroyed = (): MobaError => new MobaError('E_DEVICE', 'the CPU backend was destroyed', 'backend');

export class Pool {
  readonly #workers: PoolWorker[] = [];
  readonly #load: (() => Promise<StartWorker>) | null;
  #start: Promise<StartWorker> | null = null;
  #queue: Promise<unknown> = Promise.resolve();
  #closed = false;

  /** `load` gives the worker starter (null: the calling thread only, whatever `threads` says). */
  constructor(
    readonly threads: number,
    readonly minParallelWork: number,
    load: (() => Promise<StartWorker>) | null,
  ) {
    this.#load = load;
  }

  /** Whether jobs may run on workers (their arrays must then be shared). */
  get parallel(): boolean {
    return this.threads > 1 && this.#load !== null;
  }

  /** Runs `items` items of `kernel`; `work` (FLOPs or a proxy) decides whether workers are used. */
  run<N extends KernelName>(kernel: N, args: KernelArgs<N>, items: number, work: number): Promise<void> {
    if (this.#closed) return Promise.reject(destroyed());
    if (items <= 0) return Promise.resolve();
    if (!this.parallel || work < this.minParallelWork) {
      runInline(kernel, args, items);
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
    if (this.#closed) throw destroyed();
    const start = await this.#starter();
    if (this.#closed) throw destroyed();
    const n = Math.min(this.threads, job.items);
    while (this.#workers.length < n) this.#workers.push(start());
    const ws = this.#workers.slice(0, n);
    // wait for every worker (not just the first failure), so no worker is still busy with this job later
    const results = await Promise.allSettled(ws.map((w) => w.run(job)));
    let failure: unknown = null;
    results.forEach((r, i) => {
      if (r.status === 'fulfilled') return;
      const at = this.#workers.indexOf(ws[i]!);
      if (at >= 0) this.#workers.splice(at, 1); // a broken worker is replaced on the next job
      failure ??= r.reason;
    });
    if (failure !== null) {
      const why = failure instanceof Error ? failure.message : String(failure);
      throw new MobaError('E_DEVICE', `CPU worker failed running ${job.kernel}: ${why}`, 'worker');
    }
  }

  /** The worker starter, loaded once (a failed load is retried by the next job). */
  #starter(): Promise<StartWorker> {
    if (!this.#start) {
      const load = this.#load!;
      this.#start = load().catch((e: unknown) => {
        this.#start = null;
        const why = e instanceof Error ? e.message : String(e);
        throw new MobaError('E_DEVICE', `CPU worker threads could not be loaded: ${why}`, 'worker');
      });
    }
    return this.#start;
  }
}
