/// <reference lib="dom" />
/**
 * The CPU backend in a browser. (1) Its entry bundles with esbuild for `platform: 'browser'` with no externals
 * and no plugins: the `#host` import (package.json `imports`) picks host-web.ts, so no Node built-in, worker
 * code or worker_threads reaches the bundle. (2) The bundle runs in headless Chromium (Debian's, through
 * playwright-core; WebGPU off) on a page served without cross-origin isolation, so without SharedArrayBuffer:
 * the backend runs in the page's thread on plain ArrayBuffers, passes the conformance suite (golden cases
 * included), and gives the same bits as Node with 1 thread and with 2 worker threads.
 * The esbuild, server and browser helpers are the WebGPU browser tests' (where esbuild and playwright-core are
 * dependencies). Without chromium the page test is a visible skip, unless `MOBA_REQUIRE` names webgpu or
 * chromium (CI), then it fails. Setup: `bash scripts/setup-chromium.sh`.
 */
import { existsSync, readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { PACKAGE_CASES_DIR, PACKAGE_EXT_CASES_DIR, listGoldenCases, summaryLine } from '@moba/testkit';
import type { GoldenSource } from '@moba/testkit/browser';
import { isRequired } from '@moba/testkit/vitest';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  CHROMIUM, type StaticServer, buildWith, hasChromium, launchChromium, serveStatic, tempDir, writeText,
} from '../../backend-webgpu/test/browser/harness.js';
import { createCpuBackend } from '../src/index.js';
import type { CpuPageResult } from './browser/cpu-page.js';
import { type Bits, bitDiffs, runProblem } from './browser/problem.js';

const PKG = fileURLToPath(new URL('..', import.meta.url));
const ENTRY = join(PKG, 'src/index.ts');
const available = hasChromium();
const required = isRequired('webgpu') || isRequired('chromium');
const MISSING = `${CHROMIUM} is missing (install it with bash scripts/setup-chromium.sh)`;

/** `it`, or a visible skip naming the missing browser. */
function browserIt(name: string, fn: () => Promise<void>): void {
  if (available) it(name, fn); // no per-test timeout: vitest.config.ts's hang guard applies
  else it(name, (t) => t.skip(MISSING));
}

/** esbuild options of a browser bundle: no externals, no plugins, sources through `@moba/source`. */
function browserBuild(entry: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    entryPoints: { main: entry }, bundle: true, format: 'esm', platform: 'browser', target: 'es2022',
    conditions: ['@moba/source'], logLevel: 'silent', metafile: true, ...extra,
  };
}

