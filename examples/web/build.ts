/**
 * How the demo is bundled (shared by `serve.ts` and the browser test): esbuild, browser platform, ESM, the
 * workspace's sources through `@moba/source`. No plugin and no stand-ins: `@moba/backend-cpu` (the CPU fallback)
 * resolves its `#host` import to its browser host under the browser platform, so the bundle holds no Node
 * built-in; only `webgpu` (Dawn's Node binding, which the WebGPU backend imports only without `navigator.gpu`)
 * stays external.
 */
import { copyFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const DEMO_DIR = fileURLToPath(new URL('.', import.meta.url));
export const DEMO_ENTRY = join(DEMO_DIR, 'main.ts');
export const DEMO_HTML = join(DEMO_DIR, 'index.html');

/** esbuild options for the demo bundle (`outdir/main.js`); `webgpu` (Dawn's Node binding) is never loaded in a page. */
export function demoBuildOptions(outdir: string): Record<string, unknown> {
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
  };
}

/** Copies the page beside the bundle. */
export async function copyPage(outdir: string): Promise<void> {
  await copyFile(DEMO_HTML, join(outdir, 'index.html'));
}
