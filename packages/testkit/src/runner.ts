/**
 * The runner loop, free of Node APIs and environment variables (shared by the Node entry `run.ts` and the
 * browser entry): runs a list of properties on a backend with settled settings and returns a Report.
 */
import type { Backend } from '@moba/core';
import { type ConformanceOptions, type Property, type PropertyContext, type PropertyResult, type Report, Skip } from './types.js';

/** The fixed default seed: every run is reproducible unless `MOBA_SEED` or `opts.seed` says otherwise. */
export const DEFAULT_SEED = 20_260_101;
/** Default runs per randomized property (small shapes; raise with `MOBA_NUM_RUNS`). */
export const DEFAULT_NUM_RUNS = 12;
/**
 * The most runs per randomized property: 12 (the default) take about 5 s for the whole suite on the CPU
 * backend, so 10 000 already take over an hour; more is a typo, rejected rather than left to run for days.
 */
export const MAX_NUM_RUNS = 10_000;

/** `numRuns` as given, or a RangeError naming `what` unless it is an integer in [1, MAX_NUM_RUNS] (never clamped). */
export function checkNumRuns(what: string, n: number): number {
  if (!Number.isSafeInteger(n) || n < 1 || n > MAX_NUM_RUNS) throw new RangeError(`${what} = ${n} is invalid: must be an integer in [1, ${MAX_NUM_RUNS}]`);
  return n;
}

/** The settings a property context needs. */
export interface RunSettings {
  readonly seed: number;
  readonly path: string | undefined;
  readonly numRuns: number;
}

/** The context properties run in. `notCovered` collects into `sink`. */
export function propertyContext(backend: Backend, s: RunSettings, factory: ConformanceOptions['factory'], sink: Set<string>): PropertyContext {
  return { backend, seed: s.seed, path: s.path, numRuns: s.numRuns, factory, notCovered: (what) => sink.add(what) };
}

/** Runs one property and turns its outcome into a result (a thrown `Skip` is a skip, anything else a failure). */
export async function runProperty(p: Property, ctx: PropertyContext): Promise<PropertyResult> {
  const t0 = performance.now();
  const base = { name: p.name, group: p.group };
  try {
    await p.run(ctx);
    return { ...base, ok: true, ms: Math.round(performance.now() - t0) };
  } catch (e) {
    const ms = Math.round(performance.now() - t0);
    if (e instanceof Skip) return { ...base, ok: true, skipped: true, message: e.message, ms };
    const msg = e instanceof Error ? e.message : String(e);
    const replay = `replay: MOBA_SEED=${ctx.seed} MOBA_ONLY="${p.group}: ${p.name.slice(0, 40)}"${ctx.path ? ` MOBA_PATH=${ctx.path}` : ''}`;
    return { ...base, ok: false, message: `${msg}\n(seed ${ctx.seed}; ${replay})`, ms };
  }
}

/** What a backend's caps exclude from the catalogue, known before anything runs. */
export function capsNotCovered(backend: Backend): string[] {
  const caps = backend.caps;
  const out: string[] = [];
  for (const d of ['f32', 'f16', 'bf16'] as const) if (!caps.dtypes.includes(d)) out.push(`dtype ${d} (not in caps)`);
  if (caps.headDims) out.push(`head dims other than ${caps.headDims.join(', ')} (not in caps)`);
  if (!caps.nonCausal) out.push('non-causal routing (caps.nonCausal is false)');
  if (!caps.kconv) out.push('kconv (not in caps)');
  if (!caps.deterministic) out.push('determinism (caps.deterministic is false)');
  if (!caps.kvCache) out.push('KV cache (caps.kvCache is false)');
  return out;
}

/**
 * Runs `properties` in order on `backend` and returns a Report (durations from `t0`). Never throws for a
 * failing property; the backend is not destroyed.
 */
export async function runProperties(
  backend: Backend,
  properties: readonly Property[],
  s: RunSettings,
  opts: Pick<ConformanceOptions, 'factory' | 'onResult'>,
  t0: number = performance.now(),
): Promise<Report> {
  const notCovered = new Set<string>(capsNotCovered(backend));
  const ctx = propertyContext(backend, s, opts.factory, notCovered);
  const results: PropertyResult[] = [];
  for (const p of properties) {
    const r = await runProperty(p, ctx);
    results.push(r);
    opts.onResult?.(r);
  }
  const skipped = results.filter((r) => r.skipped).length;
  const failed = results.filter((r) => !r.ok).length;
  return {
    backend: backend.name,
    seed: s.seed,
    passed: results.length - failed - skipped,
    failed,
    skipped,
    results,
    notCovered: [...notCovered],
    durationMs: Math.round(performance.now() - t0),
  };
}

/** The summary line every entry point ends with: `N passed, M failed` (`, K skipped` when K > 0). */
export function summaryLine(r: Pick<Report, 'passed' | 'failed' | 'skipped'>): string {
  return `${r.passed} passed, ${r.failed} failed${r.skipped > 0 ? `, ${r.skipped} skipped` : ''}`;
}
