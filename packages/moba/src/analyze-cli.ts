/** `moba analyze`: flags, checks before any work, and the run (analyze.ts; `--synthetic needle` is needle-cli.ts). */
import { writeFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { type FlagSpecs, type Parsed, UsageError, checkInputPath, checkOutputFile, flagHelp, parseFlags } from '@moba/testkit';
import { type HostTensor, fromFloat } from '@moba/core';
import { analyzeRouting } from './analyze.js';
import { analyzeJson, analyzeSvg, formatAnalyzeReport } from './analyze-report.js';
import { SYNTHETIC_GAP, SYNTHETIC_NEEDLES, syntheticGaussian } from './analyze-synthetic.js';
import { createBackend } from './backends.js';
import { readTensor } from './io/index.js';
import { needleCommand } from './needle-cli.js';
import { Progress } from './progress.js';

const MAX = 2 ** 24;
/** Inputs from T this large on get a progress line per phase on stderr. */
const PROGRESS_FROM_TOKENS = 8192;

export const ANALYZE_FLAGS = {
  q: { type: 'string', meta: 'PATH', help: 'queries [T, Hq, D] (.npy, .safetensors or raw)' },
  k: { type: 'string', meta: 'PATH', help: 'keys [T, Hkv, D]' },
  v: { type: 'string', meta: 'PATH', help: 'values [T, Hkv, D] (default: v = k, said in the report)' },
  format: { type: 'enum', values: ['npy', 'safetensors', 'raw'], help: 'file format of --q/--k/--v (default: from the file name)' },
  'name-q': { type: 'string', meta: 'NAME', help: 'tensor name of q in a .safetensors file' },
  'name-k': { type: 'string', meta: 'NAME', help: 'tensor name of k in a .safetensors file' },
  'name-v': { type: 'string', meta: 'NAME', help: 'tensor name of v in a .safetensors file' },
  dtype: { type: 'enum', values: ['f32', 'f16', 'bf16'], help: 'element type of raw files (default f32); for .npy / safetensors files it must match the file' },
  shape: { type: 'ints', min: 1, max: MAX, meta: 'T,H,D', help: 'shape of a raw q file (k and v: T, --kv-heads, D)' },
  'kv-heads': { type: 'int', min: 1, max: 1024, help: 'heads of raw k and v files (default: H of --shape)' },
  synthetic: { type: 'enum', values: ['gaussian', 'needle'], help: 'generated inputs instead of files (needle: the routing-quality experiment)' },
  tokens: { type: 'int', min: 1, max: MAX, default: 32768, help: 'synthetic: tokens T' },
  heads: { type: 'int', min: 1, max: 1024, default: 1, help: 'synthetic: heads (q and k alike)' },
  'head-dim': { type: 'int', min: 1, max: 1024, default: 32, help: 'synthetic: head dim D' },
  'block-sizes': { type: 'ints', min: 1, max: 65536, default: [16, 32, 64], meta: 'B,…', help: 'block sizes to try' },
  topks: { type: 'ints', min: 1, max: 65536, default: [4, 8, 16], meta: 'K,…', help: 'topk values to try (blocks per query, own included)' },
  kconv: { type: 'ints', min: 0, max: 64, default: [0], meta: 'W,…', help: 'key convolution widths to try (0: none; weight: the uniform average 1/W)' },
  samples: { type: 'int', min: 0, max: MAX, default: 1024, help: 'rows (spread evenly) whose dense top-1 key is found exactly, for the hit rate' },
  backend: { type: 'enum', values: ['auto', 'cpu', 'webgpu', 'cuda'], default: 'cpu', help: 'backend to run on' },
  threads: { type: 'int', min: 1, max: 256, help: 'CPU worker threads (--backend cpu only)' },
  seed: { type: 'int', min: 0, max: 2 ** 32 - 1, default: 1, help: 'synthetic: random seed' },
  svg: { type: 'string', meta: 'PATH', default: 'moba-analyze.svg', help: 'where to write the recall plot (its folder must exist)' },
  'no-svg': { type: 'bool', help: 'do not write the plot' },
  json: { type: 'bool', help: 'print the report as JSON (progress still goes to stderr)' },
} as const satisfies FlagSpecs;

export const ANALYZE_HELP = `usage: moba analyze (--q PATH --k PATH [--v PATH] | --synthetic gaussian|needle) [flags]

How good is MoBA's routing for these q and k? For every block size × topk × kconv width of the grid it runs
the backend's router and forward and a dense causal forward over the same (convolved) keys, and reports:
the recall of dense attention (each row's dense softmax mass inside its MoBA selection, exp(lse_moba −
lse_dense): mean, p10 and p1 over all rows × heads), the hit rate of each row's dense top-1 key (on
--samples rows), the attended fraction of causal pairs and the FLOP and byte savings from plan(), and the
relative RMS error of out against dense attention. Writes an SVG of recall against attended fraction, one
curve per block size. Never holds a T × T buffer.

--synthetic gaussian: seeded normal q, k, v with ${SYNTHETIC_NEEDLES} planted "needle" keys per head; half the
query rows after a needle retrieve one (score gap ${SYNTHETIC_GAP} in scaled-score units). kconv weights are the
uniform average (every tap 1/W): k' = k + SiLU(mean of the last W keys).
--synthetic needle: the routing-quality experiment (its own flags: moba analyze --synthetic needle --help).

flags:
${flagHelp(ANALYZE_FLAGS)}

example: moba analyze --synthetic gaussian --tokens 32K --block-sizes 16,32,64 --topks 4,8,16
         moba analyze --q q.npy --k k.npy --v v.npy --kconv 0,3
`;

interface Io {
  readonly stdout: { write(s: string): unknown };
  readonly stderr: { write(s: string): unknown; readonly isTTY?: boolean };
}

/** The arguments without `--synthetic needle` when they ask for it, else null. */
function needleArgs(argv: readonly string[]): string[] | null {
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--synthetic=needle') return [...argv.slice(0, i), ...argv.slice(i + 1)];
    if (argv[i] === '--synthetic' && argv[i + 1] === 'needle') return [...argv.slice(0, i), ...argv.slice(i + 2)];
  }
  return null;
}

