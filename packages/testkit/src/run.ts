/**
 * `runConformance(backend, opts) → Report`: runs the property catalogue without any test runner (GPU
 * machines, the CLI). Settings come from `opts`, then the environment (`MOBA_SEED`, `MOBA_PATH`,
 * `MOBA_NUM_RUNS`, `MOBA_ONLY`), then fixed defaults, so a failure printed anywhere replays anywhere.
 */
import type { Backend } from '@moba/core';
import { selectProperties } from './properties/index.js';
import { type ConformanceOptions, type Property, type PropertyContext, type PropertyResult, type Report, Skip } from './types.js';

/** The fixed default seed: every run is reproducible unless `MOBA_SEED` or `opts.seed` says otherwise. */
export const DEFAULT_SEED = 20_260_101;
/** Default runs per randomized property (small shapes; raise with `MOBA_NUM_RUNS`). */
export const DEFAULT_NUM_RUNS = 12;

export interface ResolvedSettings {
  readonly seed: number;
  readonly path: string | undefined;
  readonly numRuns: number;
  readonly casesDirs: readonly string[];
  readonly only: readonly string[];
}

function envInt(name: string): number | undefined {
  const v = process.env[name];
  if (v === undefined || v === '') return undefined;
  const n = Number(v);
  if (!Number.isInteger(n)) throw new Error(`${name} = ${v} is not an integer`);
  return n;
}

/** Options merged with the environment and defaults. */
export function resolveSettings(opts: ConformanceOptions = {}): ResolvedSettings {
  const dirs = opts.casesDir === undefined ? [] : typeof opts.casesDir === 'string' ? [opts.casesDir] : [...opts.casesDir];
  const envOnly = process.env.MOBA_ONLY ? process.env.MOBA_ONLY.split(',').map((s) => s.trim()) : [];
  return {
    seed: opts.seed ?? envInt('MOBA_SEED') ?? DEFAULT_SEED,
    path: opts.path ?? (process.env.MOBA_PATH || undefined),
    numRuns: Math.max(1, opts.numRuns ?? envInt('MOBA_NUM_RUNS') ?? DEFAULT_NUM_RUNS),
    casesDirs: dirs,
    only: opts.only ?? envOnly,
  };
}

/** The context properties run in. `notCovered` collects into `sink`. */
export function propertyContext(backend: Backend, s: ResolvedSettings, factory: ConformanceOptions['factory'], sink: Set<string>): PropertyContext {
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
  return out;
}

/**
 * Runs the conformance suite on `backend` and returns a Report. Never throws for a failing property;
 * the backend is not destroyed (pass `opts.factory` to cover "use after destroy" on a throwaway one).
 */
export async function runConformance(backend: Backend, opts: ConformanceOptions = {}): Promise<Report> {
  const t0 = performance.now();
  const s = resolveSettings(opts);
  const notCovered = new Set<string>(capsNotCovered(backend));
  const ctx = propertyContext(backend, s, opts.factory, notCovered);
  const results: PropertyResult[] = [];
  for (const p of selectProperties({ casesDirs: s.casesDirs, goldenOnly: opts.goldenOnly ?? false, only: s.only })) {
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
