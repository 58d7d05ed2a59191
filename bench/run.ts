/**
 * Benchmark runner. The CPU bench: MoBA vs dense causal attention on one backend, for T = 2K…16K (Hq = Hkv = 4,
 * D = 64, B = 64, topk = 8, f32, one sequence by default). Prints a table, checks the targets and
 * writes `bench/results/<date>-<backend>-<host>.json` and `<date>-<backend>.md`. See bench/README.md.
 * Usage: `pnpm bench -- --backend cpu [--quick] [--tokens 2K,4K] [--reps 5] …`
 * `--backend cuda|webgpu` (or `--paper`) runs the GPU bench instead (bench/gpu.ts; the CUDA and WebGPU speed targets).
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { availableParallelism, cpus, hostname, loadavg } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { type Backend, type MobaConfig, plan, resolveConfig } from 'moba-ts';
import { checkOutputDir, reportError } from '@moba/testkit';
import { CPU_HELP, type CpuFlags, GPU_HELP, benchMode, parseCpuFlags, parseGpuFlags } from './args.js';
import { openBackend } from './backends.js';
import { DECODE_HELP, parseDecodeFlags } from './decode-args.js';
import { decodeMarkdown, decodeTable } from './decode-report.js';
import { joinTorch, runTorchDecode } from './decode-sdpa.js';
import { measureDecode } from './decode.js';
import { runGpuBench } from './gpu.js';
import { type L2Record, flushOf, l2Passes } from './l2.js';
import { type BenchShape, type DenseRep, type MobaRep, denseOf, denseRep, median, mobaRep, uploadInputs } from './measure.js';
import { type BenchResult, type SizeResult, evaluateTargets, markdownReport, textTable } from './report.js';

const HERE = dirname(fileURLToPath(import.meta.url));

const log = (s: string): void => void process.stderr.write(`bench: ${s}\n`);

function threadsOf(b: Backend, asked: number | undefined): number {
  const t = (b as { threads?: unknown }).threads;
  return typeof t === 'number' ? t : asked ?? (b.name === 'cpu' ? availableParallelism() : 1);
}

/** Runs `reps` timed repetitions after one warm-up repetition (skipped when `warm` is false); `before` (untimed) precedes each timed one. */
async function repeat<R>(label: string, reps: number, warm: boolean, rep: () => Promise<R>, total: (r: R) => number, before?: () => Promise<void>): Promise<R[]> {
  if (warm) {
    const r = await rep();
    log(`${label} warm-up ${(total(r) / 1000).toFixed(2)} s`);
  }
  const out: R[] = [];
  for (let i = 0; i < reps; i++) {
    if (before) await before(); // the L2 flush (--flush-l2): outside the timed region, ends with a device sync
    const r = await rep();
    out.push(r);
    log(`${label} rep ${i + 1}/${reps} ${(total(r) / 1000).toFixed(2)} s`);
  }
  return out;
}

/** One size: per L2 pass (`l2Passes`: not flushed and/or flushed) MoBA and dense repetitions on the same inputs, warmed up once. */
async function measureSize(b: Backend, s: BenchShape, cfg: MobaConfig, f: CpuFlags, warmDense: boolean, l2: L2Record): Promise<SizeResult[]> {
  const x = await uploadInputs(b, s, f.seed);
  const mobaTotal = (r: MobaRep): number => r.route + r.forward + r.backward;
  const dense = f.dense ? denseOf(b) : undefined;
  const flush = flushOf(b);
  const out: SizeResult[] = [];
  for (const [i, flushed] of l2Passes(l2).entries()) {
    const before = flushed ? flush : undefined;
    const tag = `T=${s.T}${flushed ? ' (L2 flushed)' : ''}`;
    const m = await repeat(`${tag} moba`, f.reps, i === 0, () => mobaRep(b, x, cfg), mobaTotal, before);
    let d: DenseRep[] | null = null;
    if (dense) d = await repeat(`${tag} dense`, f.reps, warmDense && i === 0, () => denseRep(b, dense, x), (r) => r.forward + r.backward, before);
    out.push(sizeResult(s, cfg, m, d, flushed));
  }
  b.dispose(x.q, x.k, x.v, x.dOut);
  return out;
}

