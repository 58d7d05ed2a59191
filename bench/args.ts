/**
 * Command-line flags of the benchmark (pure: no I/O). Two modes:
 *  - the CPU bench (`--backend cpu|auto`, the default): MoBA against the backend's own dense baseline,
 *    T = 2K…16K (the CPU bench targets; flags unchanged);
 *  - the GPU bench (`--backend cuda|webgpu`, or `--paper` with any backend): the FlashMoBA paper's
 *    configuration (batch 2, 16 heads, D 128, bf16, B 128, top-8) against dense SDPA from torch and FlashMoBA's
 *    published numbers (the CUDA and WebGPU speed targets).
 */
import { type FlagSpecs, type Parsed, UsageError, parseFlags } from '@moba/testkit';
import type { BackendKind } from 'moba-ts';
import { L2_MODES, type L2Mode, expandFlushFlag } from './l2.js';

export { UsageError };

/** The largest size a size flag takes (tokens per sequence, dense-max). */
const MAX_SIZE = 2 ** 24;

/** A size: an integer in [1, 2^24], `K` suffix = ×1024. */
export function size(flag: string, raw: string | undefined): number {
  const { flags } = parseFlags([`--${flag}`, raw ?? ''], { [flag]: { type: 'int', min: 1, max: MAX_SIZE, help: '' } });
  return flags[flag] as number;
}

/** Sizes as written in tables: 8192 → "8K", 1000 → "1000". */
export const kLabel = (n: number): string => (n % 1024 === 0 ? `${n / 1024}K` : String(n));

const BACKENDS = ['auto', 'cpu', 'webgpu', 'cuda'] as const;
const DTYPES = ['f32', 'f16', 'bf16'] as const;

/** The flags both benches take (same names, bounds and meaning). */
const SHARED = {
  backend: { type: 'enum', values: BACKENDS, help: 'backend' },
  tokens: { type: 'ints', min: 1, max: MAX_SIZE, meta: 'LIST', help: 'sizes, comma separated, K suffix ok' },
  heads: { type: 'int', min: 1, max: 1024, help: 'query heads Hq' },
  'kv-heads': { type: 'int', min: 1, max: 1024, help: 'key/value heads Hkv' },
  'head-dim': { type: 'int', min: 1, max: 1024, help: 'head dim D' },
  'block-size': { type: 'int', min: 1, max: 65536, help: 'block size B' },
  topk: { type: 'int', min: 1, max: 65536, help: 'blocks per query' },
  dtype: { type: 'enum', values: DTYPES, help: 'storage dtype' },
  reps: { type: 'int', min: 1, max: 1000, help: 'timed repetitions' },
  threads: { type: 'int', min: 1, max: 256, help: 'worker threads' },
  seed: { type: 'int', min: 0, max: 2 ** 32 - 1, help: 'input seed' },
  quick: { type: 'bool', help: 'a smoke run' },
  'no-dense': { type: 'bool', help: 'no dense baseline' },
  'flush-l2': { type: 'enum', values: L2_MODES, help: 'flush the GPU L2 before each timed repetition' },
  'no-write': { type: 'bool', help: 'print only, write no files' },
  out: { type: 'string', meta: 'DIR', help: 'results folder' },
} as const satisfies FlagSpecs;

const CPU_FLAGS = { ...SHARED, 'no-scaling': { type: 'bool', help: 'no 1-thread vs N-thread runs' } } as const satisfies FlagSpecs;

const GPU_FLAGS = {
  ...SHARED,
  paper: { type: 'bool', help: 'the GPU bench on any backend' },
  batch: { type: 'int', min: 1, max: 1024, help: 'sequences per batch' },
  'dense-max': { type: 'int', min: 1, max: MAX_SIZE, help: 'dense SDPA only up to this N' },
  'dense-reps': { type: 'int', min: 1, max: 1000, help: 'dense SDPA repetitions' },
  'no-matmul': { type: 'bool', help: 'no torch matmul rate' },
  'no-torch': { type: 'bool', help: 'run no python' },
  python: { type: 'string', meta: 'CMD', help: 'python with torch' },
  'no-fma': { type: 'bool', help: 'no WebGPU FMA peak' },
  'memory-gb': { type: 'int', min: 1, max: 65536, help: 'WebGPU workspace budget (GiB)' },
  'time-limit': { type: 'number', above: 0, max: 7 * 86400, help: 'whole run budget (s)' },
} as const satisfies FlagSpecs;

/** Parses with `specs`: 'help' / 'version' when asked, else the flags and which were given. */
function parse<F extends FlagSpecs>(argv: readonly string[], specs: F): 'help' | 'version' | { f: Parsed<F>; given: ReadonlySet<string> } {
  const r = parseFlags(expandFlushFlag(argv), specs);
  return r.help ? 'help' : r.version ? 'version' : { f: r.flags, given: r.given };
}

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
  --flush-l2 [both]    flush the GPU's L2 before each timed repetition (backend.flushL2(), outside the timed
                       region, then a device sync); "both": every size twice, not flushed and flushed; a no-op
                       (said in the report) on the CPU backend; --flush-l2 off is the default
  --out DIR            results folder (default bench/results; checked, and created, before anything runs)
  --no-write           print only, write no files
  --help, -h           this text
  --version            print the version
