/**
 * `moba-conformance --backend cpu|webgpu|cuda|reference|<module> [--cases DIR] [--seed N] [--num-runs N] [--only S] [--json]`:
 * runs the conformance suite (or, with --cases, only that folder's golden cases) and ends with the line
 * `N passed, M failed` (`, K skipped` when K > 0). Exit code 0 when everything that ran passed, 1 on a failure
 * or when nothing ran (every selected property skipped), 2 on a bad command line — one line on stderr — which
 * includes a `--cases` path that does not exist and an `--only` / `--cases` that selects nothing. The flags are
 * parsed by args.ts, the one command-line layer of every moba CLI.
 */
import { createRequire } from 'node:module';
import { isAbsolute, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import type { Backend } from '@moba/core';
import { type FlagSpecs, type ParseResult, UsageError, checkInputPath, flagHelp, parseFlags, reportError } from './args.js';
import { listGoldenCases } from './golden.js';
import { selectProperties } from './properties/index.js';
import { createReferenceBackend } from './reference-backend.js';
import { DEFAULT_NUM_RUNS, DEFAULT_SEED, MAX_NUM_RUNS, SEED_RANGE, runConformance, summaryLine } from './run.js';
import type { PropertyResult, Report } from './types.js';

const PACKAGES: Record<string, string> = { cpu: '@moba/backend-cpu', webgpu: '@moba/backend-webgpu', cuda: '@moba/backend-cuda' };

const FLAGS = {
  backend: { type: 'string', meta: 'NAME|MODULE', help: 'cpu, webgpu, cuda, reference, or a module exporting createBackend(opts?) (and optionally isAvailable())' },
  cases: { type: 'string', meta: 'DIR', help: 'run only the golden cases (golden-format.md) of DIR (or one file), one result per file' },
  seed: { type: 'int', min: SEED_RANGE[0], max: SEED_RANGE[1], help: `fast-check seed (default ${DEFAULT_SEED}; also MOBA_SEED)` },
  'num-runs': { type: 'int', min: 1, max: MAX_NUM_RUNS, help: `runs per randomized property, at most ${MAX_NUM_RUNS} (default ${DEFAULT_NUM_RUNS}; also MOBA_NUM_RUNS)` },
  only: { type: 'list', meta: 'TEXT', help: 'run only the properties whose "group: name" contains TEXT (comma list)' },
  json: { type: 'bool', help: 'print the Report as JSON on stdout (the summary line goes to stderr)' },
} as const satisfies FlagSpecs;

const USAGE = `usage: moba-conformance --backend cpu|webgpu|cuda|reference|<module path or package> [flags]

Runs the MoBA conformance suite (or, with --cases, only those golden cases) on a backend and ends with
the line 'N passed, M failed'. Exit code 0 when every property that ran passed, 1 on a failure or when
nothing ran, 2 on a bad command line (also when --only or --cases select nothing).

flags:
${flagHelp(FLAGS)}
`;

const VERSION = (createRequire(import.meta.url)('../package.json') as { version: string }).version;

interface BackendModule {
  createBackend?: (opts?: unknown) => Backend | Promise<Backend>;
  isAvailable?: () => unknown;
  [key: string]: unknown;
}

/** Imports a backend module: a plain dynamic import first, then resolved from the current directory. */
async function importBackend(spec: string): Promise<BackendModule> {
  const target = PACKAGES[spec] ?? spec;
  const isPath = target.startsWith('.') || isAbsolute(target);
  if (isPath) return (await import(pathToFileURL(resolve(target)).href)) as BackendModule;
  try {
    return (await import(target)) as BackendModule;
  } catch (first) {
    let file: string;
    try {
      file = createRequire(resolve(process.cwd()) + '/').resolve(target);
    } catch {
      throw new Error(`cannot load backend module ${target}: ${(first as Error).message}`);
    }
    return (await import(pathToFileURL(file).href)) as BackendModule;
  }
}

/** The module's `createBackend`, or its single `create…Backend` export. */
function factoryOf(mod: BackendModule, spec: string): () => Promise<Backend> {
  let f = mod.createBackend;
  if (typeof f !== 'function') {
    const named = Object.keys(mod).filter((k) => /^create\w*Backend$/.test(k) && typeof mod[k] === 'function');
    if (named.length !== 1) throw new Error(`backend module ${spec} must export createBackend(opts?)${named.length > 1 ? ` (found ${named.join(', ')})` : ''}`);
    f = mod[named[0]!] as BackendModule['createBackend'];
  }
  const create = f!;
  return async () => create();
}

function line(r: PropertyResult): string {
  const head = `${r.skipped ? '-' : r.ok ? '✓' : '✗'} ${r.group}: ${r.name} (${r.ms} ms)`;
  if (r.skipped) return `${head} skipped: ${r.message}`;
  return r.ok ? head : `${head}\n    ${(r.message ?? '').split('\n').join('\n    ')}`;
}

/** Parses and checks the command line, and that it selects something to run (throws UsageError). */
function parseArgs(argv: readonly string[]): ParseResult<typeof FLAGS> {
  const parsed = parseFlags(argv, FLAGS);
  if (parsed.help || parsed.version) return parsed;
  const f = parsed.flags;
  if (!f.backend) throw new UsageError('--backend is required');
  if (f.cases !== undefined) {
    checkInputPath('cases', f.cases);
    if (listGoldenCases(f.cases).length === 0) throw new UsageError(`nothing to run: --cases ${f.cases} holds no golden case (*.json)`);
  }
  const selected = selectProperties({ casesDirs: f.cases !== undefined ? [f.cases] : [], goldenOnly: f.cases !== undefined, only: f.only ?? [] });
  if (selected.length === 0) throw new UsageError(`nothing to run: no property matches --only '${(f.only ?? []).join(',')}'${f.cases !== undefined ? ` among the cases of ${f.cases}` : ''}`);
  return parsed;
}

async function main(argv: readonly string[]): Promise<number> {
  const parsed = parseArgs(argv);
  if (parsed.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  if (parsed.version) {
    process.stdout.write(`moba-conformance ${VERSION}\n`);
    return 0;
  }
  const f = parsed.flags;
  const args = { backend: f.backend!, cases: f.cases, seed: f.seed, numRuns: f['num-runs'], only: f.only, json: f.json };
  let factory: () => Promise<Backend>;
  if (args.backend === 'reference') {
    factory = async () => createReferenceBackend();
  } else {
    const mod = await importBackend(args.backend);
    factory = factoryOf(mod, args.backend);
    if (typeof mod.isAvailable === 'function' && !(await mod.isAvailable())) {
      console.error(`error: backend ${args.backend} is not available on this machine (isAvailable() is false)`);
      console.log(summaryLine({ passed: 0, failed: 1, skipped: 0 }));
      return 1;
    }
  }
  const backend = await factory();
  let report: Report;
  try {
    report = await runConformance(backend, {
      ...(args.seed !== undefined ? { seed: args.seed } : {}),
      ...(args.numRuns !== undefined ? { numRuns: args.numRuns } : {}),
      ...(args.only ? { only: args.only } : {}),
      ...(args.cases !== undefined ? { casesDir: args.cases, goldenOnly: true } : {}),
      factory,
      ...(args.json ? {} : { onResult: (r: PropertyResult) => console.log(line(r)) }),
    });
  } finally {
    await backend.destroy();
  }
  if (args.json) {
    console.log(JSON.stringify(report, null, 2));
    console.error(summaryLine(report));
  } else {
    if (report.notCovered.length > 0) console.log(`not covered on ${report.backend}: ${report.notCovered.join('; ')}`);
    console.log(`backend ${report.backend}, seed ${report.seed}, ${(report.durationMs / 1000).toFixed(1)} s`);
    console.log(summaryLine(report));
  }
  if (report.passed + report.failed === 0) {
    console.error(`error: nothing ran: all ${report.skipped} selected properties were skipped on ${report.backend}`);
    return 1;
  }
  return report.failed > 0 ? 1 : 0;
}

// Exit explicitly: a backend's worker threads or device handles must not keep the process alive.
main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (e: unknown) => process.exit(reportError(e, 'moba-conformance --help', process.stderr)),
);
