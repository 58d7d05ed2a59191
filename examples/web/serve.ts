/**
 * `pnpm demo:web`: bundles the demo (build.ts) into examples/web/dist/ and serves it on 127.0.0.1, printing the
 * URL. Options: `--port N` (default 5178; 0 = any free port), `--build-only`.
 * The bundling and the server are the browser tests' helpers (they live with the tests, where esbuild is a dependency).
 */
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { buildWith, serveStatic } from '../../packages/backend-webgpu/test/browser/harness.js';
import { DEMO_DIR, copyPage, demoBuildOptions } from './build.js';

function parseArgs(argv: readonly string[]): { port: number; buildOnly: boolean } {
  let port = 5178;
  let buildOnly = false;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--build-only') buildOnly = true;
    else if (a === '--port') {
      port = Number(argv[++i]);
      if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`--port ${String(argv[i])} is invalid: must be an integer in [0, 65535]`);
    } else throw new Error(`unknown argument ${a} (usage: serve.ts [--port N] [--build-only])`);
  }
  return { port, buildOnly };
}

const args = parseArgs(process.argv.slice(2));
const outdir = join(DEMO_DIR, 'dist');
await mkdir(outdir, { recursive: true });
const t0 = performance.now();
await buildWith(demoBuildOptions(outdir));
await copyPage(outdir);
console.log(`built ${join(outdir, 'main.js')} in ${Math.round(performance.now() - t0)} ms`);
if (!args.buildOnly) {
  const server = await serveStatic(outdir, { port: args.port, lifetimeMs: null });
  console.log(`MoBA web demo: ${server.url}  (Ctrl+C to stop; WebGPU in Chromium on Linux needs --enable-unsafe-webgpu)`);
  process.on('SIGINT', () => void server.close().then(() => process.exit(0)));
}
