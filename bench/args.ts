/**
 * Command-line flags of the benchmark (pure: no I/O). Two modes:
 *  - the CPU bench (`--backend cpu|auto`, the default): MoBA against the backend's own dense baseline,
 *    T = 2K…16K (the CPU bench targets; flags unchanged);
 *  - the GPU bench (`--backend cuda|webgpu`, or `--paper` with any backend): the FlashMoBA paper's
 *    configuration (batch 2, 16 heads, D 128, bf16, B 128, top-8) against dense SDPA from torch and FlashMoBA's
 *    published numbers (the CUDA and WebGPU speed targets).
 */
import type { BackendKind } from 'moba-ts';

export class UsageError extends Error {}

/** A size: an integer >= 1, `K` suffix = ×1024. */
export function size(flag: string, raw: string | undefined): number {
  const m = raw === undefined ? null : /^(\d+)([kK]?)$/.exec(raw);
  const n = m ? Number(m[1]) * (m[2] ? 1024 : 1) : NaN;
  if (!Number.isSafeInteger(n) || n < 1) throw new UsageError(`--${flag} ${raw ?? ''} is invalid: must be an integer >= 1 (K suffix allowed)`);
  return n;
}

/** A number of seconds > 0. */
function seconds(flag: string, raw: string | undefined): number {
  const n = raw === undefined || raw === '' ? NaN : Number(raw);
  if (!Number.isFinite(n) || n <= 0) throw new UsageError(`--${flag} ${raw ?? ''} is invalid: must be a number of seconds > 0`);
  return n;
}

/** Sizes as written in tables: 8192 → "8K", 1000 → "1000". */
export const kLabel = (n: number): string => (n % 1024 === 0 ? `${n / 1024}K` : String(n));

// ------------------------------------------------------------------------------------------- CPU bench

export const CPU_HELP = `usage: pnpm bench -- [flags]        (or: node --conditions=@moba/source --import tsx bench/run.ts [flags])

CPU bench (--backend cpu or auto, the default): times MoBA (routing, forward with routing, forward +
backward) against the backend's dense causal attention baseline at several sequence lengths, plus 1 vs N
threads, and writes the results.

flags:
  --backend auto|cpu|webgpu|cuda   backend (default cpu; webgpu and cuda run the GPU bench below)
  --tokens LIST        sequence lengths, comma separated, K suffix ok (default 2K,4K,8K,16K)
  --heads N            query heads Hq (default 4)
  --kv-heads N         key/value heads Hkv (default Hq)
  --head-dim N         head dim D (default 64)
  --block-size N       block size B (default 64)
  --topk N             blocks per query (default 8)
  --dtype f32|f16|bf16 storage dtype (default f32)
  --reps N             timed repetitions per measurement, after one warm-up (default 3)
  --threads N          worker threads of the main runs (default: all cores)
  --seed N             input seed (default 1)
  --quick              T = 2K, 4K and 2 repetitions (a smoke run; targets are judged at the largest T run)
  --no-dense           skip the dense baseline
  --no-scaling         skip the 1-thread vs N-thread runs
  --out DIR            results folder (default bench/results)
  --no-write           print only, write no files
  --help               this text
`;

export interface CpuFlags {
  backend: BackendKind; tokens: number[]; heads: number; kvHeads?: number; headDim: number; blockSize: number; topk: number;
  dtype: 'f32' | 'f16' | 'bf16'; reps: number; threads?: number; seed: number; quick: boolean; dense: boolean; scaling: boolean;
  out: string; write: boolean;
}

interface Flag {
  readonly name: string;
  readonly value: () => string | undefined;
  readonly raw: string;
}

/** Walks argv as `--name value` / `--name=value` flags (a lone `--`, which pnpm passes through, is skipped). */
function* flags(argv: readonly string[]): Generator<Flag> {
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const eq = a.indexOf('=');
    const name = a.startsWith('--') ? a.slice(2, eq < 0 ? undefined : eq) : a;
    if (name === '') continue;
    yield { name, raw: a, value: () => (eq >= 0 ? a.slice(eq + 1) : argv[++i]) };
  }
}

function backendOf(v: string | undefined): BackendKind {
  if (v !== 'auto' && v !== 'cpu' && v !== 'webgpu' && v !== 'cuda') throw new UsageError(`--backend ${v ?? ''} is invalid: must be one of auto, cpu, webgpu, cuda`);
  return v;
}

function dtypeOf(v: string | undefined): 'f32' | 'f16' | 'bf16' {
  if (v !== 'f32' && v !== 'f16' && v !== 'bf16') throw new UsageError(`--dtype ${v ?? ''} is invalid: must be one of f32, f16, bf16`);
  return v;
}

function folder(v: string | undefined, resolve: (p: string) => string): string {
  if (!v) throw new UsageError('--out needs a folder');
  return resolve(v);
}

