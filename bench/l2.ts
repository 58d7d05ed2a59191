/**
 * `--flush-l2` for the training benches (pure but for `flushOf`): before each timed repetition the GPU's L2 is flushed
 * through the backend's optional `flushL2()` (CUDA: writes 2 × the L2; WebGPU: clears a 256 MiB buffer; docs/api.md),
 * outside the timed region and followed by a device sync, as the published peer measurements did. The CPU backend has
 * none: there the flag is a no-op, and the report says so. `both` measures every size twice, not flushed and flushed.
 */
import type { Backend } from 'moba-ts';

/** `--flush-l2` values: off (default), on (`--flush-l2` alone), both. */
export const L2_MODES = ['off', 'on', 'both'] as const;
export type L2Mode = (typeof L2_MODES)[number];

/** What the results JSON records about the flush (`l2Flush`); each size also records `l2Flushed`. */
export interface L2Record {
  /** What `--flush-l2` asked for. */
  readonly mode: L2Mode;
  /** Whether the backend has `flushL2()`; false: nothing was flushed whatever the mode. */
  readonly available: boolean;
}

/** `--flush-l2` written alone (last, or before another flag) becomes `--flush-l2=on`; every other form is left to the parser. */
export function expandFlushFlag(argv: readonly string[]): string[] {
  return argv.map((a, i) => (a === '--flush-l2' && (i + 1 >= argv.length || argv[i + 1]!.startsWith('--')) ? '--flush-l2=on' : a));
}

/** The backend's L2 flush, if it has one (the bench helper of the GPU backends). */
export function flushOf(b: Backend): (() => Promise<void>) | undefined {
  const f = (b as { flushL2?: unknown }).flushL2;
  return typeof f === 'function' ? () => (f as () => Promise<void>).call(b) : undefined;
}

/** The passes of one size, as "flushed before each timed repetition?": off [false], on [true], both [false, true]; [false] when the backend cannot flush. */
export function l2Passes(l2: L2Record): boolean[] {
  if (!l2.available || l2.mode === 'off') return [false];
  return l2.mode === 'on' ? [true] : [false, true];
}

/** The header line of the tables. */
export function l2Line(l2: L2Record | undefined, backend: string): string {
  if (!l2 || l2.mode === 'off') return 'L2: not flushed between repetitions (--flush-l2 to flush before each)';
  if (!l2.available) return `L2: --flush-l2 ${l2.mode} asked, but the ${backend} backend has no flushL2() (a no-op there: nothing flushed, each size run once)`;
  const how = 'flushL2() before each timed repetition, outside the timed region, then a device sync';
  return l2.mode === 'on' ? `L2: flushed (${how})` : `L2: each size twice, not flushed and flushed (rows marked "flushed": ${how})`;
}

/** A row's size label: `label`, plus ", flushed" on a flushed row of a `both` run. */
export const l2Label = (label: string, flushed: boolean | undefined, l2: L2Record | undefined): string =>
  (flushed && l2?.mode === 'both' ? `${label}, flushed` : label);

/** The sizes the targets are judged on: the flushed ones when the run has any (the peers flushed), else all. */
export function judgedSizes<S extends { readonly l2Flushed?: boolean }>(sizes: readonly S[]): readonly S[] {
  return sizes.some((s) => s.l2Flushed) ? sizes.filter((s) => s.l2Flushed) : sizes;
}
