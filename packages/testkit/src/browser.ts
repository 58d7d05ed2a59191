/**
 * @moba/testkit/browser: the conformance suite for pages and web workers (no Node APIs, no environment
 * variables). `runConformance(backend, { cases })` runs the same property catalogue as the Node entry;
 * golden cases are passed in as parsed JSON objects (golden-format.md) instead of being read from a folder.
 *
 * Everything here comes from the Node-free modules the Node entry is built on: the runner loop
 * (`runner.ts`), the catalogue (`properties/core.ts`), the golden parser (`golden-parse.ts`) and the
 * golden property (`properties/golden-case.ts`). Nothing imported here may touch `node:` modules.
 */
import type { Backend } from '@moba/core';
import { type GoldenCase, parseGoldenCase as parseCase } from './golden-parse.js';
import { coreProperties, selectOnly } from './properties/core.js';
import { goldenCaseProperty as caseProperty } from './properties/golden-case.js';
import { DEFAULT_NUM_RUNS, DEFAULT_SEED, checkNumRuns, runProperties } from './runner.js';
import type { ConformanceOptions, Property, Report } from './types.js';

export { type ConformanceOptions, type Property, type PropertyContext, type PropertyResult, type Report, Skip } from './types.js';
export type { GoldenCase, GoldenExpected } from './golden-parse.js';
export { coreProperties } from './properties/core.js';
// The same defaults as the Node entry (`run.ts`), so a seed printed there replays here.
export { DEFAULT_NUM_RUNS, DEFAULT_SEED, MAX_NUM_RUNS, runProperty, summaryLine } from './runner.js';

/** A golden case as parsed JSON (the object `JSON.parse` gives for a golden-format.md file), with a name for reports. */
export interface GoldenSource {
  readonly name: string;
  readonly json: unknown;
}

/** Options of the browser `runConformance`: the Node options minus files and environment, plus parsed golden cases. */
export interface BrowserConformanceOptions extends Omit<ConformanceOptions, 'casesDir'> {
  /** Golden cases, parsed: run after the catalogue (or alone with `goldenOnly`). */
  cases?: readonly GoldenSource[];
}

/**
 * Runs the conformance suite on `backend` in a browser and returns a Report. Never throws for a failing
 * property; the backend is not destroyed (pass `opts.factory` to cover "use after destroy").
 */
export async function runConformance(backend: Backend, opts: BrowserConformanceOptions = {}): Promise<Report> {
  const t0 = performance.now();
  const settings = { seed: opts.seed ?? DEFAULT_SEED, path: opts.path, numRuns: checkNumRuns('numRuns', opts.numRuns ?? DEFAULT_NUM_RUNS) };
  const golden = (opts.cases ?? []).map((c) => goldenCaseProperty(c));
  const all = opts.goldenOnly ? golden : [...coreProperties, ...golden];
  return runProperties(backend, selectOnly(all, opts.only), settings, opts, t0);
}

/** The golden property of one parsed case, named like the Node entry's (the file name). */
export function goldenCaseProperty(src: GoldenSource): Property {
  return caseProperty(src.name, () => parseGoldenCase(src.json, src.name));
}

/** Parses one golden case from its JSON object; `name` stands in for the file name in messages. */
export function parseGoldenCase(json: unknown, name: string): GoldenCase {
  return parseCase(json, name);
}
