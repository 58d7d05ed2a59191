/**
 * `moba-conformance --backend cpu|webgpu|cuda|reference|<module> [--cases DIR] [--seed N] [--num-runs N] [--only S] [--json]`:
 * runs the conformance suite (or, with --cases, only that folder's golden cases) and ends with the line
 * `N passed, M failed` (`, K skipped` when K > 0); the exit code is 1 on any failure, 2 on bad usage.
 */
import { createRequire } from 'node:module';
import { isAbsolute, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import type { Backend } from '@moba/core';
import { createReferenceBackend } from './reference-backend.js';
import { runConformance, summaryLine } from './run.js';
import type { PropertyResult, Report } from './types.js';

const PACKAGES: Record<string, string> = { cpu: '@moba/backend-cpu', webgpu: '@moba/backend-webgpu', cuda: '@moba/backend-cuda' };

const USAGE = `usage: moba-conformance --backend cpu|webgpu|cuda|reference|<module path or package> [--cases DIR] [--seed N] [--num-runs N] [--only TEXT] [--json]
  --backend   a built-in name, or a module exporting createBackend(opts?) (sync or async) and optionally isAvailable()
  --cases     run only the golden cases (golden-format.md) of DIR, one result per file
  --seed      fast-check seed (default fixed; also MOBA_SEED)
  --num-runs  runs per randomized property (also MOBA_NUM_RUNS)
  --only      run only properties whose "group: name" contains TEXT (comma list)
  --json      print the Report as JSON on stdout (the summary line goes to stderr)`;

interface Args {
  backend: string;
  cases?: string;
  seed?: number;
  numRuns?: number;
  only?: string[];
  json: boolean;
}

class UsageError extends Error {}

function parseArgs(argv: readonly string[]): Args {
  const out: Partial<Args> & { json: boolean } = { json: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const [flag, inline] = a.startsWith('--') && a.includes('=') ? [a.slice(0, a.indexOf('=')), a.slice(a.indexOf('=') + 1)] : [a, undefined];
    const value = (): string => {
      const v = inline ?? argv[++i];
      if (v === undefined) throw new UsageError(`${flag} needs a value`);
      return v;
    };
    const integer = (): number => {
      const v = value();
      if (!/^-?\d+$/.test(v)) throw new UsageError(`${flag} = ${v} is not an integer`);
      return Number(v);
    };
    if (flag === '--backend') out.backend = value();
    else if (flag === '--cases') out.cases = value();
    else if (flag === '--seed') out.seed = integer();
    else if (flag === '--num-runs') out.numRuns = integer();
    else if (flag === '--only') out.only = value().split(',');
    else if (flag === '--json') out.json = true;
    else if (flag === '--help' || flag === '-h') throw new UsageError('');
    else throw new UsageError(`unknown argument ${a}`);
  }
  if (!out.backend) throw new UsageError('--backend is required');
  return out as Args;
}

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

async function main(argv: readonly string[]): Promise<number> {
  let args: Args;
  try {
    args = parseArgs(argv);
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    if (e.message) console.error(`moba-conformance: ${e.message}`);
    console.error(USAGE);
    return 2;
  }
  let factory: () => Promise<Backend>;
  if (args.backend === 'reference') {
    factory = async () => createReferenceBackend();
  } else {
    const mod = await importBackend(args.backend);
    factory = factoryOf(mod, args.backend);
    if (typeof mod.isAvailable === 'function' && !(await mod.isAvailable())) {
      console.error(`moba-conformance: backend ${args.backend} is not available on this machine (isAvailable() is false)`);
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
  return report.failed > 0 ? 1 : 0;
}

// Exit explicitly: a backend's worker threads or device handles must not keep the process alive.
main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (e: unknown) => {
    console.error(`moba-conformance: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
    process.exit(1);
  },
);
