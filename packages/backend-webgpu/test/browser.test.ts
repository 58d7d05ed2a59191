/// <reference lib="dom" />
/**
 * The WebGPU backend in a real browser: headless Chromium (Debian's `/usr/bin/chromium`, SwiftShader adapter)
 * driven by playwright-core. A page bundled with esbuild runs `runConformance` from `@moba/testkit/browser`
 * on `navigator.gpu` with the package's golden cases; the test asserts its Report. Without chromium the suite
 * is a visible skip, unless `MOBA_REQUIRE` names webgpu (then it fails). Setup: `bash scripts/setup-chromium.sh`.
 * The web demo (examples/web) is tested here too: run on WebGPU, numbers, canvas pixels, a screenshot
 * (examples/web/screenshot.png), and the CPU fallback in a browser without WebGPU, served without cross-origin
 * isolation (no SharedArrayBuffer). The CPU backend's own page test is packages/backend-cpu/test/browser.test.ts.
 */
import { readFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { PACKAGE_CASES_DIR, PACKAGE_EXT_CASES_DIR, coreProperties, listGoldenCases, loadGoldenCase, summaryLine } from '@moba/testkit';
import { type GoldenSource, coreProperties as browserProperties, parseGoldenCase } from '@moba/testkit/browser';
import { isRequired } from '@moba/testkit/vitest';
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { copyPage, demoBuildOptions } from '../../../examples/web/build.js';
import type { DemoRun } from '../../../examples/web/main.js';
import { PLOT } from '../../../examples/web/heatmap.js';
import type { PageResult } from './browser/conformance-page.js';
import { runDecodeMode } from './browser/demo-decode.js';
import { CHROMIUM, type StaticServer, buildWith, bundlePage, hasChromium, launchChromium, serveStatic, tempDir, writeText } from './browser/harness.js';

const here = fileURLToPath(new URL('.', import.meta.url));
const SCREENSHOT = fileURLToPath(new URL('../../../examples/web/screenshot.png', import.meta.url));
const available = hasChromium();
const required = isRequired('webgpu');
const MISSING = `${CHROMIUM} is missing (install it with bash scripts/setup-chromium.sh)`;

/** `it`, or a visible skip naming the missing browser. */
function browserIt(name: string, fn: () => Promise<void>): void {
  if (available) it(name, fn); // no per-test timeout: vitest.config.ts's hang guard applies
  else it(name, (t) => t.skip(MISSING));
}

// The browser entry of the testkit mirrors parts of the Node one (it cannot import node:fs); these keep them in step.
describe('@moba/testkit/browser matches the Node entry', () => {
  it('has the same property catalogue', () => {
    const names = (ps: readonly { group: string; name: string }[]): string[] => ps.map((p) => `${p.group}: ${p.name}`);
    expect(names(browserProperties)).toEqual(names(coreProperties));
  });

  it('parses every golden case like loadGoldenCase', async () => {
    const files = listGoldenCases(PACKAGE_CASES_DIR);
    expect(files.length).toBeGreaterThan(0);
    for (const f of files) {
      const { file: _node, ...fromDisk } = loadGoldenCase(f);
      const { file: _browser, ...fromJson } = parseGoldenCase(JSON.parse(await readFile(f, 'utf8')), basename(f));
      expect(fromJson, basename(f)).toEqual(fromDisk);
    }
    expect(() => parseGoldenCase({ config: { seqlens: [4], heads_q: 1, head_dim: 2, block_size: 2, topk: 1 } }, 'bad.json')).toThrow(/bad.json is malformed: "inputs" is missing/);
  });
});

describe('webgpu in chromium', () => {
  if (!available && required) {
    it('chromium is required (MOBA_REQUIRE includes webgpu)', () => {
      throw new Error(`${MISSING}, but MOBA_REQUIRE=${process.env.MOBA_REQUIRE} needs the browser suite`);
    });
    return;
  }
  let browser: Browser | null = null;
  let server: StaticServer | null = null;
  let cleanup: (() => Promise<void>) | null = null;

  beforeAll(async () => {
    if (!available) return;
    const tmp = await tempDir('moba-browser-');
    cleanup = tmp.remove;
    await bundlePage(join(here, 'browser/conformance-page.ts'), tmp.dir);
    await writeText(join(tmp.dir, 'index.html'), '<!doctype html><meta charset="utf-8"><title>moba conformance</title><script type="module" src="main.js"></script>\n');
    server = await serveStatic(tmp.dir, { lifetimeMs: 3_600_000 });
    browser = await launchChromium();
  });

  afterAll(async () => {
    await browser?.close();
    await server?.close();
    await cleanup?.();
  });

  browserIt('runConformance passes on navigator.gpu (golden cases included)', async () => {
    const cases: GoldenSource[] = await Promise.all(
      [...listGoldenCases(PACKAGE_CASES_DIR), ...listGoldenCases(PACKAGE_EXT_CASES_DIR)].map(async (f) => ({ name: basename(f), json: JSON.parse(await readFile(f, 'utf8')) as unknown })),
    );
    expect(cases.length).toBeGreaterThanOrEqual(4);
    const page = await browser!.newPage();
    const logs: string[] = [];
    page.on('console', (m) => logs.push(`${m.type()}: ${m.text()}`));
    page.on('pageerror', (e) => logs.push(`pageerror: ${e.message}`));
    await page.goto(server!.url);
    await page.waitForFunction(() => document.title === 'moba conformance: ready', null, { timeout: 0 });
    const res = await page.evaluate((c) => (globalThis as unknown as { mobaConformance(c: GoldenSource[]): Promise<PageResult> }).mobaConformance(c), cases);
    await page.close();
    const context = `adapter ${JSON.stringify(res.adapter)}\n${logs.slice(-20).join('\n')}`;
    expect(res.error, context).toBeNull();
    expect(res.adapter, context).not.toBeNull();
    const r = res.report!;
    const failures = r.results.filter((x) => !x.ok).map((x) => `✗ ${x.group}: ${x.name}\n${x.message ?? ''}`);
    console.log(`chromium webgpu (${res.adapter!.vendor} ${res.adapter!.architecture} ${res.adapter!.description}): ${summaryLine(r)} in ${(r.durationMs / 1000).toFixed(1)} s`);
    expect(failures, failures.join('\n')).toEqual([]);
    expect(r.failed).toBe(0);
    expect(r.passed).toBeGreaterThan(20);
    expect(r.backend).toBe('webgpu');
    const golden = r.results.filter((x) => x.group === 'golden');
    expect(golden.map((x) => x.name).sort()).toEqual(cases.map((c) => c.name).sort());
    expect(golden.every((x) => x.ok && !x.skipped)).toBe(true);
  });
});

interface DemoState {
  readonly state: string;
  readonly status: string;
  readonly backendLabel: string;
  readonly fallback: string | null;
  readonly phases: Record<string, number>;
  readonly attended: number;
  readonly run: DemoRun | null;
}

async function demoState(page: Page): Promise<DemoState> {
  return page.evaluate(() => {
    const status = document.getElementById('status')!;
    const fb = document.getElementById('fallback')!;
    const phases: Record<string, number> = {};
    for (const tr of Array.from(document.querySelectorAll<HTMLTableRowElement>('#timings tr[data-phase]'))) phases[tr.dataset.phase!] = Number(tr.dataset.ms);
    return {
      state: status.dataset.state ?? '', status: status.textContent ?? '',
      backendLabel: document.getElementById('backend')!.textContent ?? '',
      fallback: fb.hidden ? null : fb.textContent,
      phases, attended: Number(document.getElementById('attended')!.dataset.fraction),
      run: (globalThis as unknown as { mobaDemo?: DemoRun }).mobaDemo ?? null,
    };
  });
}

/** Sets the controls, clicks run and waits for the page to finish. */
async function runDemo(page: Page, p: { tokens: number; blockSize: number; topk: number; kconv: number }): Promise<DemoState> {
  await page.waitForFunction(() => document.getElementById('status')?.dataset.state === 'ready', null, { timeout: 0 });
  await page.fill('#tokens', String(p.tokens));
  await page.selectOption('#blockSize', String(p.blockSize));
  await page.fill('#topk', String(p.topk));
  await page.selectOption('#kconv', String(p.kconv));
  await page.click('#run');
  await page.waitForFunction(() => ['done', 'error'].includes(document.getElementById('status')?.dataset.state ?? ''), null, { timeout: 0 });
  return demoState(page);
}

/** RGB of the pixel at (x, y) of the heatmap canvas, and how many distinct colours the plot area holds. */
async function canvasPixels(page: Page, points: readonly [number, number][]): Promise<{ at: number[][]; distinct: number; nonWhite: number }> {
  return page.evaluate(({ points, plot }) => {
    const c = document.getElementById('heatmap') as HTMLCanvasElement;
    const ctx = c.getContext('2d')!;
    const at = points.map(([x, y]) => Array.from(ctx.getImageData(x, y, 1, 1).data.slice(0, 3)));
    const img = ctx.getImageData(plot.left, plot.top, plot.size, plot.size).data;
    const seen = new Set<number>();
    let nonWhite = 0;
    for (let i = 0; i < img.length; i += 4) {
      seen.add((img[i]! << 16) | (img[i + 1]! << 8) | img[i + 2]!);
      if (img[i]! < 250 || img[i + 1]! < 250 || img[i + 2]! < 250) nonWhite++;
    }
    return { at, distinct: seen.size, nonWhite: nonWhite / (img.length / 4) };
  }, { points, plot: PLOT });
}

/**
 * Opens `url` in a fresh Chromium (`webgpu: false`: one without WebGPU) and runs `body` on the page with the
 * page's uncaught errors collected so far; closes the browser after.
 */
async function withDemoPage(url: string, opts: { webgpu?: false; viewport?: { width: number; height: number } }, body: (page: Page, errors: string[]) => Promise<void>): Promise<void> {
  const browser = await launchChromium(opts.webgpu === false ? { webgpu: false } : {});
  try {
    const page = await browser.newPage(opts.viewport ? { viewport: opts.viewport } : {});
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(e.message));
    await page.goto(url);
    await body(page, errors);
  } finally {
    await browser.close();
  }
}

