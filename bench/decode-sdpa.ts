/**
 * torch SDPA dense decode for the decode bench: runs bench/sdpa-decode.py once per bench run with every
 * (heads, N, batch) row, after the backend is destroyed (the GPU to itself), and joins its rows to the bench's
 * cases. Never throws: no python, no torch, no CUDA, a crash or a timeout come back as `{ ok: false, error }`,
 * and the table says "not measured" rather than showing a number.
 */
import { existsSync } from 'node:fs';
import type { DecodeFlags } from './decode-args.js';
import type { DecodeCase } from './decode-report.js';
import { type PythonExit, lastJsonObject, noJsonResult, runPython, sdpaScript } from './sdpa.js';

/** One row of sdpa-decode.py: the best backend's median (ms), every backend's (null: refused), or a skip. */
export interface TorchDecodeRow {
  readonly Hq: number; readonly Hkv: number; readonly N: number; readonly batch: number;
  /** K, V, q and the output (bytes). */
  readonly bytesNeeded: number;
  readonly bestMs?: number;
  readonly best?: string;
  readonly backends?: Readonly<Record<string, number | null>>;
  readonly errors?: Readonly<Record<string, string>>;
  readonly skipped?: string;
  readonly error?: string;
}

/** torch's device copy: `dst.copy_(src)`, read + write bytes counted, before the rows and (`after`) after them. */
export type TorchCopy =
  | {
    readonly bytes: number; readonly msBest: number; readonly msMedian: number; readonly bytesPerSecondBest: number; readonly bytesPerSecondMedian: number; readonly how: string;
    readonly after?: { readonly bytesPerSecondBest?: number; readonly bytesPerSecondMedian?: number; readonly error?: string };
  }
  | { readonly error: string };

export type TorchDecode =
  | {
    readonly ok: true; readonly torch: string; readonly cuda: string | null; readonly device: string;
    readonly reps: number; readonly warmup: number; readonly copy: TorchCopy | null; readonly rows: readonly TorchDecodeRow[]; readonly seconds?: number;
  }
  | { readonly ok: false; readonly error: string };

/** A case's SDPA cells: measured (best backend, every backend), skipped by the script, or not measured at all. */
export type SdpaDense =
  | { readonly ms: number; readonly best: string; readonly backends: Readonly<Record<string, number | null>>; readonly errors?: Readonly<Record<string, string>> }
  | { readonly skipped: string }
  | { readonly notMeasured: string };

/** The torch side of a decode result (JSON `torch`). */
export type TorchSummary =
  | { readonly measured: true; readonly torch: string; readonly cuda: string | null; readonly device: string; readonly reps: number; readonly warmup: number; readonly copy: TorchCopy | null; readonly seconds?: number }
  | { readonly measured: false; readonly reason: string };

/** Reads sdpa-decode.py's result: the last stdout line that is a JSON object (pure). */
export function parseTorchDecode(stdout: string, exit: PythonExit, stderr = ''): TorchDecode {
  const r = lastJsonObject(stdout);
  if (r && r.ok === true && Array.isArray(r.rows) && r.dryRun !== true) {
    return {
      ok: true, torch: String(r.torch ?? '?'), cuda: typeof r.cuda === 'string' ? r.cuda : null, device: String(r.device ?? '?'),
      reps: Number(r.reps), warmup: Number(r.warmup), copy: (r.copy as TorchCopy | null) ?? null, rows: r.rows as TorchDecodeRow[],
      ...(typeof r.seconds === 'number' ? { seconds: r.seconds } : {}),
    };
  }
  if (r && r.ok === true) return { ok: false, error: 'sdpa-decode.py answered a dry run' };
  if (r && r.ok === false) return { ok: false, error: String(r.error ?? 'sdpa-decode.py reported an error without a message') };
  return { ok: false, error: noJsonResult('sdpa-decode.py', exit, stderr) };
}

/** The script's command-line arguments for the rows of `f` (pure). */
export function torchDecodeArgs(f: DecodeFlags): string[] {
  return [
    '--heads', f.heads.map(([q, kv]) => `${q}/${kv}`).join(','), '--contexts', f.contexts.join(','), '--batch', f.batch.join(','),
    '--head-dim', String(f.D), '--dtype', f.dtype, '--reps', String(f.reps), '--budget', String(f.torchBudgetS),
  ];
}

/** Runs sdpa-decode.py for every row of `f` (or says why not: --no-torch, a missing script). */
export async function runTorchDecode(f: DecodeFlags, o: { log?: (s: string) => void; env?: NodeJS.ProcessEnv } = {}): Promise<TorchDecode> {
  if (!f.torch) return { ok: false, error: '--no-torch' };
  const script = sdpaScript('sdpa-decode.py');
  if (!existsSync(script)) return { ok: false, error: `${script} is missing (the bundle copies bench/sdpa-decode.py beside bench.mjs)` };
  const env = o.env ?? process.env;
  const python = f.python ?? (env.MOBA_PYTHON || 'python3');
  const r = await runPython(python, script, torchDecodeArgs(f), { budgetS: f.torchBudgetS, env, ...(o.log ? { log: o.log } : {}) });
  return 'error' in r ? { ok: false, error: r.error } : parseTorchDecode(r.stdout, r.exit, r.stderr);
}

/** The few words a "not measured" cell shows for `error` (the full error is in the header and the JSON). */
export function notMeasuredWhy(error: string): string {
  if (error === '--no-torch') return '--no-torch';
  if (/torch cannot be imported|cannot run |is missing/.test(error)) return 'torch unavailable';
  if (/cuda\.is_available\(\) is False/.test(error)) return 'torch has no CUDA';
  return 'torch failed';
}

/** The SDPA cells of the row (heads, N, batch) of `c` in `t` (pure). */
export function sdpaDenseOf(t: TorchDecode, c: { Hq: number; Hkv: number; N: number; batch: number }): SdpaDense {
  if (!t.ok) return { notMeasured: notMeasuredWhy(t.error) };
  const row = t.rows.find((r) => r.Hq === c.Hq && r.Hkv === c.Hkv && r.N === c.N && r.batch === c.batch);
  if (!row) return { notMeasured: 'no such row in the torch output' };
  if (row.skipped !== undefined) return { skipped: row.skipped };
  if (row.bestMs === undefined || row.best === undefined) return { skipped: row.error ?? 'no time' };
  return { ms: row.bestMs, best: row.best, backends: row.backends ?? {}, ...(row.errors ? { errors: row.errors } : {}) };
}

/** `cases` with their SDPA cells, and the torch summary for the result's JSON (pure). */
export function joinTorch(cases: readonly DecodeCase[], t: TorchDecode): { cases: DecodeCase[]; torch: TorchSummary } {
  const torch: TorchSummary = t.ok
    ? { measured: true, torch: t.torch, cuda: t.cuda, device: t.device, reps: t.reps, warmup: t.warmup, copy: t.copy, ...(t.seconds !== undefined ? { seconds: t.seconds } : {}) }
    : { measured: false, reason: t.error };
  return { cases: cases.map((c) => ({ ...c, sdpa: sdpaDenseOf(t, c) })), torch };
}
