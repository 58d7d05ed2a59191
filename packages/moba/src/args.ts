/**
 * A small command-line flag parser for the `moba` CLI and the bench: `--name value`, `--name=value`,
 * boolean switches, integer ranges and enums, each flag declared once with its help text. Any bad
 * flag throws `UsageError` (the CLI prints it and exits with code 2).
 */

/** A command-line mistake: unknown flag, missing or invalid value. Exit code 2. */
export class UsageError extends Error {
  override readonly name = 'UsageError';
}

interface FlagBase {
  /** Help text (one line). */
  readonly help: string;
  /** Value name shown in help, e.g. `N` or `PATH`. */
  readonly meta?: string;
}

/** One declared flag. */
export type FlagSpec =
  | (FlagBase & { readonly type: 'int'; readonly min?: number; readonly max?: number; readonly default?: number })
  | (FlagBase & { readonly type: 'string'; readonly default?: string })
  | (FlagBase & { readonly type: 'enum'; readonly values: readonly string[]; readonly default?: string })
  | (FlagBase & { readonly type: 'bool' });

/** Flag name (without `--`) → spec. */
export type FlagSpecs = Record<string, FlagSpec>;

type ValueOf<S extends FlagSpec> = S extends { type: 'int' } ? number : S extends { type: 'bool' } ? boolean : string;

/** Parsed flags: declared defaults filled in; flags without a default may be undefined (bools are false). */
export type Parsed<F extends FlagSpecs> = {
  [K in keyof F]: F[K] extends { type: 'bool' } ? boolean : F[K] extends { default: unknown } ? ValueOf<F[K]> : ValueOf<F[K]> | undefined;
};

/**
 * Parses `argv` against `specs`. A lone `--` is skipped (pnpm passes it through); positional arguments
 * are rejected. `--help` / `-h` sets `help: true` and stops checking.
 */
export function parseFlags<F extends FlagSpecs>(argv: readonly string[], specs: F): { flags: Parsed<F>; help: boolean } {
  const out: Record<string, unknown> = {};
  for (const [name, spec] of Object.entries(specs)) {
    if (spec.type === 'bool') out[name] = false;
    else if (spec.default !== undefined) out[name] = spec.default;
  }
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--') continue;
    if (arg === '--help' || arg === '-h') return { flags: out as Parsed<F>, help: true };
    if (!arg.startsWith('--')) throw new UsageError(`unexpected argument '${arg}' (flags start with --)`);
    const eq = arg.indexOf('=');
    const name = arg.slice(2, eq < 0 ? undefined : eq);
    const spec = specs[name];
    if (!spec) throw new UsageError(`unknown flag --${name}${suggest(name, Object.keys(specs))}`);
    if (spec.type === 'bool') {
      if (eq >= 0) throw new UsageError(`--${name} is a switch and takes no value`);
      out[name] = true;
      continue;
    }
    let raw: string | undefined;
    if (eq >= 0) raw = arg.slice(eq + 1);
    else {
      raw = argv[i + 1];
      if (raw === undefined || (raw.startsWith('--') && raw.length > 2)) throw new UsageError(`--${name} needs a value (${spec.meta ?? describe(spec)})`);
      i++;
    }
    out[name] = convert(name, spec, raw);
  }
  return { flags: out as Parsed<F>, help: false };
}

function convert(name: string, spec: Exclude<FlagSpec, { type: 'bool' }>, raw: string): number | string {
  if (spec.type === 'string') {
    if (raw === '') throw new UsageError(`--${name} needs a non-empty value`);
    return raw;
  }
  if (spec.type === 'enum') {
    if (!spec.values.includes(raw)) throw new UsageError(`--${name} ${raw} is invalid: must be one of ${spec.values.join(', ')}`);
    return raw;
  }
  const n = /^[+-]?\d+$/.test(raw.replace(/_/g, '')) ? Number(raw.replace(/_/g, '')) : parseSuffixed(raw);
  const min = spec.min ?? -Number.MAX_SAFE_INTEGER;
  const max = spec.max ?? Number.MAX_SAFE_INTEGER;
  if (!Number.isSafeInteger(n) || n < min || n > max) throw new UsageError(`--${name} ${raw} is invalid: must be ${describe(spec)}`);
  return n;
}

/** Accepts `8K` / `64k` / `1M` style sizes (powers of two: 8K = 8192). */
function parseSuffixed(raw: string): number {
  const m = /^(\d+)([kKmM])$/.exec(raw);
  if (!m) return NaN;
  return Number(m[1]) * (m[2]!.toLowerCase() === 'k' ? 1024 : 1024 * 1024);
}

function describe(spec: FlagSpec): string {
  if (spec.type === 'int') {
    if (spec.min !== undefined && spec.max !== undefined) return `an integer in [${spec.min}, ${spec.max}]`;
    if (spec.min !== undefined) return `an integer >= ${spec.min}`;
    return 'an integer';
  }
  if (spec.type === 'enum') return `one of ${spec.values.join(', ')}`;
  return spec.meta ?? 'a value';
}

function suggest(name: string, known: readonly string[]): string {
  const close = known.filter((k) => k.startsWith(name) || name.startsWith(k) || editDistance(k, name) <= 2);
  return close.length ? ` (did you mean --${close[0]}?)` : '';
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

/** Formats the flag table of a `--help` screen. */
export function flagHelp(specs: FlagSpecs): string {
  const rows = Object.entries(specs).map(([name, s]) => {
    const left = `--${name}${s.type === 'bool' ? '' : ` ${s.meta ?? (s.type === 'enum' ? s.values.join('|') : 'N')}`}`;
    const def = s.type !== 'bool' && s.default !== undefined ? ` (default ${s.default})` : '';
    return [left, `${s.help}${def}`] as const;
  });
  const w = Math.max(...rows.map(([l]) => l.length)) + 2;
  return rows.map(([l, r]) => `  ${l.padEnd(w)}${r}`).join('\n');
}