const FILE_FLAGS = ['q', 'k', 'v', 'format', 'name-q', 'name-k', 'name-v', 'dtype', 'shape', 'kv-heads'] as const;
const SYNTHETIC_FLAGS = ['tokens', 'heads', 'head-dim', 'seed'] as const;

/** The combination checks (exit 2), before anything is read or run. */
function checkFlags(f: Parsed<typeof ANALYZE_FLAGS>, given: ReadonlySet<string>): void {
  if (f.synthetic !== undefined) {
    const bad = FILE_FLAGS.find((n) => given.has(n));
    if (bad) throw new UsageError(`--${bad} reads input files: it cannot be used with --synthetic ${f.synthetic}`);
  } else {
    if (f.q === undefined || f.k === undefined) throw new UsageError('give the inputs: --q PATH and --k PATH (and optionally --v PATH), or --synthetic gaussian');
    const bad = SYNTHETIC_FLAGS.find((n) => given.has(n));
    if (bad) throw new UsageError(`--${bad} applies to --synthetic inputs only, not to files`);
    for (const n of ['q', 'k', 'v'] as const) if (f[n] !== undefined) checkInputPath(n, f[n], 'file');
    const raw = f.format === 'raw';
    if (!raw && (given.has('dtype') || given.has('shape') || given.has('kv-heads'))) {
      throw new UsageError(`--${['dtype', 'shape', 'kv-heads'].find((n) => given.has(n))} applies to --format raw only`);
    }
    if (raw && f.shape === undefined) throw new UsageError('--format raw needs --shape T,H,D (the files hold no shape)');
    if (f.shape !== undefined && f.shape.length !== 3) throw new UsageError(`--shape ${f.shape.join(',')} is invalid: must be three integers T,H,D`);
    const named = (['name-q', 'name-k', 'name-v'] as const).find((n) => given.has(n));
    if (named && f.format !== undefined && f.format !== 'safetensors') throw new UsageError(`--${named} applies to safetensors files only, not --format ${f.format}`);
    if (given.has('name-v') && f.v === undefined) throw new UsageError('--name-v needs --v PATH');
  }
  if (f.threads !== undefined && f.backend !== 'cpu') throw new UsageError(`--threads applies to --backend cpu only, not ${f.backend}`);
  if (f.synthetic === 'gaussian' && f.tokens * f.heads * f['head-dim'] > 2 ** 28) throw new UsageError('--tokens × --heads × --head-dim is too large (at most 2^28 elements per tensor)');
  if (!f['no-svg']) checkOutputFile('svg', f.svg);
}

