/// <reference lib="dom" />
/**
 * The page of the Chromium conformance test: `window.mobaConformance(cases)` opens the WebGPU backend on
 * `navigator.gpu`, runs the whole conformance suite plus the given golden cases (parsed JSON) and returns the
 * adapter it ran on and the Report. Bundled by `browser.test.ts` with esbuild.
 */
import { type GoldenSource, type Report, runConformance } from '@moba/testkit/browser';
import { createWebGpuBackend } from '../../src/index.js';

export interface AdapterSummary {
  readonly vendor: string;
  readonly architecture: string;
  readonly description: string;
  readonly features: string[];
  readonly maxStorageBufferBindingSize: number;
}

export interface PageResult {
  readonly adapter: AdapterSummary | null;
  readonly report: Report | null;
  readonly error: string | null;
}

async function adapterSummary(): Promise<AdapterSummary | null> {
  const adapter = await navigator.gpu?.requestAdapter();
  if (!adapter) return null;
  const info = adapter.info;
  return {
    vendor: info.vendor, architecture: info.architecture, description: info.description,
    features: [...adapter.features].sort(), maxStorageBufferBindingSize: adapter.limits.maxStorageBufferBindingSize,
  };
}

async function mobaConformance(cases: GoldenSource[]): Promise<PageResult> {
  const adapter = await adapterSummary();
  if (!adapter) return { adapter, report: null, error: 'navigator.gpu gave no adapter' };
  try {
    const backend = await createWebGpuBackend();
    try {
      const report = await runConformance(backend, { cases, factory: () => createWebGpuBackend() });
      return { adapter, report, error: null };
    } finally {
      await backend.destroy();
    }
  } catch (e) {
    return { adapter, report: null, error: e instanceof Error ? `${e.name}: ${e.message}` : String(e) };
  }
}

(globalThis as unknown as { mobaConformance: typeof mobaConformance }).mobaConformance = mobaConformance;
document.title = 'moba conformance: ready';