function sizeResult(s: BenchShape, cfg: MobaConfig, m: MobaRep[], d: DenseRep[] | null, l2Flushed: boolean): SizeResult {
  const p = plan(s, { cuSeqlens: Int32Array.of(0, s.T) }, resolveConfig(cfg, s.D));
  const mobaTotal = (r: MobaRep): number => r.route + r.forward + r.backward;
  const eb = s.dtype === 'f32' ? 4 : 2;
  const routeBytes = (s.T * s.Hq * s.D + s.T * s.Hkv * s.D) * eb + s.T * s.Hq * cfg.topk * 4; // read q, k; write indices
  const indexBytes = s.T * s.Hq * cfg.topk * 4;
  return {
    T: s.T,
    l2Flushed,
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

/** moba-ts's version, read only when asked (the bundled bench on the GPU machine has no package.json beside it). */
function version(): string {
  try {
    return (createRequire(import.meta.url)('moba-ts/package.json') as { version: string }).version;
  } catch {
    return 'unknown';
  }
}

async function main(argv: readonly string[]): Promise<number> {
  // Every flag, and the results folder, is checked before anything is measured (a usage error exits 2).
  if (argv.includes('--decode')) return runDecode(argv);
  const mode = benchMode(argv);
  const g = mode === 'gpu' ? parseGpuFlags(argv, join(HERE, 'results'), process.env, resolve) : null;
  const f = mode === 'cpu' ? parseCpuFlags(argv, join(HERE, 'results'), resolve) : mode;
  if (f === 'help' || g === 'help') {
    process.stdout.write(`${CPU_HELP}\n${GPU_HELP}\n${DECODE_HELP}`);
    return 0;
  }
  if (f === 'version' || g === 'version') {
    process.stdout.write(`moba-ts ${version()}\n`);
    return 0;
  }
  const dest = g ?? (f as Exclude<typeof f, string>);
  if (dest.write) checkOutputDir('out', dest.out);
  if (g) return await runGpuBench(g);
  if (typeof f === 'string') return 2; // not reached: mode is cpu here
  const cfg: MobaConfig = { blockSize: f.blockSize, topk: f.topk };
  const shapeAt = (T: number): BenchShape => ({ T, Hq: f.heads, Hkv: f.kvHeads ?? f.heads, D: f.headDim, dtype: f.dtype });
  const tokens = [...f.tokens].sort((a, b) => a - b);
  const loadStart = loadavg(); // other processes' load makes every time pessimistic: recorded with the results
  const b = await openBackend(f.backend, f.threads !== undefined ? { threads: f.threads } : {});
  const threads = threadsOf(b, f.threads);
  const l2: L2Record = { mode: f.flushL2, available: flushOf(b) !== undefined };
  log(`backend ${b.name}, ${threads} thread(s); T = ${tokens.join(', ')}; ${f.reps} rep(s) after a warm-up; --flush-l2 ${l2.mode}${l2.mode !== 'off' && !l2.available ? ` (the ${b.name} backend has no flushL2(): a no-op)` : ''}`);
  const sizes: SizeResult[] = [];
  try {
    for (const [i, T] of tokens.entries()) sizes.push(...(await measureSize(b, shapeAt(T), cfg, f, i === 0, l2)));
  } finally {
    await b.destroy();
  }

  // -- thread scaling: MoBA fwd+bwd at the largest T on a 1-thread and an N-thread backend, repetitions
  // interleaved (1, N, 1, N, …) so that both see the same background load --
  let scaling: BenchResult['scaling'] = null;
  if (f.scaling && b.name === 'cpu' && threads > 1) {
    const T = tokens[tokens.length - 1]!;
    const one = await openBackend(f.backend, { threads: 1 });
    const many = await openBackend(f.backend, { threads });
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
    l2Flush: l2,
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

/** The decode bench (bench/decode.ts): flags and results folder checked first, then measured, printed, written. */
async function runDecode(argv: readonly string[]): Promise<number> {
  const f = parseDecodeFlags(argv, join(HERE, 'results'), resolve);
  if (f === 'help' || f === 'version') {
    process.stdout.write(f === 'help' ? DECODE_HELP : `moba-ts ${version()}\n`);
    return 0;
  }
  if (f.write) checkOutputDir('out', f.out);
  const loadStart = loadavg();
  const b = await openBackend(f.backend, { ...(f.threads !== undefined ? { threads: f.threads } : {}), ...(f.memoryBytes !== undefined ? { memoryBytes: f.memoryBytes } : {}) });
  let measured: Awaited<ReturnType<typeof measureDecode>>;
  try {
    log(`decode bench on ${b.name}: heads ${f.heads.map((h) => h.join('/')).join(', ')}; N = ${f.contexts.join(', ')}; batch ${f.batch.join(', ')}`);
    measured = await measureDecode(b, f);
  } finally {
    await b.destroy();
  }
  log(f.torch ? `torch: SDPA dense decode of every row (${f.python ?? (process.env.MOBA_PYTHON || 'python3')} bench/sdpa-decode.py)` : 'torch: --no-torch');
  const torch = await runTorchDecode(f, { log });
  if (!torch.ok) log(`SDPA not measured: ${torch.error}`);
  const now = new Date();
  const machine = { cpu: cpus()[0]?.model ?? 'unknown', cores: availableParallelism(), node: process.version, hostKind: hostKind(), threads: threadsOf(b, f.threads), loadAverage: { start: loadStart, end: loadavg() } };
  const command = ['node', ...process.execArgv, relative(process.cwd(), process.argv[1] ?? ''), ...process.argv.slice(2)].join(' ');
  const r = { machine, date: now.toISOString(), command, gitCommit: gitCommit(), ...measured, ...joinTorch(measured.cases, torch) };
  process.stdout.write(decodeTable(r));
  if (f.write) {
    mkdirSync(f.out, { recursive: true });
    const day = now.toISOString().slice(0, 10);
    const json = join(f.out, `${day}-decode-${b.name}-${machine.hostKind}.json`);
    const md = join(f.out, `${day}-decode-${b.name}.md`);
    writeFileSync(json, `${JSON.stringify(r, null, 2)}\n`);
    writeFileSync(md, decodeMarkdown(r));
    process.stdout.write(`\nwrote ${relative(process.cwd(), json)} and ${relative(process.cwd(), md)}\n`);
  }
  return 0;
}

try {
  process.exitCode = await main(process.argv.slice(2));
} catch (e) {
  process.exitCode = reportError(e, 'pnpm bench -- --help', process.stderr);
}
