/**
 * `runConformance(backend, opts) → Report`: runs the property catalogue without any test runner (GPU
 * machines, the CLI). Settings come from `opts`, then the environment (`MOBA_SEED`, `MOBA_PATH`,
 * `MOBA_NUM_RUNS`, `MOBA_ONLY`), then fixed defaults, so a failure printed anywhere replays anywhere.
 * The loop itself is `runner.ts` (no Node APIs); only the settings here read the environment.
 */
import type { Backend } from '@moba/core';
import { selectProperties } from './properties/index.js';
import { DEFAULT_NUM_RUNS, DEFAULT_SEED, type RunSettings, checkNumRuns, runProperties } from './runner.js';
import type { ConformanceOptions, Report } from './types.js';

export { DEFAULT_NUM_RUNS, DEFAULT_SEED, MAX_NUM_RUNS, type RunSettings, capsNotCovered, propertyContext, runProperty, summaryLine } from './runner.js';

/** The seeds fast-check prints and the CLI takes: 32-bit signed integers. */
export const SEED_RANGE = [-(2 ** 31), 2 ** 31 - 1] as const;

export interface ResolvedSettings extends RunSettings {
  readonly casesDirs: readonly string[];
  readonly only: readonly string[];
}

/** An environment variable (undefined where there is no `process`, as in a browser). */
function env(name: string): string | undefined {
  return typeof process === 'undefined' ? undefined : process.env[name];
}

function envInt(name: string): number | undefined {
  const v = env(name);
  if (v === undefined || v === '') return undefined;
  const n = Number(v);
  if (!Number.isInteger(n)) throw new Error(`${name} = ${v} is not an integer`);
  return n;
}

/** Options merged with the environment and defaults; a numRuns out of range throws a RangeError (never clamped). */
export function resolveSettings(opts: ConformanceOptions = {}): ResolvedSettings {
  const dirs = opts.casesDir === undefined ? [] : typeof opts.casesDir === 'string' ? [opts.casesDir] : [...opts.casesDir];
  const only = env('MOBA_ONLY');
  const envOnly = only ? only.split(',').map((s) => s.trim()) : [];
  return {
    seed: opts.seed ?? envInt('MOBA_SEED') ?? DEFAULT_SEED,
    path: opts.path ?? (env('MOBA_PATH') || undefined),
    numRuns: checkNumRuns(opts.numRuns !== undefined ? 'numRuns' : 'MOBA_NUM_RUNS', opts.numRuns ?? envInt('MOBA_NUM_RUNS') ?? DEFAULT_NUM_RUNS),
    casesDirs: dirs,
    only: opts.only ?? envOnly,
  };
}

/**
 * Runs the conformance suite on `backend` and returns a Report. Never throws for a failing property;
 * the backend is not destroyed (pass `opts.factory` to cover "use after destroy" on a throwaway one).
 */
export async function runConformance(backend: Backend, opts: ConformanceOptions = {}): Promise<Report> {
  const t0 = performance.now();
  const s = resolveSettings(opts);
  const properties = selectProperties({ casesDirs: s.casesDirs, goldenOnly: opts.goldenOnly ?? false, only: s.only });
  return runProperties(backend, properties, s, opts, t0);
}