describe('@moba/backend-cpu browser entry', () => {
  it('bundles for platform browser with no externals and no Node built-ins', async () => {
    const r = await buildWith(browserBuild(ENTRY, { write: false }));
    expect(r.errors).toEqual([]);
    const inputs = Object.keys(r.metafile!.inputs);
    const cpu = inputs.filter((f) => f.includes('backend-cpu/src/')).map((f) => basename(f)).sort();
    expect(cpu).toContain('host-web.ts');
    for (const nodeOnly of ['host-node.ts', 'node-workers.ts', 'worker.ts']) expect(cpu).not.toContain(nodeOnly);
    expect(inputs.filter((f) => /^node:|^(os|fs|path|url|module|worker_threads)$/.test(f))).toEqual([]);
    const imports = Object.values(r.metafile!.inputs).flatMap((i) => i.imports.map((x) => x.path));
    expect(imports.filter((p) => p.startsWith('node:'))).toEqual([]);
    const js = r.outputFiles!.map((f) => f.text).join('\n');
    expect(js).not.toMatch(/worker_threads|node:|\bimport\(/);
  });

  it('bundles for platform node with the Node host, worker_threads behind a dynamic import', async () => {
    const r = await buildWith({ ...browserBuild(ENTRY, { write: false }), platform: 'node' });
    const cpu = Object.keys(r.metafile!.inputs).filter((f) => f.includes('backend-cpu/src/')).map((f) => basename(f));
    expect(cpu).toContain('host-node.ts');
    expect(cpu).toContain('node-workers.ts');
    expect(cpu).not.toContain('host-web.ts');
    const host = Object.entries(r.metafile!.inputs).find(([f]) => f.endsWith('host-node.ts'))![1];
    expect(host.imports.find((x) => x.path.endsWith('node-workers.ts'))?.kind).toBe('dynamic-import');
  });

  it('package.json maps #host to the Node host under `node` and to the web host otherwise, in sources and dist', () => {
    const pkg = JSON.parse(readFileSync(join(PKG, 'package.json'), 'utf8')) as { imports: Record<string, Record<string, unknown>> };
    const host = pkg.imports['#host']!;
    expect(Object.keys(host)).toEqual(['@moba/source', 'node', 'default']);
    expect(host['@moba/source']).toEqual({ node: './src/host-node.ts', default: './src/host-web.ts' });
    expect([host.node, host.default]).toEqual(['./dist/host-node.js', './dist/host-web.js']);
    for (const f of ['src/host-node.ts', 'src/host-web.ts']) expect(existsSync(join(PKG, f)), f).toBe(true);
  });
});

describe('cpu backend in chromium (no cross-origin isolation)', () => {
  if (!available && required) {
    it('chromium is required (MOBA_REQUIRE)', () => {
      throw new Error(`${MISSING}, but MOBA_REQUIRE=${process.env.MOBA_REQUIRE} needs the browser suites`);
    });
    return;
  }
  let server: StaticServer | null = null;
  let cleanup: (() => Promise<void>) | null = null;

  beforeAll(async () => {
    if (!available) return;
    const tmp = await tempDir('moba-cpu-page-');
    cleanup = tmp.remove;
    await buildWith(browserBuild(join(PKG, 'test/browser/cpu-page.ts'), { outdir: tmp.dir, sourcemap: 'inline' }));
    await writeText(join(tmp.dir, 'index.html'), '<!doctype html><meta charset="utf-8"><title>moba cpu</title><script type="module" src="main.js"></script>\n');
    server = await serveStatic(tmp.dir, { lifetimeMs: 3_600_000 });
  });

  afterAll(async () => {
    await server?.close();
    await cleanup?.();
  });

  browserIt('runs in the page thread on plain ArrayBuffers: conformance passes, bits equal Node with 1 and 2 threads', async () => {
    const cases: GoldenSource[] = await Promise.all(
      [...listGoldenCases(PACKAGE_CASES_DIR), ...listGoldenCases(PACKAGE_EXT_CASES_DIR)].map(async (f) => ({ name: basename(f), json: JSON.parse(await readFile(f, 'utf8')) as unknown })),
    );
    const browser = await launchChromium({ webgpu: false });
    let res: CpuPageResult;
    const logs: string[] = [];
    try {
      const page = await browser.newPage();
      page.on('console', (m) => logs.push(`${m.type()}: ${m.text()}`));
      page.on('pageerror', (e) => logs.push(`pageerror: ${e.message}`));
      await page.goto(server!.url);
      await page.waitForFunction(() => document.title === 'moba cpu: ready', null, { timeout: 0 });
      res = await page.evaluate((c) => (globalThis as unknown as { mobaCpu(c: GoldenSource[]): Promise<CpuPageResult> }).mobaCpu(c), cases);
    } finally {
      await browser.close();
    }
    const context = logs.slice(-20).join('\n');
    expect(res.error, context).toBeNull();
    expect(logs.filter((l) => l.startsWith('pageerror')), context).toEqual([]);
    expect([res.crossOriginIsolated, res.sharedArrayBuffer]).toEqual([false, 'undefined']);
    expect(res.threads).toEqual({ byDefault: 1, four: 1 }); // no worker threads in a page: the calling thread
    expect(res.memoryBytes).toBeGreaterThan(0);

    const r = res.report!;
    const failures = r.results.filter((x) => !x.ok).map((x) => `✗ ${x.group}: ${x.name}\n${x.message ?? ''}`);
    console.log(`chromium cpu backend: ${summaryLine(r)} in ${(r.durationMs / 1000).toFixed(1)} s`);
    expect(failures, failures.join('\n')).toEqual([]);
    expect(r.backend).toBe('cpu');
    expect(r.passed).toBeGreaterThan(20);
    const golden = r.results.filter((x) => x.group === 'golden');
    expect(golden.map((x) => x.name).sort()).toEqual(cases.map((c) => c.name).sort());
    expect(golden.every((x) => x.ok && !x.skipped)).toBe(true);

    const node: Record<string, Bits> = {};
    for (const threads of [1, 2]) {
      const b = createCpuBackend({ threads, minParallelWork: 0 });
      try {
        node[threads] = await runProblem(b);
      } finally {
        await b.destroy();
      }
    }
    expect(Object.keys(res.bits!).length).toBe(2 * 12);
    expect(bitDiffs(node[1]!, node[2]!)).toEqual([]);
    expect(bitDiffs(res.bits!, node[1]!)).toEqual([]);
  });
});
