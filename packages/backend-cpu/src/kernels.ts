/**
 * The kernel table shared by the calling thread and the workers: a job names a kernel, gives its
 * arguments (typed arrays, shared when workers run it, and numbers) and claims work items until none
 * is left.
 */
import { deltaKernel, dkdvKernel, dqKernel } from './backward.js';
import { cacheAttendKernel } from './cache-attend.js';
import { denseDkdvKernel, denseDqKernel, denseForwardKernel } from './dense.js';
import { forwardKernel } from './forward.js';
import { kconvDkKernel, kconvDwKernel, kconvDzKernel, kconvKernel } from './kconv.js';
import { centroidKernel, routeKernel } from './route.js';

export const KERNELS = {
  centroids: centroidKernel,
  route: routeKernel,
  forward: forwardKernel,
  delta: deltaKernel,
  dq: dqKernel,
  dkdv: dkdvKernel,
  kconv: kconvKernel,
  kconvDz: kconvDzKernel,
  kconvDk: kconvDkKernel,
  kconvDw: kconvDwKernel,
  denseForward: denseForwardKernel,
  denseDq: denseDqKernel,
  denseDkdv: denseDkdvKernel,
  cacheAttend: cacheAttendKernel,
} as const;

export type KernelName = keyof typeof KERNELS;
export type KernelArgs<N extends KernelName> = Parameters<(typeof KERNELS)[N]>[0];

/** Message from the pool to a worker: run `kernel` on items claimed from `counter[0]` up to `items`. */
export interface JobMessage {
  readonly kernel: KernelName;
  readonly args: unknown;
  readonly items: number;
  readonly counter: Int32Array;
}

/** Runs a job's items in this thread (a worker), claiming them atomically from the shared counter. */
export function runJob(job: JobMessage): void {
  const claim = (): number => {
    const it = Atomics.add(job.counter, 0, 1);
    return it < job.items ? it : -1;
  };
  (KERNELS[job.kernel] as (a: unknown, c: () => number) => void)(job.args, claim);
}

/** Runs every item of a job in the calling thread, in order (no shared memory, no Atomics). */
export function runInline<N extends KernelName>(kernel: N, args: KernelArgs<N>, items: number): void {
  let next = 0;
  const claim = (): number => (next < items ? next++ : -1);
  (KERNELS[kernel] as (a: unknown, c: () => number) => void)(args, claim);
}
