/**
 * The `moba` command line: `moba demo` (the main job), `moba info` (backends available here) and
 * `moba conformance` (the testkit's runner). `main(argv, io)` returns the exit code: 0 success, 1 a
 * MobaError or runtime failure (`error: <message>`), 2 a bad command line.
 */
import { spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import { availableParallelism, cpus } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { MobaError } from '@moba/core';
import { type FlagSpecs, UsageError, flagHelp, parseFlags } from './args.js';
import { listBackends } from './backends.js';
import { DEMO_DEFAULTS, type DemoOptions, runDemo } from './demo.js';
import { formatDemoReport } from './demo-report.js';
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
  info          lists the backends and whether each can run here (and why not)
  conformance   runs the backend conformance suite (the moba-conformance CLI of @moba/testkit)

run 'moba <command> --help' for the flags of a command; 'moba --version' prints the version.
`;

const DEMO_FLAGS = {
  backend: { type: 'enum', values: ['auto', 'cpu', 'webgpu', 'cuda'], default: DEMO_DEFAULTS.backend, help: 'backend to run on' },
  tokens: { type: 'int', min: 1, default: DEMO_DEFAULTS.tokens, help: 'total tokens T (8K style suffixes work)' },
  heads: { type: 'int', min: 1, max: 1024, default: DEMO_DEFAULTS.heads, help: 'query heads Hq' },
  'kv-heads': { type: 'int', min: 1, max: 1024, help: 'key/value heads Hkv, dividing Hq (default: Hq)' },
  'head-dim': { type: 'int', min: 1, max: 1024, default: DEMO_DEFAULTS.headDim, help: 'head dim D' },
  'block-size': { type: 'int', min: 1, default: DEMO_DEFAULTS.blockSize, help: 'tokens per key block' },
  topk: { type: 'int', min: 1, default: DEMO_DEFAULTS.topk, help: 'blocks per query, its own block included' },
  dtype: { type: 'enum', values: ['f32', 'f16', 'bf16'], default: DEMO_DEFAULTS.dtype, help: 'storage dtype of q, k, v' },
  kconv: { type: 'int', min: 0, max: 64, default: DEMO_DEFAULTS.kconv, meta: 'W', help: 'key convolution width: 0 off, 3 = kconv3, 5 = kconv5' },
  batch: { type: 'int', min: 1, default: DEMO_DEFAULTS.batch, help: 'split T into this many sequences (lengths differ by at most 1)' },
  seed: { type: 'int', min: 0, max: 2 ** 32 - 1, default: DEMO_DEFAULTS.seed, help: 'random seed of the inputs' },
  threads: { type: 'int', min: 1, max: 256, help: 'CPU worker threads (default: all cores)' },
  samples: { type: 'int', min: 1, default: DEMO_DEFAULTS.samples, help: 'query rows checked against the float64 reference' },
  svg: { type: 'string', meta: 'PATH', default: 'moba-routing.svg', help: 'where to write the routing heatmap' },
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

const CONFORMANCE_HELP = `usage: moba conformance [flags of moba-conformance]

Runs the conformance suite of @moba/testkit against a backend, e.g.
  moba conformance --backend cpu --cases path/to/golden
and ends with the line 'N passed, M failed'. Every flag goes to moba-conformance; see
'moba conformance --help' there for the list.
`;

/** Runs the CLI with `argv` (without node and script); resolves to the exit code. */
export async function main(argv: readonly string[], io: CliIo): Promise<number> {
  const [cmd, ...rest] = argv[0] === '--' ? argv.slice(1) : argv;
  try {
    switch (cmd) {
      case undefined:
        io.stderr.write(TOP_HELP);
        return 2;
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
      case 'info':
        return await info(rest, io);
      case 'conformance':
        return await conformance(rest, io);
      default:
        throw new UsageError(`unknown command '${cmd}': expected demo, info or conformance`);
    }
  } catch (e) {
    if (e instanceof UsageError) {
      io.stderr.write(`error: ${e.message}\nrun 'moba ${cmd && !cmd.startsWith('-') && cmd !== 'help' ? `${cmd} ` : ''}--help' for usage\n`);
      return 2;
    }
    if (e instanceof MobaError) {
      io.stderr.write(`error: ${e.message}\n`);
      return 1;
    }
    const err = e as Error;
    io.stderr.write(`error: ${err?.message ?? String(e)}\n${process.env.MOBA_DEBUG ? `${err?.stack ?? ''}\n` : ''}`);
    return 1;
  }
}

async function demo(argv: readonly string[], io: CliIo): Promise<number> {
  const { flags: f, help } = parseFlags(argv, DEMO_FLAGS);
  if (help) {
    io.stdout.write(DEMO_HELP);
    return 0;
  }
  const kvHeads = f['kv-heads'] ?? f.heads;
  if (f.heads % kvHeads !== 0) throw new UsageError(`--heads ${f.heads} is not a multiple of --kv-heads ${kvHeads}`);
  if (f.batch > f.tokens) throw new UsageError(`--batch ${f.batch} is larger than --tokens ${f.tokens}: every sequence needs at least one token`);
  const opts: DemoOptions = {
    backend: f.backend as DemoOptions['backend'], tokens: f.tokens, heads: f.heads, kvHeads, headDim: f['head-dim'],
    blockSize: f['block-size'], topk: f.topk, dtype: f.dtype as DemoOptions['dtype'], kconv: f.kconv, batch: f.batch,
    seed: f.seed, samples: f.samples, warmup: !f['no-warmup'],
    ...(f.threads !== undefined ? { threads: f.threads } : {}),
    ...(f['no-svg'] ? {} : { svg: f.svg }),
  };
  const report = await runDemo(opts, new Progress(io.stderr, 'moba demo'));
  io.stdout.write(f.json ? `${JSON.stringify(report, null, 2)}\n` : formatDemoReport(report));
  return 0;
}

async function info(argv: readonly string[], io: CliIo): Promise<number> {
  const { flags, help } = parseFlags(argv, INFO_FLAGS);
  if (help) {
    io.stdout.write(INFO_HELP);
    return 0;
  }
  const backends = await listBackends();
  const machine = {
    mobaTs: VERSION, node: process.version, platform: `${process.platform} ${process.arch}`,
    cores: availableParallelism(), cpu: cpus()[0]?.model ?? 'unknown',
  };
  if (flags.json) {
    io.stdout.write(`${JSON.stringify({ ...machine, backends }, null, 2)}\n`);
    return 0;
  }
  const L = [
    `moba-ts ${machine.mobaTs}, node ${machine.node}, ${machine.platform}, ${machine.cores} cores (${machine.cpu})`,
    '',
    'backends (createBackend(\'auto\') takes the first available, top to bottom):',
  ];
  for (const b of backends) {
    const status = b.available ? 'available' : 'not available';
    const detail = b.available ? `${b.package}${b.version ? ` ${b.version}` : ''}` : (b.reason ?? '');
    L.push(`  ${b.name.padEnd(8)}${status.padEnd(15)}${detail}`);
  }
  io.stdout.write(`${L.join('\n')}\n`);
  return 0;
}

/**
 * Forwards to the testkit's `moba-conformance` runner in a child process (its own exit code and
 * output), from sources when this CLI runs from sources, else from the installed bin.
 */
async function conformance(argv: readonly string[], io: CliIo): Promise<number> {
  if (argv.includes('--help') && argv.length === 1) io.stdout.write(CONFORMANCE_HELP);
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
