/**
 * The one command-line layer of every moba CLI (`moba`, `moba-conformance`, `pnpm bench`, `pnpm demo:web`):
 * flags declared once with their help text (`--name value`, `--name=value`, switches, bounded integers,
 * numbers, enums, comma lists), `--help`/`-h` and `--version` recognised everywhere, output and input paths
 * checked before any work, and one error rule: a bad command line throws `UsageError`, which `reportError`
 * prints as ONE line on stderr (`error: … (see 'moba demo --help')`) with exit code 2; any other error is
 * `error: <message>` with exit code 1 (the stack only with MOBA_DEBUG=1). Node-only (paths use node:fs).
 */
import { accessSync, constants, statSync } from 'node:fs';
import { dirname, resolve } from 'node:path';

/** A command-line mistake: unknown flag, missing or invalid value, bad combination, unusable path. Exit code 2. */
export class UsageError extends Error {
  override readonly name = 'UsageError';
}

interface FlagBase {
  /** Help text (one line). */
  readonly help: string;
  /** Value name shown in help, e.g. `N` or `PATH`. */
  readonly meta?: string;
}

/**
 * One declared flag. Integers accept `8K` / `1M` suffixes (×1024, ×1024²) and `_` separators; they must lie
 * in `[min, max]` (declare a `max`: an absurd value is then a usage error, not a run that never ends).
 */
export type FlagSpec =
  | (FlagBase & { readonly type: 'int'; readonly min?: number; readonly max?: number; readonly default?: number })
  | (FlagBase & { readonly type: 'ints'; readonly min?: number; readonly max?: number; readonly default?: readonly number[] })
  | (FlagBase & { readonly type: 'number'; readonly above?: number; readonly max?: number; readonly default?: number })
  | (FlagBase & { readonly type: 'string'; readonly default?: string })
  | (FlagBase & { readonly type: 'list'; readonly default?: readonly string[] })
  | (FlagBase & { readonly type: 'enum'; readonly values: readonly string[]; readonly default?: string })
  | (FlagBase & { readonly type: 'bool' });

/** Flag name (without `--`) → spec. */
export type FlagSpecs = Record<string, FlagSpec>;

type ValueOf<S extends FlagSpec> = S extends { type: 'int' | 'number' } ? number : S extends { type: 'ints' } ? number[]
  : S extends { type: 'list' } ? string[] : S extends { type: 'bool' } ? boolean : S extends { type: 'enum'; values: readonly (infer V)[] } ? V : string;

/** Parsed flags: declared defaults filled in; flags without a default may be undefined (switches are false). */
export type Parsed<F extends FlagSpecs> = {
  [K in keyof F]: F[K] extends { type: 'bool' } ? boolean : F[K] extends { default: unknown } ? ValueOf<F[K]> : ValueOf<F[K]> | undefined;
};

/** What `parseFlags` found: the flags, whether `--help`/`-h` or `--version` was asked, which flags were given. */
export interface ParseResult<F extends FlagSpecs> {
  readonly flags: Parsed<F>;
  readonly help: boolean;
  readonly version: boolean;
  /** Names of the flags given on the command line (not defaulted). */
  readonly given: ReadonlySet<keyof F & string>;
}

/**
 * Parses `argv` against `specs`. A lone `--` is skipped (pnpm passes it through); positional arguments are
 * rejected. `--help` / `-h` or `--version` anywhere stops parsing and is reported (the caller prints and exits 0).
 */