describe('web demo (examples/web) in chromium', () => {
  let server: StaticServer | null = null;
  let cleanup: (() => Promise<void>) | null = null;

  beforeAll(async () => {
    if (!available) return;
    const tmp = await tempDir('moba-demo-');
    cleanup = tmp.remove;
    await buildWith({ ...demoBuildOptions(tmp.dir), minify: false, sourcemap: 'inline' });
    await copyPage(tmp.dir);
    server = await serveStatic(tmp.dir, { lifetimeMs: 3_600_000 });
  });

  afterAll(async () => {
    await server?.close();
    await cleanup?.();
  });

  browserIt('runs MoBA on WebGPU, shows timings, the attended fraction and the routing heatmap', async () => {
    await withDemoPage(server!.url, { viewport: { width: 1000, height: 720 } }, async (page, errors) => {
      const s = await runDemo(page, { tokens: 2048, blockSize: 64, topk: 3, kconv: 4 });
      expect(s.state, s.status).toBe('done');
      expect(errors).toEqual([]);
      expect(s.fallback).toBeNull();
      expect(s.backendLabel).toMatch(/^WebGPU: /);
      expect(s.run?.backend).toBe('webgpu');
      for (const phase of ['kconv', 'route', 'forward', 'backward']) expect(s.phases[phase], phase).toBeGreaterThan(0);
      expect(s.attended).toBeGreaterThan(0);
      expect(s.attended).toBeLessThanOrEqual(1);
      // top-3 of 32 blocks per query: well below dense, above the own block alone
      expect(s.attended).toBeLessThan(0.5);
      expect(s.run!.attended).toBe(s.attended);
      expect(s.run!.blocks).toBe(32);
      // every (row, head) selects its own block: the diagonal holds T · Hq selections
      expect(s.run!.diagonalSelections).toBe(2048 * 4);
      // canvas: 32 cells of 14 px; the diagonal is the largest count (top colour), a future block is empty (bottom colour)
      const cell = PLOT.size / 32;
      const centre = (r: number, c: number): [number, number] => [Math.floor(PLOT.left + (c + 0.5) * cell), Math.floor(PLOT.top + (r + 0.5) * cell)];
      const px = await canvasPixels(page, [centre(0, 0), centre(31, 31), centre(5, 20), centre(0, 31)]);
      for (const rgb of px.at.slice(0, 2)) expect(rgb).toEqual([253, 231, 37]);
      for (const rgb of px.at.slice(2)) expect(rgb).toEqual([68, 1, 84]);
      expect(px.distinct).toBeGreaterThan(4);
      expect(px.nonWhite).toBeGreaterThan(0.95);
      await page.screenshot({ path: SCREENSHOT });
      console.log(`demo on ${s.backendLabel}: ${Object.entries(s.phases).map(([k, v]) => `${k} ${v.toFixed(1)} ms`).join(', ')}; attended ${(100 * s.attended).toFixed(2)}%; screenshot ${SCREENSHOT}`);
    });
  });

  browserIt('falls back to the CPU backend with a visible note when WebGPU is missing (no cross-origin isolation needed)', async () => {
    await withDemoPage(server!.url, { webgpu: false }, async (page, errors) => {
      // served like any static host: not cross-origin isolated, so the page has no SharedArrayBuffer
      expect(await page.evaluate(() => [globalThis.crossOriginIsolated, typeof SharedArrayBuffer])).toEqual([false, 'undefined']);
      const s = await runDemo(page, { tokens: 512, blockSize: 32, topk: 2, kconv: 0 });
      expect(s.state, s.status).toBe('done');
      expect(errors).toEqual([]);
      expect(s.fallback).toMatch(/WebGPU is not available.*CPU backend/);
      expect(await page.isVisible('#fallback')).toBe(true);
      expect(s.backendLabel).toBe('CPU backend (1 thread, in the page)');
      expect(s.run?.backend).toBe('cpu');
      for (const phase of ['route', 'forward', 'backward']) expect(s.phases[phase], phase).toBeGreaterThan(0);
      expect(s.phases.kconv).toBeUndefined();
      expect(s.attended).toBeGreaterThan(0);
      expect(s.attended).toBeLessThanOrEqual(1);
      expect(s.run!.diagonalSelections).toBe(512 * 4);
    });
  });

  const checkDecode = (d: Awaited<ReturnType<typeof runDecodeMode>>, errors: string[], backend: string, prompt: number, steps: number): void => {
    expect(d.state?.state, `${d.status} ${d.state?.error ?? ''}`).toBe('done');
    expect(errors).toEqual([]);
    const st = d.state!;
    expect(st.backend).toBe(backend);
    expect(st.denseSkipped).toBeNull();
    expect(st.steps.map((s) => s.context)).toEqual(Array.from({ length: steps }, (_, i) => prompt + i + 1));
    for (const s of st.steps) { // a browser's clock is coarse (0.1 ms): a fast step may read 0
      expect(Number.isFinite(s.ms) && s.ms >= 0, `step ms ${s.ms}`).toBe(true);
      expect(Number.isFinite(s.denseMs) && s.denseMs! >= 0, `dense ms ${s.denseMs}`).toBe(true);
    }
    expect(d.status).toMatch(/median [\d.]+ ms\/step, [\d.]+ tokens\/s, dense [\d.]+ ms\/step, dense\/MoBA [\d.]+×/);
    expect(d.pixels.moba, 'MoBA line pixels').toBeGreaterThan(50);
    expect(d.pixels.dense, 'dense line pixels').toBeGreaterThan(50);
  };

  browserIt('decode mode: MoBA and dense step latency on the KV cache, plotted live (WebGPU)', async () => {
    await withDemoPage(server!.url, {}, async (page, errors) => {
      const d = await runDecodeMode(page, { prompt: 1024, steps: 16, blockSize: 64, topk: 3 });
      checkDecode(d, errors, 'webgpu', 1024, 16);
      console.log(`decode on webgpu: ${d.status}`);
    });
  });

  browserIt('decode mode on the CPU fallback', async () => {
    await withDemoPage(server!.url, { webgpu: false }, async (page, errors) => {
      checkDecode(await runDecodeMode(page, { prompt: 512, steps: 8, blockSize: 32, topk: 2 }), errors, 'cpu', 512, 8);
    });
  });
});
