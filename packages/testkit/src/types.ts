/**
 * Types shared by the conformance runner, its vitest adapter and the CLI: a property is data
 * (`{ name, group, run(ctx) }`), and a run produces a `Report` (one result per property).
 */
import type { Backend } from '@moba/core';

/** Options of `runConformance` / `describeConformance`. Every field has an environment override. */
export interface ConformanceOptions {
  /** fast-check seed (default fixed; env `MOBA_SEED`). */
  seed?: number;
  /** fast-check replay path of one failure (env `MOBA_PATH`); use it together with `only`. */
  path?: string;
  /** Runs per randomized property (default 12; env `MOBA_NUM_RUNS`). */
  numRuns?: number;
  /** Extra folders of golden cases (golden-format.md) run besides the package's `cases/`. */
  casesDir?: string | readonly string[];
  /** Run only the golden cases (of `casesDir` when given, else of the package's `cases/`). */
  goldenOnly?: boolean;
  /** Run only the properties whose `group: name` contains one of these strings (env `MOBA_ONLY`, comma list). */
  only?: readonly string[];
  /** Creates a fresh backend: enables "use after destroy" without destroying the backend under test. */
  factory?: () => Backend | Promise<Backend>;
  /** Called after each property (progress output). */
  onResult?: (r: PropertyResult) => void;
}

/** Everything a property needs; built once per run. */
export interface PropertyContext {
  readonly backend: Backend;
  readonly seed: number;
  readonly path: string | undefined;
  readonly numRuns: number;
  readonly factory: (() => Backend | Promise<Backend>) | undefined;
  /** Records a part of the catalogue this backend does not cover (it appears in `Report.notCovered`). */
  notCovered(what: string): void;
}

/** One entry of the catalogue. `run` throws on failure and throws `Skip` to skip. */
export interface Property {
  readonly name: string;
  /** The op or area: routing, forward, backward, reach, oracles, kconv, moba, hostile, determinism, validation, golden. */
  readonly group: string;
  run(ctx: PropertyContext): Promise<void>;
}

/** Thrown by a property that cannot run on this backend (the reason is in the report). */
export class Skip extends Error {
  override readonly name = 'Skip';
}

export interface PropertyResult {
  readonly name: string;
  readonly group: string;
  readonly ok: boolean;
  readonly skipped?: boolean;
  readonly message?: string;
  readonly ms: number;
}

export interface Report {
  readonly backend: string;
  readonly seed: number;
  readonly passed: number;
  readonly failed: number;
  readonly skipped: number;
  readonly results: PropertyResult[];
  /** What the backend's caps exclude, e.g. "dtype bf16 (not in caps)". */
  readonly notCovered: string[];
  readonly durationMs: number;
}
