/**
 * Benchmark runner: MoBA vs dense causal attention on one backend, for T = 2K…16K (Hq = Hkv = 4,
 * D = 64, B = 64, topk = 8, f32, one sequence by default). Prints a table, checks the targets and
 * writes `bench/results/<date>-<backend>-<host>.json` and `<date>-<backend>.md`. See bench/README.md.
 * Usage: `pnpm bench -- --backend cpu [--quick] [--tokens 2K,4K] [--reps 5] …`
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { availableParallelism, cpus, hostname, loadavg } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { type Backend, type BackendKind, type MobaConfig, createBackend, plan, resolveConfig } from 'moba-ts';
import { type BenchShape, type DenseRep, type MobaRep, denseOf, denseRep, median, mobaRep, uploadInputs } from './measure.js';
import { type BenchResult, type SizeResult, evaluateTargets, markdownReport, textTable } from './report.js';

const HERE = dirname(fileURLToPath(import.meta.url));

const HELP = `usage: pnpm bench -- [flags]        (or: node --conditions=@moba/source --import tsx bench/run.ts [flags])

Times MoBA (routing, forward with routing, forward + backward) against the backend's dense causal
attention baseline at several sequence lengths, plus 1 vs N threads, and writes the results.

flags:
  --backend auto|cpu|webgpu|cuda   backend (default cpu)
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

interface Flags {
  backend: BackendKind; tokens: number[]; heads: number; kvHeads?: number; headDim: number; blockSize: number; topk: number;
  dtype: 'f32' | 'f16' | 'bf16'; reps: number; threads?: number; seed: number; quick: boolean; dense: boolean; scaling: boolean;
  out: string; write: boolean;
}

class UsageError extends Error {}

function size(flag: string, raw: string | undefined): number {
  const m = raw === undefined ? null : /^(\d+)([kK]?)$/.exec(raw);
  const n = m ? Number(m[1]) * (m[2] ? 1024 : 1) : NaN;
  if (!Number.isSafeInteger(n) || n < 1) throw new UsageError(`--${flag} ${raw ?? ''} is invalid: must be an integer >= 1 (K suffix allowed)`);
  return n;
}

function parse(argv: readonly string[]): Flags | 'help' {
  const f: Flags = {
    backend: 'cpu', tokens: [2048, 4096, 8192, 16384], heads: 4, headDim: 64, blockSize: 64, topk: 8, dtype: 'f32', reps: 3,
    seed: 1, quick: false, dense: true, scaling: true, out: join(HERE, 'results'), write: true,
  };
  let tokensGiven = false;
  let repsGiven = false;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const eq = a.indexOf('=');
    const name = a.startsWith('--') ? a.slice(2, eq < 0 ? undefined : eq) : a;
    const value = (): string | undefined => (eq >= 0 ? a.slice(eq + 1) : argv[++i]);
    switch (name) {
      case '': break; // pnpm passes a lone `--` through
      case 'help': case '-h': return 'help';
      case 'backend': {
        const v = value();
        if (v !== 'auto' && v !== 'cpu' && v !== 'webgpu' && v !== 'cuda') throw new UsageError(`--backend ${v ?? ''} is invalid: must be one of auto, cpu, webgpu, cuda`);
        f.backend = v;
        break;
      }
      case 'tokens': f.tokens = (value() ?? '').split(',').map((t) => size('tokens', t)); tokensGiven = true; break;
      case 'heads': f.heads = size(name, value()); break;
      case 'kv-heads': f.kvHeads = size(name, value()); break;
      case 'head-dim': f.headDim = size(name, value()); break;
      case 'block-size': f.blockSize = size(name, value()); break;
      case 'topk': f.topk = size(name, value()); break;
      case 'reps': f.reps = size(name, value()); repsGiven = true; break;
      case 'threads': f.threads = size(name, value()); break;
      case 'seed': f.seed = size(name, value()); break;
      case 'dtype': {
        const v = value();
        if (v !== 'f32' && v !== 'f16' && v !== 'bf16') throw new UsageError(`--dtype ${v ?? ''} is invalid: must be one of f32, f16, bf16`);
        f.dtype = v;
        break;
      }
      case 'quick': f.quick = true; break;
      case 'no-dense': f.dense = false; break;
      case 'no-scaling': f.scaling = false; break;
      case 'no-write': f.write = false; break;
      case 'out': {
        const v = value();
        if (!v) throw new UsageError('--out needs a folder');
        f.out = resolve(v);
        break;
      }
      default: throw new UsageError(`unknown flag ${a} (see --help)`);
    }
  }
  if (f.quick && !tokensGiven) f.tokens = [2048, 4096];
  if (f.quick && !repsGiven) f.reps = 2;
  if (f.heads % (f.kvHeads ?? f.heads) !== 0) throw new UsageError(`--heads ${f.heads} is not a multiple of --kv-heads ${f.kvHeads}`);
  return f;
}

const log = (s: string): void => void process.stderr.write(`bench: ${s}\n`);

function threadsOf(b: Backend, asked: number | undefined): number {
  const t = (b as { threads?: unknown }).threads;
  return typeof t === 'number' ? t : asked ?? (b.name === 'cpu' ? availableParallelism() : 1);
}

/** Runs `reps` timed repetitions after one warm-up repetition (skipped when `warm` is false). */
async function repeat<R>(label: string, reps: number, warm: boolean, rep: () => Promise<R>, total: (r: R) => number): Promise<R[]> {
  if (warm) {
    const r = await rep();
    log(`${label} warm-up ${(total(r) / 1000).toFixed(2)} s`);
  }
  const out: R[] = [];
  for (let i = 0; i < reps; i++) {
    const r = await rep();
    out.push(r);
    log(`${label} rep ${i + 1}/${reps} ${(total(r) / 1000).toFixed(2)} s`);
  }
  return out;
}

