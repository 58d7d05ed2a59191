/**
 * The worker's whole source as one self-contained ES module (kernels included), for starting workers where
 * `worker.js` is not a file beside this one: an application bundled with esbuild, Rollup or Vite for Node,
 * run without node_modules. `null` in the sources; the build (scripts/embed-worker.mjs) replaces
 * dist/worker-source.js with the bundled text.
 */
export const WORKER_SOURCE: string | null = null;
