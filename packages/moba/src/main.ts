/**
 * The `moba` command line: `moba demo` (the main job), `moba decode`, `moba analyze`, `moba info` (backends available here) and
 * `moba conformance` (the testkit's runner). `main(argv, io)` returns the exit code: 0 success, 1 a
 * MobaError or runtime failure (`error: <message>`), 2 a bad command line (one line on stderr, checked before
 * any work: flags, their combinations and the --svg path). Flags are parsed by @moba/testkit's args layer,
 * shared by every moba CLI.
 */
import { spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import { availableParallelism, cpus } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { type FlagSpecs, type Parsed, UsageError, checkOutputFile, didYouMean, flagHelp, parseFlags, reportError } from '@moba/testkit';
import { type BackendStatus, listBackends } from './backends.js';
import { DEMO_DEFAULTS, type DemoOptions, runDemo } from './demo.js';
import { formatDemoReport } from './demo-report.js';
import { decodeCommand } from './decode-cli.js';
import { analyzeCommand } from './analyze-cli.js';
import { Progress } from './progress.js';

/** Output streams (process.stdout / process.stderr, or any sink in tests). */
export interface CliIo {
  readonly stdout: { write(s: string): unknown };
  readonly stderr: { write(s: string): unknown; readonly isTTY?: boolean };
}

const require = createRequire(import.meta.url);
const VERSION = (require('../package.json') as { version: string }).version;

const TOP_HELP = `moba ${VERSION}: Mixture of Block Attention for TypeScript

usage: moba <command> [flags]

commands:
  demo          random inputs → kconv → route → forward → backward on a backend; prints times,
                FLOP/s, the attended fraction and the error vs the float64 reference; writes
                an SVG heatmap of the routing
  decode        inference on a KV cache: prefill a prompt, decode token by token; per-step
                latency, tokens/s, the dense comparison, errors vs the reference, an SVG plot
  analyze       how good the routing is for given q, k (files or synthetic): recall of dense
                attention, top-1 hit rate, attended fraction, savings and output error per
                block size × topk × kconv; an SVG of recall vs attended fraction
  info          lists the backends and whether each can run here (and why not)
  conformance   runs the backend conformance suite (the moba-conformance CLI of @moba/testkit)

run 'moba <command> --help' for the flags of a command; 'moba --version' prints the version.
`;

const COMMANDS = ['demo', 'decode', 'analyze', 'info', 'conformance'] as const;

/** Largest T, and largest q/dOut tensor (elements), the demo accepts: far above what fits a demo, below absurd. */
const MAX_TOKENS = 2 ** 24;
const MAX_ELEMENTS = 2 ** 30;

const DEMO_FLAGS = {
  backend: { type: 'enum', values: ['auto', 'cpu', 'webgpu', 'cuda'], default: DEMO_DEFAULTS.backend, help: 'backend to run on' },
  tokens: { type: 'int', min: 1, max: MAX_TOKENS, default: DEMO_DEFAULTS.tokens, help: 'total tokens T (8K style suffixes work)' },
  heads: { type: 'int', min: 1, max: 1024, default: DEMO_DEFAULTS.heads, help: 'query heads Hq' },
  'kv-heads': { type: 'int', min: 1, max: 1024, help: 'key/value heads Hkv, dividing Hq (default: Hq)' },
  'head-dim': { type: 'int', min: 1, max: 1024, default: DEMO_DEFAULTS.headDim, help: 'head dim D' },
  'block-size': { type: 'int', min: 1, max: 65536, default: DEMO_DEFAULTS.blockSize, help: 'tokens per key block' },
  topk: { type: 'int', min: 1, max: 65536, default: DEMO_DEFAULTS.topk, help: 'blocks per query, its own block included' },
  dtype: { type: 'enum', values: ['f32', 'f16', 'bf16'], default: DEMO_DEFAULTS.dtype, help: 'storage dtype of q, k, v' },
  kconv: { type: 'int', min: 0, max: 64, default: DEMO_DEFAULTS.kconv, meta: 'W', help: 'key convolution width: 0 off, 3 = kconv3, 5 = kconv5' },
  batch: { type: 'int', min: 1, max: MAX_TOKENS, default: DEMO_DEFAULTS.batch, help: 'split T into this many sequences (lengths differ by at most 1; at most T)' },
  seed: { type: 'int', min: 0, max: 2 ** 32 - 1, default: DEMO_DEFAULTS.seed, help: 'random seed of the inputs' },
  threads: { type: 'int', min: 1, max: 256, help: 'CPU worker threads (default: all cores)' },
  samples: { type: 'int', min: 1, max: 65536, default: DEMO_DEFAULTS.samples, help: 'query rows checked against the float64 reference' },
  svg: { type: 'string', meta: 'PATH', default: 'moba-routing.svg', help: 'where to write the routing heatmap (its folder must exist)' },
  'no-svg': { type: 'bool', help: 'do not write the heatmap' },
  'no-warmup': { type: 'bool', help: 'time the first run (includes JIT warm-up and worker start)' },
  json: { type: 'bool', help: 'print the report as JSON on stdout (progress still goes to stderr)' },
} as const satisfies FlagSpecs;

const DEMO_HELP = `usage: moba demo [flags]

Runs MoBA on seeded random inputs: kconv → route → forward → backward through moba() and
mobaBackward(), timing every backend call. Reports the time and GFLOP/s of each phase, the
fraction of causal query-key pairs attended, the max error of out, lse and dq against the
float64 reference on sampled query rows, how the routing compares with the float64 router,
and writes an SVG heatmap of the routing (query block × key block selection counts).

flags:
${flagHelp(DEMO_FLAGS)}

example: moba demo --tokens 16K --topk 4 --kconv 0 --json
`;

const INFO_FLAGS = { json: { type: 'bool', help: 'print as JSON' } } as const satisfies FlagSpecs;
const INFO_HELP = `usage: moba info [--json]

Lists the backends (cuda, webgpu, cpu), whether each can run on this machine and why not,
with the versions of moba-ts, Node and the backend packages, and the CPU cores.

flags:
${flagHelp(INFO_FLAGS)}
`;


/** Runs the CLI with `argv` (without node and script); resolves to the exit code. */
export async function main(argv: readonly string[], io: CliIo): Promise<number> {
  const [cmd, ...rest] = argv[0] === '--' ? argv.slice(1) : argv;
  const known = (COMMANDS as readonly string[]).includes(cmd ?? '');
  try {
    switch (cmd) {
      case undefined:
        throw new UsageError(`no command given: the commands are ${COMMANDS.join(', ')}`);
      case 'help':
      case '--help':
      case '-h':
        io.stdout.write(TOP_HELP);
        return 0;
      case '--version':
      case '-v':
        io.stdout.write(`${VERSION}\n`);
        return 0;
      case 'demo':
        return await demo(rest, io);
      case 'decode':
        return await decodeCommand(rest, io, VERSION);
      case 'analyze':
        return await analyzeCommand(rest, io, VERSION);
      case 'info':
        return await info(rest, io);
      case 'conformance':
        return await conformance(rest, io);
      default:
        if (cmd.startsWith('-')) parseFlags([cmd], {}); // throws: unknown flag / unexpected argument
        throw new UsageError(`unknown command '${cmd}'${didYouMean(cmd, COMMANDS)}: the commands are ${COMMANDS.join(', ')}`);
    }
  } catch (e) {
    return reportError(e, known ? `moba ${cmd} --help` : 'moba --help', io.stderr);
  }
}

/** Checks what the flags can only say together, and the output path, before any work starts. */
function checkDemoFlags(f: Parsed<typeof DEMO_FLAGS>): number {
  const kvHeads = f['kv-heads'] ?? f.heads;
  if (f.heads % kvHeads !== 0) throw new UsageError(`--heads ${f.heads} is not a multiple of --kv-heads ${kvHeads}`);
  if (f.batch > f.tokens) throw new UsageError(`--batch ${f.batch} is larger than --tokens ${f.tokens}: every sequence needs at least one token`);
  const elements = f.tokens * f.heads * f['head-dim'];
  if (elements > MAX_ELEMENTS) {
    throw new UsageError(`--tokens ${f.tokens} × --heads ${f.heads} × --head-dim ${f['head-dim']} = ${elements} elements per tensor is too large (at most 2^30)`);
  }
  if (!f['no-svg']) checkOutputFile('svg', f.svg);
  return kvHeads;
}

async function demo(argv: readonly string[], io: CliIo): Promise<number> {
  const { flags: f, help, version } = parseFlags(argv, DEMO_FLAGS);
  if (help || version) {
    io.stdout.write(help ? DEMO_HELP : `${VERSION}\n`);
    return 0;
  }
  const kvHeads = checkDemoFlags(f);
  const opts: DemoOptions = {
    backend: f.backend, tokens: f.tokens, heads: f.heads, kvHeads, headDim: f['head-dim'],
    blockSize: f['block-size'], topk: f.topk, dtype: f.dtype, kconv: f.kconv, batch: f.batch,
    seed: f.seed, samples: f.samples, warmup: !f['no-warmup'],
    ...(f.threads !== undefined ? { threads: f.threads } : {}),
    ...(f['no-svg'] ? {} : { svg: f.svg }),
  };
  const report = await runDemo(opts, new Progress(io.stderr, 'moba demo'));
  io.stdout.write(f.json ? `${JSON.stringify(report, null, 2)}\n` : formatDemoReport(report));
  return 0;
}

/** What `moba info` says about the machine. */
export interface MachineInfo {
  readonly mobaTs: string;
  readonly node: string;
  readonly platform: string;
  readonly cores: number;
  readonly cpu: string;
}

/** The text of `moba info`: the machine, then one line per backend (its package and adapter, or why it cannot run). */
export function formatInfo(machine: MachineInfo, backends: readonly BackendStatus[], allowSoftware = process.env.MOBA_ALLOW_SOFTWARE_WEBGPU === '1'): string {
  const L = [
    `moba-ts ${machine.mobaTs}, node ${machine.node}, ${machine.platform}, ${machine.cores} cores (${machine.cpu})`,
    '',
    'backends (createBackend(\'auto\') takes the first available, top to bottom, but a software WebGPU adapter',
    'only with MOBA_ALLOW_SOFTWARE_WEBGPU=1 or allowSoftwareAdapter: true):',
  ];
  for (const b of backends) {
    const status = b.available ? 'available' : 'not available';
    const name = (b.adapter ?? '').replace(/\s*—\s*software$/, ''); // the backend may already say so
    const soft = b.software ? ` (software${b.available && !allowSoftware ? ": 'auto' skips it" : ''})` : '';
    const adapter = name ? `, adapter ${name}${soft}` : b.software ? ', a software adapter' : '';
    const detail = b.available ? `${b.package}${b.version ? ` ${b.version}` : ''}${adapter}` : (b.reason ?? 'no reason given');
    L.push(`  ${b.name.padEnd(8)}${status.padEnd(15)}${detail}`);
  }
  return `${L.join('\n')}\n`;
}

async function info(argv: readonly string[], io: CliIo): Promise<number> {
  const { flags, help, version } = parseFlags(argv, INFO_FLAGS);
  if (help || version) {
    io.stdout.write(help ? INFO_HELP : `${VERSION}\n`);
    return 0;
  }
  const backends = await listBackends();
  const machine: MachineInfo = {
    mobaTs: VERSION, node: process.version, platform: `${process.platform} ${process.arch}`,
    cores: availableParallelism(), cpu: cpus()[0]?.model ?? 'unknown',
  };
  if (flags.json) {
    io.stdout.write(`${JSON.stringify({ ...machine, backends }, null, 2)}\n`);
    return 0;
  }
  io.stdout.write(formatInfo(machine, backends));
  return 0;
}

/**
 * Forwards to the testkit's `moba-conformance` runner in a child process (its own exit code and
 * output, `--help` and `--version` included), from sources when this CLI runs from sources, else from the installed bin.
 */
async function conformance(argv: readonly string[], io: CliIo): Promise<number> {
  const pkgDir = dirname(fileURLToPath(import.meta.resolve('@moba/testkit/package.json')));
  const fromSource = import.meta.url.endsWith('.ts');
  const script = fromSource ? join(pkgDir, 'src', 'cli.ts') : join(pkgDir, 'bin', 'moba-conformance.js');
  const execArgv = fromSource ? ['--conditions=@moba/source', '--import', 'tsx'] : [];
  return await new Promise<number>((done, fail) => {
    const child = spawn(process.execPath, [...execArgv, script, ...argv.filter((a) => a !== '--')], { stdio: ['inherit', 'pipe', 'pipe'] });
    child.stdout.on('data', (b: Buffer) => io.stdout.write(b.toString()));
    child.stderr.on('data', (b: Buffer) => io.stderr.write(b.toString()));
    child.on('error', fail);
    child.on('close', (code) => done(code ?? 1));
  });
}
