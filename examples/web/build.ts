/**
 * How the demo is bundled (shared by `serve.ts` and the browser test): esbuild, browser platform, ESM, the
 * workspace's sources through `@moba/source`. No plugin and no stand-ins: `@moba/backend-cpu` (the CPU fallback)
 * resolves its `#host` import to its browser host under the browser platform, so the bundle holds no Node
 * built-in, and `@moba/backend-webgpu` resolves its `#dawn` import to the browser stand-in, so `webgpu` (Dawn's
 * Node binding) is never bundled either: default settings, no `external`.
 */
import { copyFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const DEMO_DIR = fileURLToPath(new URL('.', import.meta.url));
export const DEMO_ENTRY = join(DEMO_DIR, 'main.ts');
export const DEMO_HTML = join(DEMO_DIR, 'index.html');

/** esbuild options for the demo bundle (`outdir/main.js`). */
export function demoBuildOptions(outdir: string): Record<string, unknown> {
  return {
    entryPoints: { main: DEMO_ENTRY },
    outdir,
    bundle: true,
    format: 'esm',
    platform: 'browser',
    target: 'es2022',
    conditions: ['@moba/source'],
    minify: true,
    sourcemap: true,
    logLevel: 'warning',
  };
}

/** Copies the page beside the bundle. */
export async function copyPage(outdir: string): Promise<void> {
  await copyFile(DEMO_HTML, join(outdir, 'index.html'));
}