Integers are bounded (e.g. --reps 1…1000, --threads 1…256, sizes 1…16M): a value out of range is an error.
`;

export interface CpuFlags {
  backend: BackendKind; tokens: number[]; heads: number; kvHeads?: number; headDim: number; blockSize: number; topk: number;
  dtype: 'f32' | 'f16' | 'bf16'; reps: number; threads?: number; seed: number; quick: boolean; dense: boolean; scaling: boolean;
  /** `--flush-l2`: off, on (flag alone), both (bench/l2.ts). */
  flushL2: L2Mode;
  out: string; write: boolean;
}

/** The CPU bench's flags (CPU bench targets). `resultsDir`: the default `--out`; `resolve`: makes `--out` absolute. */
export function parseCpuFlags(argv: readonly string[], resultsDir: string, resolve: (p: string) => string = (p) => p): CpuFlags | 'help' | 'version' {
  const r = parse(argv, CPU_FLAGS);
  if (typeof r === 'string') return r;
  const { f: a, given } = r;
  const f: CpuFlags = {
    backend: a.backend ?? 'cpu', tokens: a.tokens ?? [2048, 4096, 8192, 16384], heads: a.heads ?? 4, headDim: a['head-dim'] ?? 64,
    blockSize: a['block-size'] ?? 64, topk: a.topk ?? 8, dtype: a.dtype ?? 'f32', reps: a.reps ?? 3, seed: a.seed ?? 1,
    quick: a.quick, dense: !a['no-dense'], scaling: !a['no-scaling'], flushL2: a['flush-l2'] ?? 'off', out: a.out !== undefined ? resolve(a.out) : resultsDir, write: !a['no-write'],
    ...(a['kv-heads'] !== undefined ? { kvHeads: a['kv-heads'] } : {}),
    ...(a.threads !== undefined ? { threads: a.threads } : {}),
  };
  if (f.quick && !given.has('tokens')) f.tokens = [2048, 4096];
  if (f.quick && !given.has('reps')) f.reps = 2;
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
  --flush-l2 [both]    flush the GPU's L2 before each timed MoBA repetition (backend.flushL2(): CUDA writes 2× the
                       L2, WebGPU clears 256 MiB; outside the timed region, then a device sync), as the published
                       peer measurements did; "both": every N measured not flushed and flushed on the same inputs,
                       the targets judged on the flushed rows; default off (torch's dense SDPA is never flushed here)
  --no-matmul          no torch bf16 matmul rate
  --no-torch           run no python at all (no dense SDPA, no matmul rate)
  --python CMD         python with torch (default: $MOBA_PYTHON or python3)
  --no-fma             WebGPU: skip the f32 FMA peak kernel
  --memory-gb N        WebGPU: workspace budget of one call in GiB (memoryBytes; default 96, the H200's
                       memory less room for torch: WebGPU cannot query device memory, and the backend's own
                       default of at most 8 GiB stops at about 64K tokens per sequence in this configuration)
  --time-limit S       whole run's budget in seconds (default 500): sizes predicted to overrun it are
                       skipped and reported; python gets what is left (the device tool stops at 600 s)
  --out DIR            results folder (default $OUT when set, else bench/results; checked before anything runs)
  --no-write           print only, write no files
  --help, -h           this text
  --version            print the version
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
  /** `--flush-l2`: off, on (flag alone), both (bench/l2.ts). */
  flushL2: L2Mode;
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
): GpuFlags | 'help' | 'version' {
  const r = parse(argv, GPU_FLAGS);
  if (typeof r === 'string') return r;
  const a = r.f;
  const backend: BackendKind = a.backend ?? 'cuda';
  const preset = presetOf(backend);
  const quickTokens = preset === 'webgpu' ? [8192] : preset === 'cpu' ? [1024] : [8192, 32768];
  const heads = a.heads ?? 16;
  const torch = !a['no-torch'];
  const f: GpuFlags = {
    backend, tokens: [...new Set(a.tokens ?? (a.quick ? quickTokens : PAPER_TOKENS[preset]))].sort((x, y) => x - y),
    batch: a.batch ?? 2, heads, kvHeads: a['kv-heads'] ?? heads, headDim: a['head-dim'] ?? 128, blockSize: a['block-size'] ?? 128,
    topk: a.topk ?? 8, dtype: a.dtype ?? 'bf16', reps: a.reps ?? (a.quick ? 2 : preset === 'cuda' ? 5 : preset === 'webgpu' ? 3 : 2),
    seed: a.seed ?? 1, dense: torch && !a['no-dense'], denseMax: a['dense-max'] ?? null, denseReps: a['dense-reps'] ?? 3,
    matmul: torch && !a['no-matmul'], python: a.python ?? (env.MOBA_PYTHON || 'python3'), fma: !a['no-fma'], flushL2: a['flush-l2'] ?? 'off',
    memoryGb: a['memory-gb'] ?? 96, timeLimitS: a['time-limit'] ?? 500,
    out: a.out !== undefined ? resolve(a.out) : env.OUT ? resolve(env.OUT) : resultsDir, write: !a['no-write'],
    ...(a.threads !== undefined ? { threads: a.threads } : {}),
  };
  if (f.heads % f.kvHeads !== 0) throw new UsageError(`--heads ${f.heads} is not a multiple of --kv-heads ${f.kvHeads}`);
  return f;
}

/** Which bench the arguments ask for: the GPU bench for `--backend cuda|webgpu` or `--paper`. Values are checked later. */
export function benchMode(argv: readonly string[]): 'cpu' | 'gpu' | 'help' | 'version' {
  const any = Object.fromEntries(Object.entries({ ...CPU_FLAGS, ...GPU_FLAGS }).map(([k, s]) => [k, s.type === 'bool' ? s : { type: 'string', help: '' }])) as FlagSpecs;
  const r = parseFlags(expandFlushFlag(argv), any);
  if (r.help || r.version) return r.help ? 'help' : 'version';
  const backend = r.flags.backend;
  return r.flags.paper || backend === 'cuda' || backend === 'webgpu' ? 'gpu' : 'cpu';
}