async function measureSize(b: Backend, s: BenchShape, cfg: MobaConfig, f: Flags, warmDense: boolean): Promise<SizeResult> {
  const layout = { cuSeqlens: Int32Array.of(0, s.T) };
  const p = plan(s, layout, resolveConfig(cfg, s.D));
  const x = await uploadInputs(b, s, f.seed);
  const mobaTotal = (r: MobaRep): number => r.route + r.forward + r.backward;
  const m = await repeat(`T=${s.T} moba`, f.reps, true, () => mobaRep(b, x, cfg), mobaTotal);
  const dense = f.dense ? denseOf(b) : undefined;
  let d: DenseRep[] | null = null;
  if (dense) d = await repeat(`T=${s.T} dense`, f.reps, warmDense, () => denseRep(b, dense, x), (r) => r.forward + r.backward);
  b.dispose(x.q, x.k, x.v, x.dOut);
  const eb = s.dtype === 'f32' ? 4 : 2;
  const routeBytes = (s.T * s.Hq * s.D + s.T * s.Hkv * s.D) * eb + s.T * s.Hq * cfg.topk * 4; // read q, k; write indices
  const indexBytes = s.T * s.Hq * cfg.topk * 4;
  return {
    T: s.T,
    attendedFraction: p.attendedPairs / p.causalPairs,
    flops: {
      route: p.flops.route,
      mobaForward: p.flops.route + p.flops.forward,
      mobaFwdBwd: p.flops.route + p.flops.forward + p.flops.backward,
      forwardKernel: p.flops.forward,
      denseForward: p.flops.denseForward,
      denseFwdBwd: p.flops.denseForward + p.flops.denseBackward,
    },
    bytes: {
      route: routeBytes,
      mobaForward: routeBytes + p.bytes.forward,
      mobaFwdBwd: routeBytes + p.bytes.forward + p.bytes.backward,
      denseForward: p.bytes.forward - indexBytes,
      denseFwdBwd: p.bytes.forward + p.bytes.backward - 2 * indexBytes,
    },
    ms: {
      route: median(m.map((r) => r.route)),
      mobaForward: median(m.map((r) => r.route + r.forward)),
      mobaFwdBwd: median(m.map(mobaTotal)),
      forwardKernel: median(m.map((r) => r.forward)),
      denseForward: d ? median(d.map((r) => r.forward)) : null,
      denseFwdBwd: d ? median(d.map((r) => r.forward + r.backward)) : null,
    },
    reps: { moba: m, dense: d },
  };
}

function hostKind(): string {
  const model = (cpus()[0]?.model ?? 'unknown-cpu').toLowerCase()
    .replace(/\((r|tm)\)/g, '').replace(/\bcpu\b/g, '').replace(/@.*$/, '').replace(/[^a-z0-9]+/g, '-').replace(/^-|-$/g, '');
  return `${model}-${availableParallelism()}c`;
}