/** The CPU bench's flags (CPU bench targets). `resultsDir`: the default `--out`; `resolve`: makes `--out` absolute. */
export function parseCpuFlags(argv: readonly string[], resultsDir: string, resolve: (p: string) => string = (p) => p): CpuFlags | 'help' {
  const f: CpuFlags = {
    backend: 'cpu', tokens: [2048, 4096, 8192, 16384], heads: 4, headDim: 64, blockSize: 64, topk: 8, dtype: 'f32', reps: 3,
    seed: 1, quick: false, dense: true, scaling: true, out: resultsDir, write: true,
  };
  let tokensGiven = false;
  let repsGiven = false;
  for (const { name, value, raw } of flags(argv)) {
    switch (name) {
      case 'help': case '-h': return 'help';
      case 'backend': f.backend = backendOf(value()); break;
      case 'tokens': f.tokens = (value() ?? '').split(',').map((t) => size('tokens', t)); tokensGiven = true; break;
      case 'heads': f.heads = size(name, value()); break;
      case 'kv-heads': f.kvHeads = size(name, value()); break;
      case 'head-dim': f.headDim = size(name, value()); break;
      case 'block-size': f.blockSize = size(name, value()); break;
      case 'topk': f.topk = size(name, value()); break;
      case 'reps': f.reps = size(name, value()); repsGiven = true; break;
      case 'threads': f.threads = size(name, value()); break;
      case 'seed': f.seed = size(name, value()); break;
      case 'dtype': f.dtype = dtypeOf(value()); break;
      case 'quick': f.quick = true; break;
      case 'no-dense': f.dense = false; break;
      case 'no-scaling': f.scaling = false; break;
      case 'no-write': f.write = false; break;
      case 'out': f.out = folder(value(), resolve); break;
      default: throw new UsageError(`unknown flag ${raw} (see --help)`);
    }
  }
  if (f.quick && !tokensGiven) f.tokens = [2048, 4096];
  if (f.quick && !repsGiven) f.reps = 2;
  if (f.heads % (f.kvHeads ?? f.heads) !== 0) throw new UsageError(`--heads ${f.heads} is not a multiple of --kv-heads ${f.kvHeads}`);
  return f;
}

// ------------------------------------------------------------------------------------------- GPU bench

export const GPU_HELP = `GPU bench (--backend cuda or webgpu; --paper runs it on any backend, e.g. cpu to exercise it):
the FlashMoBA paper's configuration: batch 2 packed varlen (cuSeqlens [0, N, 2N]), 16 query and
16 kv heads, head dim 128, bf16, causal, block 128, topk 8, at N tokens per sequence. Times routing, forward
(routing included), backward and forward + backward (median of --reps after a warm-up, each op waited for
on the device), peak device memory (CUDA), effective TFLOP/s from plan(); dense SDPA from torch
(bench/sdpa.py, flash backend, same shapes) and torch's bf16 8192³ matmul rate in the same run; on WebGPU
the f32 FMA peak of a WGSL kernel; FlashMoBA's published H200 numbers and the CUDA speed targets.
On the GPU machine: node .device/bench.mjs --backend cuda|webgpu [flags]  (see docs/benchmarks.md)

flags:
  --backend cuda|webgpu|cpu|auto   backend
  --paper              the GPU bench on --backend cpu/auto too (implied by cuda and webgpu)
  --tokens LIST        N per sequence, comma separated, K suffix ok
                       (default cuda 8K,16K,32K,64K,128K,256K,512K; webgpu 8K,16K,32K,64K,128K; cpu 1K,2K)
  --quick              N = 8K, 32K (webgpu 8K) and 2 repetitions
  --batch N            sequences packed into one varlen batch (default 2)
  --heads N            query heads Hq, and Hkv unless --kv-heads (default 16)
  --kv-heads N         key/value heads Hkv
  --head-dim N         head dim D (default 128)
  --block-size N       block size B (default 128)
  --topk N             blocks per query (default 8)
  --dtype f32|f16|bf16 storage dtype (default bf16)
  --reps N             timed repetitions after one warm-up (default cuda 5, webgpu 3, cpu 2)
  --seed N             input seed (default 1)
  --threads N          CPU backend worker threads (in the .device bundle use 1)
  --no-dense           no dense SDPA (torch); the matmul rate is still measured unless --no-matmul
  --dense-max N        dense SDPA only for N <= this (default: every N); larger N are reported as skipped
  --dense-reps N       dense SDPA repetitions after a warm-up (default 3; 1 where one takes over 2 s)
  --no-matmul          no torch bf16 matmul rate
  --no-torch           run no python at all (no dense SDPA, no matmul rate)
  --python CMD         python with torch (default: $MOBA_PYTHON or python3)
  --no-fma             WebGPU: skip the f32 FMA peak kernel
  --memory-gb N        WebGPU: workspace budget of one call in GiB (memoryBytes; default 96, the H200's
                       memory less room for torch: WebGPU cannot query device memory, and the backend's own
                       default of at most 8 GiB stops at about 64K tokens per sequence in this configuration)
  --time-limit S       whole run's budget in seconds (default 500): sizes predicted to overrun it are
                       skipped and reported; python gets what is left (the device tool stops at 600 s)
  --out DIR            results folder (default $OUT when set, else bench/results)
  --no-write           print only, write no files
  --help               this text
`;

