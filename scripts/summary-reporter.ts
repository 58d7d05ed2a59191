/**
 * A vitest reporter that ends the run with the plain line `N passed, M failed` (`, K skipped` when any),
 * the closing line CI reads. Counts individual tests; a file that fails to load counts as one failure.
 * Before it, every distinct skip reason is printed once, with the suites it skipped and how to get the
 * missing device: `skipped: 62 tests (webgpu, webgpu sync) — no WebGPU adapter … (run scripts/setup-webgpu.sh)`.
 * (A device-gated suite skips with `t.skip(reason)`; `MOBA_REQUIRE` turns such a skip into a failure there.)
 */
import type { Reporter, TestModule } from 'vitest/node';

/** The parts of a vitest test this reporter reads (structural, so tests can pass plain objects). */
export interface TestLike {
  readonly name: string;
  readonly parent: { readonly type: string; readonly name?: string; readonly parent?: TestLike['parent'] };
  result(): { readonly state: string; readonly note?: string | undefined };
}

/** The parts of a vitest test module this reporter reads. */
export interface ModuleLike {
  readonly relativeModuleId?: string;
  readonly moduleId: string;
  readonly children: { allTests(): Iterable<TestLike> };
  state(): string;
}

/** How to get what a skip reason says is missing (appended unless the reason already says it). */
const HINTS: readonly [RegExp, RegExp, string][] = [
  [/chromium/i, /setup-chromium/, 'run scripts/setup-chromium.sh'],
  [/webgpu|adapter|dawn|navigator\.gpu/i, /setup-webgpu/, 'run scripts/setup-webgpu.sh'],
  [/cuda|nvrtc|nvidia/i, /nvidia/i, 'needs an NVIDIA GPU, its driver and NVRTC'],
  [/python|torch/i, /install/i, 'install python3 (and torch for the GPU bench)'],
];

function withHint(reason: string): string {
  const hint = HINTS.find(([when, has]) => when.test(reason) && !has.test(reason));
  return hint ? `${reason} (${hint[2]})` : reason;
}

/** The outermost describe of a test (its file name when it has none). */
function suiteOf(t: TestLike, file: string): string {
  let p: TestLike['parent'] | undefined = t.parent;
  let name: string | undefined;
  while (p && p.type === 'suite') {
    name = p.name;
    p = p.parent;
  }
  return name ?? file;
}

/** The closing lines: one per distinct skip reason, then `N passed, M failed[, K skipped]`. */
export function summaryLines(modules: ReadonlyArray<ModuleLike>, errors: number): string[] {
  let passed = 0;
  let failed = errors;
  let skipped = 0;
  const reasons = new Map<string, { count: number; suites: Set<string> }>();
  for (const m of modules) {
    let tests = 0;
    const file = m.relativeModuleId ?? m.moduleId;
    for (const t of m.children.allTests()) {
      tests++;
      const r = t.result();
      if (r.state === 'passed') passed++;
      else if (r.state === 'failed') failed++;
      else {
        skipped++;
        const why = withHint(r.note?.trim() || `no reason given (${file})`);
        const entry = reasons.get(why) ?? { count: 0, suites: new Set<string>() };
        entry.count++;
        entry.suites.add(suiteOf(t, file));
        reasons.set(why, entry);
      }
    }
    if (tests === 0 && m.state() === 'failed') failed++;
  }
  const lines = [...reasons].map(([why, e]) => `skipped: ${e.count} test${e.count === 1 ? '' : 's'} (${[...e.suites].join(', ')}) — ${why}`);
  return [...lines, `${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ''}`];
}

export default class SummaryReporter implements Reporter {
  onTestRunEnd(modules: ReadonlyArray<TestModule>, errors: ReadonlyArray<unknown>): void {
    process.stdout.write(`\n${summaryLines(modules as unknown as ReadonlyArray<ModuleLike>, errors.length).join('\n')}\n`);
  }
}
