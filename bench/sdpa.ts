/**
 * Dense SDPA and the tensor-core matmul rate from torch: runs bench/sdpa.py (beside this module, or beside
 * the bundle) as a child process and reads the JSON object it prints last. Never throws: anything that goes
 * wrong (no python, no torch, no CUDA, a crash, a timeout) comes back as `{ ok: false, error }`.
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** Dense attention at one N (ms; medians), or why it was not measured. */
export interface SdpaSize {
  readonly N: number;
  readonly fwdMs?: number;
  readonly bwdMs?: number;
  readonly fwdBwdMs?: number;
  /** torch.cuda.max_memory_allocated over one forward + backward. */
  readonly peakBytes?: number;
  readonly reps?: number;
  readonly repsMs?: readonly (readonly [number, number])[];
  readonly skipped?: string;
  readonly error?: string;
}

export interface SdpaMatmul {
  readonly n?: number;
  readonly tflopsMedian?: number;
  readonly tflopsBest?: number;
  readonly msMedian?: number;
  readonly error?: string;
}

export type SdpaOutcome =
  | {
    readonly ok: true; readonly torch: string; readonly cuda: string | null; readonly device: string; readonly backend?: string;
    readonly matmul: SdpaMatmul | null; readonly sizes: readonly SdpaSize[]; readonly seconds?: number;
  }
  | { readonly ok: false; readonly error: string };

/** The last line of `stdout` that parses as a JSON object, or null (pure). */
export function lastJsonObject(stdout: string): Record<string, unknown> | null {
  const lines = stdout.split('\n').map((l) => l.trim()).filter(Boolean);
  for (let i = lines.length - 1; i >= 0; i--) {
    let o: unknown;
    try {
      o = JSON.parse(lines[i]!);
    } catch {
      continue;
    }
    if (o && typeof o === 'object' && !Array.isArray(o)) return o as Record<string, unknown>;
  }
  return null;
}

/** How a python script ended without a JSON result (`script` names it), with its last stderr lines. */
export function noJsonResult(script: string, exit: PythonExit, stderr: string): string {
  const tail = stderr.trim().split('\n').slice(-3).join(' | ');
  const how = exit.timedOut ? 'timed out and was stopped' : exit.signal ? `was killed by ${exit.signal}` : `exited with code ${String(exit.code)}`;
  return `${script} ${how} without a JSON result${tail ? `: ${tail}` : ''}`;
}

/** How a child process ended. */
export interface PythonExit { readonly code: number | null; readonly signal?: string | null; readonly timedOut?: boolean }

/** Reads the script's result: the last stdout line that parses as a JSON object (pure). */
export function parseSdpaOutput(stdout: string, exit: PythonExit, stderr = ''): SdpaOutcome {
  const r = lastJsonObject(stdout);
  if (r && r.ok === true && Array.isArray(r.sizes)) {
    return {
      ok: true, torch: String(r.torch ?? '?'), cuda: typeof r.cuda === 'string' ? r.cuda : null, device: String(r.device ?? '?'),
      ...(typeof r.backend === 'string' ? { backend: r.backend } : {}),
      matmul: (r.matmul as SdpaMatmul | null) ?? null, sizes: r.sizes as SdpaSize[], ...(typeof r.seconds === 'number' ? { seconds: r.seconds } : {}),
    };
  }
  if (r && r.ok === false) return { ok: false, error: String(r.error ?? 'sdpa.py reported an error without a message') };
  return { ok: false, error: noJsonResult('sdpa.py', exit, stderr) };
}

/** Where sdpa.py (or another bench script) is: beside this module (bench/), or beside the bundle (.device/). */
export function sdpaScript(name = 'sdpa.py'): string {
  return join(dirname(fileURLToPath(import.meta.url)), name);
}

export interface SdpaRun {
  readonly python: string;
  readonly tokens: readonly number[];
  readonly batch: number;
  readonly heads: number;
  readonly kvHeads: number;
  readonly headDim: number;
  readonly dtype: 'f32' | 'f16' | 'bf16';
  readonly reps: number;
  readonly matmul: boolean;
  /** Seconds the script may use; it is stopped 30 s after that. */
  readonly budgetS: number;
  readonly log?: (s: string) => void;
  /** The child's environment (default: this process's). */
  readonly env?: NodeJS.ProcessEnv;
}

/** Runs sdpa.py; its progress lines are passed to `log`. */
export async function runSdpa(o: SdpaRun): Promise<SdpaOutcome> {
  const script = sdpaScript();
  if (!existsSync(script)) return { ok: false, error: `${script} is missing (the bundle copies bench/sdpa.py beside bench.mjs)` };
  const args = [
    '--tokens', o.tokens.join(','), '--batch', String(o.batch), '--heads', String(o.heads), '--kv-heads', String(o.kvHeads),
    '--head-dim', String(o.headDim), '--dtype', o.dtype, '--reps', String(o.reps), '--budget', String(Math.max(1, Math.floor(o.budgetS))),
    ...(o.matmul ? [] : ['--no-matmul']),
  ];
  const r = await runPython(o.python, script, args, o);
  return 'error' in r ? { ok: false, error: r.error } : parseSdpaOutput(r.stdout, r.exit, r.stderr);
}

/**
 * Runs `python script args…`, passing its stderr lines to `log`; stopped (SIGKILL) 30 s after `budgetS`. Never
 * throws: a python that cannot be started comes back as `{ error }`.
 */
export async function runPython(
  python: string, script: string, args: readonly string[], o: { budgetS: number; log?: (s: string) => void; env?: NodeJS.ProcessEnv },
): Promise<{ stdout: string; stderr: string; exit: PythonExit } | { error: string }> {
  return new Promise((resolve) => {
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    const child = spawn(python, [script, ...args], { stdio: ['ignore', 'pipe', 'pipe'], ...(o.env ? { env: o.env } : {}) });
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, (o.budgetS + 30) * 1000);
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      stderr += d;
      for (const l of d.split('\n')) if (l.trim()) o.log?.(l.trim());
    });
    child.on('error', (e) => {
      clearTimeout(timer);
      resolve({ error: `cannot run ${python}: ${e.message}` });
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ stdout, stderr, exit: { code, signal, timedOut } });
    });
  });
}