export interface GpuFlags {
  backend: BackendKind;
  /** Tokens per sequence (N), ascending. */
  tokens: number[];
  batch: number; heads: number; kvHeads: number; headDim: number; blockSize: number; topk: number;
  dtype: 'f32' | 'f16' | 'bf16';
  reps: number; seed: number; threads?: number;
  dense: boolean; denseMax: number | null; denseReps: number; matmul: boolean; python: string;
  fma: boolean;
  /** WebGPU workspace budget in GiB. */
  memoryGb: number;
  timeLimitS: number;
  out: string; write: boolean;
}

export const PAPER_TOKENS: Record<'cuda' | 'webgpu' | 'cpu', readonly number[]> = {
  cuda: [8, 16, 32, 64, 128, 256, 512].map((k) => k * 1024),
  webgpu: [8, 16, 32, 64, 128].map((k) => k * 1024),
  cpu: [1024, 2048],
};

const presetOf = (b: BackendKind): 'cuda' | 'webgpu' | 'cpu' => (b === 'auto' ? 'cuda' : b);

/**
 * The GPU bench's flags. `env`: `OUT` (default results folder on the device) and `MOBA_PYTHON`.
 */
export function parseGpuFlags(
  argv: readonly string[], resultsDir: string, env: Record<string, string | undefined> = {}, resolve: (p: string) => string = (p) => p,
): GpuFlags | 'help' {
  let backend: BackendKind = 'cuda';
  let tokens: number[] | null = null;
  let reps: number | null = null;
  let quick = false;
  let kvHeads: number | null = null;
  let torch = true;
  const f: GpuFlags = {
    backend, tokens: [], batch: 2, heads: 16, kvHeads: 16, headDim: 128, blockSize: 128, topk: 8, dtype: 'bf16',
    reps: 0, seed: 1, dense: true, denseMax: null, denseReps: 3, matmul: true, python: env.MOBA_PYTHON || 'python3', fma: true,
    memoryGb: 96, timeLimitS: 500, out: env.OUT ? resolve(env.OUT) : resultsDir, write: true,
  };
  for (const { name, value, raw } of flags(argv)) {
    switch (name) {
      case 'help': case '-h': return 'help';
      case 'backend': backend = backendOf(value()); break;
      case 'paper': break;
      case 'tokens': tokens = (value() ?? '').split(',').map((t) => size('tokens', t)); break;
      case 'quick': quick = true; break;
      case 'batch': f.batch = size(name, value()); break;
      case 'heads': f.heads = size(name, value()); break;
      case 'kv-heads': kvHeads = size(name, value()); break;
      case 'head-dim': f.headDim = size(name, value()); break;
      case 'block-size': f.blockSize = size(name, value()); break;
      case 'topk': f.topk = size(name, value()); break;
      case 'dtype': f.dtype = dtypeOf(value()); break;
      case 'reps': reps = size(name, value()); break;
      case 'seed': f.seed = size(name, value()); break;
      case 'threads': f.threads = size(name, value()); break;
      case 'no-dense': f.dense = false; break;
      case 'dense-max': f.denseMax = size(name, value()); break;
      case 'dense-reps': f.denseReps = size(name, value()); break;
      case 'memory-gb': f.memoryGb = size(name, value()); break;
      case 'no-matmul': f.matmul = false; break;
      case 'no-torch': torch = false; break;
      case 'python': {
        const v = value();
        if (!v) throw new UsageError('--python needs a command');
        f.python = v;
        break;
      }
      case 'no-fma': f.fma = false; break;
      case 'time-limit': f.timeLimitS = seconds(name, value()); break;
      case 'no-write': f.write = false; break;
      case 'out': f.out = folder(value(), resolve); break;
      default: throw new UsageError(`unknown flag ${raw} (see --help)`);
    }
  }
  f.backend = backend;
  const preset = presetOf(backend);
  const quickTokens = preset === 'webgpu' ? [8192] : preset === 'cpu' ? [1024] : [8192, 32768];
  f.tokens = [...new Set(tokens ?? (quick ? quickTokens : PAPER_TOKENS[preset]))].sort((a, b) => a - b);
  f.reps = reps ?? (quick ? 2 : preset === 'cuda' ? 5 : preset === 'webgpu' ? 3 : 2);
  f.kvHeads = kvHeads ?? f.heads;
  if (!torch) f.dense = f.matmul = false;
  if (f.heads % f.kvHeads !== 0) throw new UsageError(`--heads ${f.heads} is not a multiple of --kv-heads ${f.kvHeads}`);
  return f;
}

/** Which bench the arguments ask for: the GPU bench for `--backend cuda|webgpu` or `--paper`. */
export function benchMode(argv: readonly string[]): 'cpu' | 'gpu' | 'help' {
  let backend: string | undefined;
  let paper = false;
  for (const { name, value } of flags(argv)) {
    if (name === 'help' || name === '-h') return 'help';
    if (name === 'paper') paper = true;
    else if (name === 'backend') backend = value();
    else if (name.startsWith('no-') || name === 'quick') continue; // flags without a value
    else value(); // skip the value of any other flag
  }
  return paper || backend === 'cuda' || backend === 'webgpu' ? 'gpu' : 'cpu';
}