export function parseFlags<F extends FlagSpecs>(argv: readonly string[], specs: F): ParseResult<F> {
  const out: Record<string, unknown> = {};
  const given = new Set<string>();
  for (const [name, spec] of Object.entries(specs)) {
    if (spec.type === 'bool') out[name] = false;
    else if (spec.default !== undefined) out[name] = spec.default;
  }
  const done = (help: boolean, version: boolean): ParseResult<F> => ({ flags: out as Parsed<F>, help, version, given: given as Set<keyof F & string> });
  if (argv.some((a) => a === '--help' || a === '-h')) return done(true, false);
  if (argv.includes('--version')) return done(false, true);
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--') continue;
    if (!arg.startsWith('--')) throw new UsageError(`unexpected argument '${arg}' (flags start with --)`);
    const eq = arg.indexOf('=');
    const name = arg.slice(2, eq < 0 ? undefined : eq);
    const spec = specs[name];
    if (!spec) throw new UsageError(`unknown flag --${name}${didYouMean(name, Object.keys(specs), '--')}`);
    given.add(name);
    if (spec.type === 'bool') {
      if (eq >= 0) throw new UsageError(`--${name} is a switch and takes no value`);
      out[name] = true;
      continue;
    }
    let raw: string | undefined;
    if (eq >= 0) raw = arg.slice(eq + 1);
    else {
      raw = argv[i + 1];
      if (raw === undefined || (raw.startsWith('--') && raw.length > 2)) throw new UsageError(`--${name} needs a value (${describe(spec)})`);
      i++;
    }
    out[name] = convert(name, spec, raw);
  }
  return done(false, false);
}

/** An integer written as digits (`_` allowed) or with a K / M suffix; NaN when it is not one. */
function parseInteger(raw: string): number {
  const s = raw.replace(/_/g, '');
  if (/^[+-]?\d+$/.test(s)) return Number(s);
  const m = /^(\d+)([kKmM])$/.exec(s);
  return m ? Number(m[1]) * (m[2]!.toLowerCase() === 'k' ? 1024 : 1024 * 1024) : NaN;
}

function convert(name: string, spec: Exclude<FlagSpec, { type: 'bool' }>, raw: string): unknown {
  const bad = (what = raw): UsageError => new UsageError(`--${name} ${what} is invalid: must be ${describe(spec)}`);
  switch (spec.type) {
    case 'string':
      if (raw === '') throw new UsageError(`--${name} needs a non-empty value`);
      return raw;
    case 'list': {
      const items = raw.split(',').map((s) => s.trim()).filter(Boolean);
      if (items.length === 0) throw new UsageError(`--${name} needs a non-empty value`);
      return items;
    }
    case 'enum':
      if (!spec.values.includes(raw)) throw bad();
      return raw;
    case 'number': {
      const n = raw.trim() === '' ? NaN : Number(raw);
      if (!Number.isFinite(n) || n <= (spec.above ?? -Infinity) || n > (spec.max ?? Infinity)) throw bad();
      return n;
    }
    case 'int':
    case 'ints': {
      const one = (s: string): number => {
        const n = parseInteger(s);
        if (!Number.isSafeInteger(n) || n < (spec.min ?? -Number.MAX_SAFE_INTEGER) || n > (spec.max ?? Number.MAX_SAFE_INTEGER)) throw bad(s);
        return n;
      };
      return spec.type === 'int' ? one(raw) : raw.split(',').map((s) => one(s.trim()));
    }
  }
}

function describe(spec: Exclude<FlagSpec, { type: 'bool' }>): string {
  switch (spec.type) {
    case 'int':
    case 'ints': {
      const what = spec.type === 'int' ? 'an integer' : 'a comma list of integers';
      if (spec.min !== undefined && spec.max !== undefined) return `${what} in [${spec.min}, ${spec.max}]`;
      return spec.min !== undefined ? `${what} >= ${spec.min}` : spec.max !== undefined ? `${what} <= ${spec.max}` : what;
    }
    case 'number':
      return `a number${spec.above !== undefined ? ` > ${spec.above}` : ''}${spec.max !== undefined ? ` and <= ${spec.max}` : ''}`;
    case 'enum':
      return `one of ${spec.values.join(', ')}`;
    default:
      return spec.meta ?? 'a value';
  }
}

/** ` (did you mean <prefix>X?)` for the closest of `known` (a prefix match or at most 2 edits), else ''. */
export function didYouMean(name: string, known: readonly string[], prefix = ''): string {
  const scored = known.map((k) => [k, k.startsWith(name) || name.startsWith(k) ? 0 : editDistance(k, name)] as const);
  const best = scored.filter(([, d]) => d <= 2).sort((a, b) => a[1] - b[1])[0];
  return best ? ` (did you mean ${prefix}${best[0]}?)` : '';
}

function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) cur[j] = Math.min(prev[j]! + 1, cur[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    prev = cur;
  }
  return prev[b.length]!;
}