/** q, k, v (v absent: v = k) and a description of where they came from. */
function loadInputs(f: Parsed<typeof ANALYZE_FLAGS>): { q: HostTensor; k: HostTensor; v?: HostTensor; description: string } {
  if (f.synthetic === 'gaussian') {
    const s = syntheticGaussian({ tokens: f.tokens, heads: f.heads, headDim: f['head-dim'], seed: f.seed });
    return { ...s, description: `synthetic gaussian, seed ${f.seed} (${SYNTHETIC_NEEDLES} needles per head, score gap ${SYNTHETIC_GAP})` };
  }
  const [T, H, D] = f.shape ?? [];
  // --shape (raw files need it; for .npy / safetensors it is checked against the file) and --dtype apply to every file
  const read = (param: 'q' | 'k' | 'v', path: string, name: string | undefined, heads: number | undefined): HostTensor => readTensor({
    path, param, ...(f.format ? { format: f.format } : {}), ...(name !== undefined ? { name } : {}),
    ...(f.shape ? { shape: [T!, heads!, D!] } : {}), ...(f.dtype ? { dtype: f.dtype } : {}),
  });
  const q = read('q', f.q!, f['name-q'], H);
  const k = read('k', f.k!, f['name-k'], f['kv-heads'] ?? H);
  const v = f.v !== undefined ? read('v', f.v, f['name-v'], f['kv-heads'] ?? H) : undefined;
  return { q, k, ...(v ? { v } : {}), description: `q ${f.q}, k ${f.k}${f.v !== undefined ? `, v ${f.v}` : ''}` };
}

/** The uniform-average kconv weight `[Hkv·D, W]` (every tap 1/W) in k's dtype. */
export function uniformKconvWeight(channels: number, W: number, dtype: HostTensor['dtype']): HostTensor {
  return fromFloat(new Float64Array(channels * W).fill(1 / W), dtype, [channels, W]);
}

export async function analyzeCommand(argv: readonly string[], io: Io, version: string): Promise<number> {
  const needle = needleArgs(argv);
  if (needle) return await needleCommand(needle, io, version);
  const { flags: f, help, version: v, given } = parseFlags(argv, ANALYZE_FLAGS);
  if (help || v) {
    io.stdout.write(help ? ANALYZE_HELP : `${version}\n`);
    return 0;
  }
  checkFlags(f, given);
  const inputs = loadInputs(f);
  const [T, Hkv, D] = inputs.k.shape as [number, number, number];
  const kconv = [...new Set(f.kconv)].map((W) => (W === 0 ? null : uniformKconvWeight(Hkv * D, W, inputs.k.dtype)));
  const backend = await createBackend(f.backend, f.threads !== undefined ? { threads: f.threads } : undefined);
  const progress = T >= PROGRESS_FROM_TOKENS ? new Progress(io.stderr, 'moba analyze') : undefined;
  try {
    const { description, ...qkv } = inputs;
    const r = await analyzeRouting(backend, qkv, { blockSizes: [...new Set(f['block-sizes'])], topks: [...new Set(f.topks)], kconv }, {
      sampleRows: f.samples,
      ...(progress ? { onProgress: (label: string, i: number, n: number) => progress.start(`${label} [${i + 1}/${n}]`) } : {}),
    });
    progress?.end();
    io.stdout.write(f.json ? analyzeJson(r, { description }) : formatAnalyzeReport(r, { description }));
    if (!f['no-svg']) {
      writeFileSync(resolve(f.svg), analyzeSvg(r));
      if (!f.json) io.stdout.write(`wrote ${f.svg}\n`);
    }
    return 0;
  } finally {
    progress?.end();
    await backend.destroy();
  }
}