function gitCommit(): string | null {
  try {
    return execFileSync('git', ['rev-parse', 'HEAD'], { cwd: HERE, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  } catch {
    return null;
  }
}

async function main(argv: readonly string[]): Promise<number> {
  let f: Flags | 'help';
  try {
    f = parse(argv);
  } catch (e) {
    if (e instanceof UsageError) {
      process.stderr.write(`error: ${e.message}\n`);
      return 2;
    }
    throw e;
  }
  if (f === 'help') {
    process.stdout.write(HELP);
    return 0;
  }
  const cfg: MobaConfig = { blockSize: f.blockSize, topk: f.topk };
  const shapeAt = (T: number): BenchShape => ({ T, Hq: f.heads, Hkv: f.kvHeads ?? f.heads, D: f.headDim, dtype: f.dtype });
  const tokens = [...f.tokens].sort((a, b) => a - b);
  const loadStart = loadavg(); // other processes' load makes every time pessimistic: recorded with the results
  const b = await createBackend(f.backend, f.threads !== undefined ? { threads: f.threads } : undefined);
  const threads = threadsOf(b, f.threads);
  log(`backend ${b.name}, ${threads} thread(s); T = ${tokens.join(', ')}; ${f.reps} rep(s) after a warm-up`);
  const sizes: SizeResult[] = [];
  try {
    for (const [i, T] of tokens.entries()) sizes.push(await measureSize(b, shapeAt(T), cfg, f, i === 0));
  } finally {
    await b.destroy();
  }

  // -- thread scaling: MoBA fwd+bwd at the largest T on a 1-thread and an N-thread backend, repetitions
  // interleaved (1, N, 1, N, …) so that both see the same background load --
  let scaling: BenchResult['scaling'] = null;
  if (f.scaling && b.name === 'cpu' && threads > 1) {
    const T = tokens[tokens.length - 1]!;
    const one = await createBackend(f.backend, { threads: 1 });
    const many = await createBackend(f.backend, { threads });
    try {
      const x1 = await uploadInputs(one, shapeAt(T), f.seed);
      const xn = await uploadInputs(many, shapeAt(T), f.seed);
      const total = (r: MobaRep): number => r.route + r.forward + r.backward;
      const pair = async (): Promise<[MobaRep, MobaRep]> => [await mobaRep(one, x1, cfg), await mobaRep(many, xn, cfg)];
      const reps = await repeat(`T=${T} moba 1 vs ${threads} threads`, f.reps, true, pair, ([r1, rn]) => total(r1) + total(rn));
      one.dispose(x1.q, x1.k, x1.v, x1.dOut);
      many.dispose(xn.q, xn.k, xn.v, xn.dOut);
      const fwdBwd1 = median(reps.map(([r1]) => total(r1)));
      const fwdBwdN = median(reps.map(([, rn]) => total(rn)));
      const fwd1 = median(reps.map(([r1]) => r1.forward));
      scaling = {
        T, threads,
        oneThread: { mobaFwdBwdMs: fwdBwd1, forwardKernelMs: fwd1 },
        nThreads: { mobaFwdBwdMs: fwdBwdN, forwardKernelMs: median(reps.map(([, rn]) => rn.forward)) },
        speedup: fwdBwd1 / fwdBwdN,
        forwardGflopsPerThread: sizes[sizes.length - 1]!.flops.forwardKernel / (fwd1 * 1e6),
      };
    } finally {
      await one.destroy();
      await many.destroy();
    }
  }

  const now = new Date();
  const result: BenchResult = {
    machine: {
      cpu: cpus()[0]?.model ?? 'unknown', cores: availableParallelism(), node: process.version, platform: `${process.platform} ${process.arch}`,
      host: hostname(), hostKind: hostKind(), loadAverage: { start: loadStart, end: loadavg() },
    },
    date: now.toISOString(),
    command: ['node', ...process.execArgv, relative(process.cwd(), process.argv[1] ?? ''), ...process.argv.slice(2)].join(' '),
    gitCommit: gitCommit(),
    backend: { name: b.name, threads },
    problem: { Hq: f.heads, Hkv: f.kvHeads ?? f.heads, D: f.headDim, blockSize: f.blockSize, topk: f.topk, dtype: f.dtype, sequences: 1, reps: f.reps },
    sizes,
    scaling,
    targets: [],
  };
  const withTargets: BenchResult = { ...result, targets: evaluateTargets(result) };
  process.stdout.write(textTable(withTargets));
  if (f.write) {
    mkdirSync(f.out, { recursive: true });
    const day = now.toISOString().slice(0, 10);
    const json = join(f.out, `${day}-${b.name}-${withTargets.machine.hostKind}.json`);
    const md = join(f.out, `${day}-${b.name}.md`);
    writeFileSync(json, `${JSON.stringify(withTargets, null, 2)}\n`);
    writeFileSync(md, markdownReport(withTargets));
    process.stdout.write(`\nwrote ${relative(process.cwd(), json)} and ${relative(process.cwd(), md)}\n`);
  }
  return 0;
}

try {
  process.exitCode = await main(process.argv.slice(2));
} catch (e) {
  process.stderr.write(`error: ${e instanceof Error ? e.message : String(e)}\n`);
  process.exitCode = 1;
}