/** Formats the flag table of a `--help` screen (`--help` and `--version` rows included). */
export function flagHelp(specs: FlagSpecs): string {
  const rows = Object.entries(specs).map(([name, s]) => {
    const meta = s.type === 'bool' ? '' : ` ${s.meta ?? (s.type === 'enum' ? s.values.join('|') : s.type === 'int' ? 'N' : 'VALUE')}`;
    const def = s.type !== 'bool' && s.default !== undefined ? ` (default ${String(s.default)})` : '';
    return [`--${name}${meta}`, `${s.help}${def}`] as const;
  });
  rows.push(['--help, -h', 'this text'], ['--version', 'print the version']);
  const w = rows.reduce((m, [l]) => Math.max(m, l.length), 0) + 2;
  return rows.map(([l, r]) => `  ${l.padEnd(w)}${r}`).join('\n');
}

// ------------------------------------------------------------------------------------- paths

/** The path's stats, or undefined when nothing is there (also below a file: ENOTDIR). */
function stat(p: string): ReturnType<typeof statSync> | undefined {
  try {
    return statSync(p, { throwIfNoEntry: false });
  } catch {
    return undefined;
  }
}

function writable(p: string): boolean {
  try {
    accessSync(p, constants.W_OK);
    return true;
  } catch {
    return false;
  }
}

/** Checks that `--flag path` names a file that can be written (its folder exists and is writable); returns it absolute. */
export function checkOutputFile(flag: string, path: string): string {
  const abs = resolve(path);
  if (stat(abs)?.isDirectory()) throw new UsageError(`--${flag} ${path} is a folder, not a file`);
  const dir = dirname(abs);
  const d = stat(dir);
  if (!d) throw new UsageError(`--${flag} ${path}: the folder ${dir} does not exist`);
  if (!d.isDirectory()) throw new UsageError(`--${flag} ${path}: ${dir} is not a folder`);
  if (!writable(dir) || (stat(abs) && !writable(abs))) throw new UsageError(`--${flag} ${path}: cannot write in ${dir} (permission denied)`);
  return abs;
}

/** Checks that `--flag path` is a folder that exists or can be created, and can be written; returns it absolute. */
export function checkOutputDir(flag: string, path: string): string {
  const abs = resolve(path);
  let p = abs;
  let s = stat(p);
  while (!s && dirname(p) !== p) {
    p = dirname(p);
    s = stat(p);
  }
  if (!s) throw new UsageError(`--${flag} ${path}: no existing folder above it`);
  if (!s.isDirectory()) throw new UsageError(`--${flag} ${path}: ${p} is not a folder`);
  if (!writable(p)) throw new UsageError(`--${flag} ${path}: cannot write in ${p} (permission denied)`);
  return abs;
}

/** Checks that `--flag path` exists (a file or folder, as `kind` allows); returns it absolute. */
export function checkInputPath(flag: string, path: string, kind: 'file' | 'folder' | 'any' = 'any'): string {
  const abs = resolve(path);
  const s = stat(abs);
  if (!s) throw new UsageError(`--${flag} ${path}: no such ${kind === 'any' ? 'file or folder' : kind}`);
  if (kind === 'file' && !s.isFile()) throw new UsageError(`--${flag} ${path} is not a file`);
  if (kind === 'folder' && !s.isDirectory()) throw new UsageError(`--${flag} ${path} is not a folder`);
  return abs;
}

// ------------------------------------------------------------------------------------- errors

/**
 * Prints `e` and returns the exit code: a `UsageError` as one line `error: <message> (see '<usage>')` → 2;
 * anything else as `error: <message>` → 1, its stack only when `MOBA_DEBUG` is set.
 */
export function reportError(e: unknown, usage: string, stderr: { write(s: string): unknown }): number {
  if (e instanceof UsageError) {
    stderr.write(`error: ${e.message.replace(/\s*\n\s*/g, ' ')} (see '${usage}')\n`);
    return 2;
  }
  const err = e as Error | undefined;
  const debug = typeof process !== 'undefined' && process.env.MOBA_DEBUG;
  stderr.write(`error: ${err?.message ?? String(e)}\n${debug && err?.stack ? `${err.stack}\n` : ''}`);
  return 1;
}
