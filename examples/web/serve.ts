/**
 * `pnpm demo:web`: bundles the demo (build.ts) into examples/web/dist/ and serves it on 127.0.0.1, printing the
 * URL. Options: `--port N` (default 5178; 0 = any free port), `--build-only`, `--help`, `--version` (the shared
 * @moba/testkit args layer: a bad flag is one line on stderr and exit code 2).
 * The bundling and the server are the browser tests' helpers (they live with the tests, where esbuild is a dependency).
 */
import { mkdir } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { type FlagSpecs, type ParseResult, flagHelp, parseFlags, reportError } from '@moba/testkit';
import { buildWith, serveStatic } from '../../packages/backend-webgpu/test/browser/harness.js';
import { DEMO_DIR, copyPage, demoBuildOptions } from './build.js';

const FLAGS = {
  port: { type: 'int', min: 0, max: 65535, default: 5178, help: 'port on 127.0.0.1 (0: any free port)' },
  'build-only': { type: 'bool', help: 'bundle into examples/web/dist/ and exit' },
} as const satisfies FlagSpecs;

const HELP = `usage: pnpm demo:web -- [flags]

Bundles the browser demo into examples/web/dist/ and serves it on 127.0.0.1 (Ctrl+C stops it).

flags:
${flagHelp(FLAGS)}
`;

let parsed: ParseResult<typeof FLAGS>;
try {
  parsed = parseFlags(process.argv.slice(2), FLAGS);
} catch (e) {
  process.exit(reportError(e, 'pnpm demo:web -- --help', process.stderr));
}
if (parsed.help || parsed.version) {
  const version = (createRequire(import.meta.url)('moba-ts/package.json') as { version: string }).version;
  process.stdout.write(parsed.help ? HELP : `moba-ts ${version}\n`);
  process.exit(0);
}
const args = { port: parsed.flags.port, buildOnly: parsed.flags['build-only'] };
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
