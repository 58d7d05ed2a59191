/// <reference lib="dom" />
/**
 * The page of the CPU backend's browser test (browser.test.ts): `@moba/backend-cpu` bundled for the browser
 * with no Node built-ins, run in a page that is not cross-origin isolated (no SharedArrayBuffer).
 * `mobaCpu(cases)` reports the environment, the thread counts the backend settles on, the fixed problem's
 * bits (problem.ts) and the conformance Report of `@moba/testkit/browser`.
 */
import { type GoldenSource, type Report, runConformance } from '@moba/testkit/browser';
import { createCpuBackend } from '../../src/index.js';
import { type Bits, runProblem } from './problem.js';

export interface CpuPageResult {
  readonly crossOriginIsolated: boolean;
  readonly sharedArrayBuffer: string;
  /** `backend.threads` for the default options and for `threads: 4`. */
  readonly threads: { readonly byDefault: number; readonly four: number };
  readonly memoryBytes: number;
  readonly bits: Bits | null;
  readonly report: Report | null;
  readonly error: string | null;
}

async function mobaCpu(cases: GoldenSource[]): Promise<CpuPageResult> {
  const env = { crossOriginIsolated: globalThis.crossOriginIsolated, sharedArrayBuffer: typeof SharedArrayBuffer };
  const b = createCpuBackend();
  const four = createCpuBackend({ threads: 4, minParallelWork: 0 });
  const base = { ...env, threads: { byDefault: b.threads, four: four.threads }, memoryBytes: b.caps.memoryBytes };
  try {
    const bits = await runProblem(four);
    const report = await runConformance(b, { cases, factory: () => createCpuBackend() });
    return { ...base, bits, report, error: null };
  } catch (e) {
    return { ...base, bits: null, report: null, error: e instanceof Error ? `${e.name}: ${e.message}\n${e.stack ?? ''}` : String(e) };
  } finally {
    await b.destroy();
    await four.destroy();
  }
}

(globalThis as unknown as { mobaCpu: typeof mobaCpu }).mobaCpu = mobaCpu;
document.title = 'moba cpu: ready';
