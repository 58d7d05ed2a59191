/**
 * What the CPU backend needs from the JavaScript runtime it runs in. The package's `#host` import resolves
 * (package.json `imports`) to `host-node.ts` under the `node` condition and to `host-web.ts` everywhere else
 * (browsers, web workers), so a browser bundle of this package holds no Node built-in at all.
 */
import type { StartWorker } from './pool.js';

export interface Host {
  /** Bytes of memory of the machine; `caps.memoryBytes` is half of it. */
  totalMemory(): number;
  /**
   * Worker threads for large jobs, or null where kernels run in the calling thread only. `load()` brings in
   * the worker implementation (a dynamic import, on the first job that uses workers) and gives its starter.
   */
  readonly workers: {
    /** The default thread count: the available cores. */
    defaultCount(): number;
    load(): Promise<StartWorker>;
  } | null;
}
