/**
 * Browser test harness: bundle a page with esbuild (browser platform, sources through `@moba/source`), serve a
 * folder from a small http server on 127.0.0.1 (random port, closes itself after `lifetimeMs`), and launch
 * Debian's chromium through playwright-core with WebGPU enabled (SwiftShader/lavapipe adapter, no GPU needed).
 * Nothing is downloaded: the browser is `/usr/bin/chromium` (`bash scripts/setup-chromium.sh`).
 */
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { extname, join, normalize, resolve, sep } from 'node:path';
import { type BuildOptions, type BuildResult, build } from 'esbuild';
import { type Browser, chromium } from 'playwright-core';

/** The browser binary (override with MOBA_CHROMIUM). */
export const CHROMIUM = process.env.MOBA_CHROMIUM ?? '/usr/bin/chromium';

/** The flags of `../shared/device/README.md` §A; `--enable-unsafe-webgpu` alone gives Chromium's software adapter. */
export const CHROMIUM_ARGS = [
  '--headless', '--no-sandbox', '--disable-background-networking', '--disable-component-update', '--disable-sync',
  '--disable-quic', '--no-first-run',
] as const;

export function hasChromium(): boolean {
  return existsSync(CHROMIUM);
}

/** Launches chromium; `webgpu: false` leaves WebGPU off (the page then sees no adapter). */
export async function launchChromium(opts: { webgpu?: boolean } = {}): Promise<Browser> {
  const args = [...CHROMIUM_ARGS, ...(opts.webgpu === false ? [] : ['--enable-unsafe-webgpu'])];
  return chromium.launch({ executablePath: CHROMIUM, headless: true, args, timeout: 0 }); // no launch limit: vitest.config.ts's hang guard applies
}

/**
 * Bundles `entry` for the browser into `outdir/main.js` (ESM, workspace sources through `@moba/source`).
 * Nothing is external: the backend's `#dawn` import resolves to its web stub under the browser platform, so
 * Dawn (`webgpu`, the Node binding) is never reached; a bundle that tried would fail here.
 */
export async function bundlePage(entry: string, outdir: string, extra: Partial<BuildOptions> = {}): Promise<void> {
  await build({
    entryPoints: { main: entry },
    outdir,
    bundle: true,
    format: 'esm',
    platform: 'browser',
    target: 'es2022',
    conditions: ['@moba/source'],
    sourcemap: 'inline',
    logLevel: 'warning',
    ...extra,
  });
}

/** Runs esbuild with options built elsewhere (e.g. `examples/web/build.ts`, which carries no esbuild types). */
export async function buildWith(options: object): Promise<BuildResult> {
  return build(options as BuildOptions);
}

/** A temporary folder, removed by the returned `remove()`. */
export async function tempDir(prefix: string): Promise<{ dir: string; remove(): Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  return { dir, remove: () => rm(dir, { recursive: true, force: true }) };
}

export async function writeText(file: string, text: string): Promise<void> {
  await writeFile(file, text, 'utf8');
}

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8', '.css': 'text/css; charset=utf-8',
  '.json': 'application/json', '.png': 'image/png', '.svg': 'image/svg+xml', '.map': 'application/json',
};

/**
 * Cross-origin isolation headers (COOP/COEP), served only with `isolated: true`: an isolated page has
 * SharedArrayBuffer. No page here needs it (the CPU backend uses plain ArrayBuffers in a page), and serving
 * without it is what an ordinary static host does, so that is the default.
 */
const ISOLATION = { 'cross-origin-opener-policy': 'same-origin', 'cross-origin-embedder-policy': 'require-corp' } as const;

export interface StaticServer {
  readonly url: string;
  close(): Promise<void>;
}

/**
 * Serves the files under `root` on 127.0.0.1 (`port` 0, the default: a free one). `routes` answers extra paths
 * with JSON. Pages are cross-origin isolated (SharedArrayBuffer available) only with `isolated: true`. The server
 * closes itself after `lifetimeMs` (default 5 minutes; `null`: never) so a crashed test cannot leave it behind.
 */
export async function serveStatic(
  root: string,
  opts: { port?: number; lifetimeMs?: number | null; routes?: Record<string, () => unknown>; isolated?: boolean } = {},
): Promise<StaticServer> {
  const base = resolve(root);
  const headers = opts.isolated ? ISOLATION : {};
  const server = createServer((req, res) => {
    void (async () => {
      const path = decodeURIComponent(new URL(req.url ?? '/', 'http://127.0.0.1').pathname);
      const route = opts.routes?.[path];
      if (route) {
        res.writeHead(200, { ...headers, 'content-type': 'application/json' }).end(JSON.stringify(route()));
        return;
      }
      const file = normalize(join(base, path.endsWith('/') ? `${path}index.html` : path));
      if (file !== base && !file.startsWith(base + sep)) {
        res.writeHead(403).end();
        return;
      }
      try {
        const body = await readFile(file);
        res.writeHead(200, { ...headers, 'content-type': TYPES[extname(file)] ?? 'application/octet-stream', 'cache-control': 'no-store' }).end(body);
      } catch {
        res.writeHead(404, { 'content-type': 'text/plain' }).end('not found');
      }
    })();
  });
  await new Promise<void>((ok, fail) => {
    server.once('error', fail);
    server.listen(opts.port ?? 0, '127.0.0.1', () => ok());
  });
  const lifetime = opts.lifetimeMs === undefined ? 300_000 : opts.lifetimeMs;
  const timer = lifetime === null ? undefined : setTimeout(() => server.close(), lifetime);
  timer?.unref();
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/`,
    close: () => {
      clearTimeout(timer);
      server.closeAllConnections();
      return new Promise<void>((ok) => server.close(() => ok()));
    },
  };
}
