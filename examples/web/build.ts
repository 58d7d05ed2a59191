/**
 * How the demo is bundled (shared by `serve.ts` and the browser test): esbuild, browser platform, ESM, the
 * workspace's sources through `@moba/source`, plus `nodeBuiltinsForBrowser` for the CPU fallback.
 *
 * Why the plugin: `@moba/backend-cpu` imports node:os (core count, memory) in its backend and node:fs, node:module,
 * node:path, node:url, node:worker_threads in its worker pool at module top level. With `threads: 1` (what the
 * demo uses) none of the pool's Node calls ever runs, so the page gets small stand-ins: `os` answers from
 * `navigator`, everything else throws if it were ever reached. Once backend-cpu loads its pool lazily and
 * guards `os`, this plugin can go.
 */
import { copyFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const DEMO_DIR = fileURLToPath(new URL('.', import.meta.url));
export const DEMO_ENTRY = join(DEMO_DIR, 'main.ts');
export const DEMO_HTML = join(DEMO_DIR, 'index.html');

/** The part of esbuild's plugin API the plugin uses (structural, so this file needs no esbuild types). */
export interface EsbuildPluginLike {
  name: string;
  setup(build: {
    onResolve(o: { filter: RegExp }, cb: (a: { path: string }) => { path: string; namespace: string }): void;
    onLoad(o: { filter: RegExp; namespace: string }, cb: (a: { path: string }) => { contents: string; loader: 'js' }): void;
  }): void;
}

const THROWING: Record<string, readonly string[]> = {
  'node:fs': ['readFileSync'],
  'node:module': ['createRequire'],
  'node:path': ['dirname', 'join'],
  'node:url': ['pathToFileURL'],
  'node:worker_threads': ['parentPort'],
};

function shim(mod: string): string {
  const fail = `throw new Error(${JSON.stringify(`${mod} is not available in a browser (the CPU backend runs with threads: 1 here)`)})`;
  if (mod === 'node:os') {
    return [
      'const cores = () => globalThis.navigator?.hardwareConcurrency || 1;',
      'const os = { availableParallelism: cores, cpus: () => Array.from({ length: cores() }, () => ({})),',
      '  totalmem: () => (globalThis.navigator?.deviceMemory || 4) * 2 ** 30 };',
      'export default os;',
    ].join('\n');
  }
  const names = THROWING[mod] ?? [];
  const lines = names.map((n) => `export function ${n}() { ${fail}; }`);
  if (mod === 'node:worker_threads') lines.push(`export class Worker { constructor() { ${fail}; } }`);
  return lines.join('\n');
}

/** Resolves the Node built-ins `@moba/backend-cpu` imports to the browser stand-ins above. */
export const nodeBuiltinsForBrowser: EsbuildPluginLike = {
  name: 'moba-node-builtins-for-browser',
  setup(build) {
    build.onResolve({ filter: /^node:(os|fs|module|path|url|worker_threads)$/ }, (a) => ({ path: a.path, namespace: 'moba-node-shim' }));
    build.onLoad({ filter: /.*/, namespace: 'moba-node-shim' }, (a) => ({ contents: shim(a.path), loader: 'js' }));
  },
};

/** esbuild options for the demo bundle (`outdir/main.js`); `webgpu` (Dawn's Node binding) is never loaded in a page. */
export function demoBuildOptions(outdir: string): Record<string, unknown> & { plugins: EsbuildPluginLike[] } {
  return {
    entryPoints: { main: DEMO_ENTRY },
    outdir,
    bundle: true,
    format: 'esm',
    platform: 'browser',
    target: 'es2022',
    conditions: ['@moba/source'],
    external: ['webgpu'],
    minify: true,
    sourcemap: true,
    logLevel: 'warning',
    plugins: [nodeBuiltinsForBrowser],
  };
}

/** Copies the page beside the bundle. */
export async function copyPage(outdir: string): Promise<void> {
  await copyFile(DEMO_HTML, join(outdir, 'index.html'));
}
