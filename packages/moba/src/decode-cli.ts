/** `moba decode`: flags, checks before any work, and the run (see decode.ts). */
import { writeFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { type FlagSpecs, UsageError, checkOutputFile, flagHelp, parseFlags } from '@moba/testkit';
import { type DecodeOptions, runDecode } from './decode.js';
import { decodeSvg, formatDecodeReport } from './decode-report.js';
import { Progress } from './progress.js';

const MAX = 2 ** 24;

export const DECODE_FLAGS = {
  backend: { type: 'enum', values: ['auto', 'cpu', 'webgpu', 'cuda'], default: 'cpu', help: 'backend to run on' },
  tokens: { type: 'int', min: 1, max: MAX, default: 8192, help: 'prompt tokens per sequence (8K style suffixes work)' },
  steps: { type: 'int', min: 1, max: 1 << 20, default: 64, help: 'decode steps (one token per sequence each)' },
  batch: { type: 'int', min: 1, max: 4096, default: 1, help: 'sequences decoded together' },
  heads: { type: 'int', min: 1, max: 1024, default: 4, help: 'query heads Hq' },
  'kv-heads': { type: 'int', min: 1, max: 1024, help: 'key/value heads Hkv, dividing Hq (default: Hq)' },
  'head-dim': { type: 'int', min: 1, max: 1024, default: 64, help: 'head dim D' },
  'block-size': { type: 'int', min: 1, max: 65536, default: 64, help: 'block size B = tokens per cache page' },
  topk: { type: 'int', min: 1, max: 65536, default: 8, help: 'blocks per query, its own block included' },
  dtype: { type: 'enum', values: ['f32', 'f16', 'bf16'], default: 'f32', help: 'storage dtype' },
  kconv: { type: 'int', min: 0, max: 64, default: 0, meta: 'W', help: 'key convolution width applied on append (0: off)' },
  chunk: { type: 'int', min: 1, max: MAX, default: 4096, help: 'prefill chunk: tokens per sequence per prefill step' },
  'check-every': { type: 'int', min: 0, max: 1 << 20, default: 16, help: 'check every N-th step (and the last) against the float64 reference; 0: never' },
  'no-dense': { type: 'bool', help: 'skip the dense step on the same cache' },
  seed: { type: 'int', min: 0, max: 2 ** 32 - 1, default: 1, help: 'random seed' },
  threads: { type: 'int', min: 1, max: 256, help: 'CPU worker threads' },
  svg: { type: 'string', meta: 'PATH', default: 'moba-decode.svg', help: 'where to write the latency plot (its folder must exist)' },
  'no-svg': { type: 'bool', help: 'do not write the plot' },
  json: { type: 'bool', help: 'print the report as JSON' },
} as const satisfies FlagSpecs;

export const DECODE_HELP = `usage: moba decode [flags]

Inference on the backend's paged KV cache: prefills --batch prompts of --tokens random tokens in
--chunk pieces, then decodes --steps tokens per sequence with mobaStep() (append + attend), timing
each step to device completion, and the same step dense on the same cache (every block selected).
Every --check-every steps the output is compared with the float64 reference over the whole
sequences so far. Prints per-step latency, tokens/s, the dense comparison and the errors, and
writes an SVG of step latency against context length. Exit 1 if a checked step is off.

flags:
${flagHelp(DECODE_FLAGS)}

example: moba decode --tokens 32K --steps 128 --batch 4 --kv-heads 2 --heads 8
`;

interface Io {
  readonly stdout: { write(s: string): unknown };
  readonly stderr: { write(s: string): unknown; readonly isTTY?: boolean };
}

export async function decodeCommand(argv: readonly string[], io: Io, version: string): Promise<number> {
  const { flags: f, help, version: v } = parseFlags(argv, DECODE_FLAGS);
  if (help || v) {
    io.stdout.write(help ? DECODE_HELP : `${version}\n`);
    return 0;
  }
  const kvHeads = f['kv-heads'] ?? f.heads;
  if (f.heads % kvHeads !== 0) throw new UsageError(`--heads ${f.heads} is not a multiple of --kv-heads ${kvHeads}`);
  if (f.threads !== undefined && f.backend !== 'cpu') throw new UsageError(`--threads applies to --backend cpu only, not ${f.backend}`);
  if ((f.tokens + f.steps) * f.batch * f.heads * f['head-dim'] > 2 ** 30) throw new UsageError('--tokens × --batch × --heads × --head-dim is too large (at most 2^30 elements)');
  if (!f['no-svg']) checkOutputFile('svg', f.svg);
  const o: DecodeOptions = {
    backend: f.backend, tokens: f.tokens, steps: f.steps, batch: f.batch, heads: f.heads, kvHeads, headDim: f['head-dim'],
    blockSize: f['block-size'], topk: f.topk, dtype: f.dtype, kconv: f.kconv, chunk: f.chunk, checkEvery: f['check-every'],
    dense: !f['no-dense'], seed: f.seed, ...(f.threads !== undefined ? { threads: f.threads } : {}),
  };
  const r = await runDecode(o, new Progress(io.stderr, 'moba decode'));
  io.stdout.write(f.json ? `${JSON.stringify(r, null, 2)}\n` : formatDecodeReport(r));
  if (!f['no-svg']) {
    writeFileSync(resolve(f.svg), decodeSvg(r));
    if (!f.json) io.stdout.write(`wrote ${f.svg}\n`);
  }
  if (r.worstError !== null && r.worstError > r.errorBound) {
    io.stderr.write(`error: a checked decode step is off: max abs error ${r.worstError.toExponential(2)} > ${r.errorBound.toExponential(2)}\n`);
    return 1;
  }
  return 0;
}
