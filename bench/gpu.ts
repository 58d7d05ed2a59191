/**
 * The GPU bench: MoBA in the FlashMoBA paper's configuration on one backend, at N tokens per sequence
 * (batch packed varlen), then dense SDPA and the tensor-core matmul rate from torch (bench/sdpa.py, a child
 * process, after the backend is destroyed) and, on WebGPU, the f32 FMA peak of a WGSL kernel, all in one run;
 * FlashMoBA's published H200 numbers (gpu-report.ts) and our speed targets beside them.
 * Every op is timed from a drained device to a drained device: `backend.sync()` before and after each.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, hostname } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { type Backend, type DeviceTensor, type Layout, MobaError, hostTensor, plan, resolveConfig } from 'moba-ts';
import { type GpuFlags, kLabel } from './args.js';
import { openBackend } from './backends.js';
import { type FmaPeak, measureFmaPeak } from './fma-peak.js';
import { type GpuBenchResult, type GpuRep, type GpuSizeResult, PEERS_SOURCE, evaluateGpuTargets, gpuMarkdownReport, gpuTextTable, isPaperProblem } from './gpu-report.js';
import { type L2Record, flushOf, l2Passes } from './l2.js';
import { median } from './measure.js';
import { type SdpaOutcome, runSdpa } from './sdpa.js';

const HERE = dirname(fileURLToPath(import.meta.url));
const log = (s: string): void => void process.stderr.write(`bench: ${s}\n`);
/** Seconds since the process started. */
const elapsedS = (): number => performance.now() / 1000;

/** What the bench uses of a backend besides the contract (WebGPU, CUDA: its device). */
interface Extras {
  device?: unknown;
}

/**
 * Seeded random values of `dtype` into `out` (xorshift32): random sign, |x| in [1/8, 2) with random mantissa
 * bits. Fast enough for 2^31 elements (512K tokens · 16 heads · 128).
 */
export function fillRandom(out: Uint16Array | Float32Array, dtype: 'f32' | 'f16' | 'bf16', seed: number): void {
  let x = (Math.imul(seed, 0x9e3779b9) ^ 0x2545f491) >>> 0 || 1;
  const n = out.length;
  if (dtype === 'f32') {
    const o = out as Float32Array;
    for (let i = 0; i < n; i++) {
      x ^= x << 13; x ^= x >>> 17; x ^= x << 5;
      const m = 0.125 + ((x >>> 8) & 0xffff) * (1.875 / 65536);
      o[i] = x & 1 ? -m : m;
    }
    return;
  }
  // 16-bit: two values per xorshift step (bits 0–15 and 16–31), written as one u32 where aligned
  const o = out as Uint16Array;
  const [eBase, eShift, mMask] = dtype === 'bf16' ? [124, 7, 0x7f] : [12, 10, 0x3ff]; // exponent 124..127 (bf16), 12..15 (f16)
  const one = (r: number): number => (r & 0x8000) | ((eBase + ((r >>> 12) & 3)) << eShift) | (r & mMask);
  let i = 0;
  if (o.byteOffset % 4 === 0) {
    const w = new Uint32Array(o.buffer, o.byteOffset, n >>> 1);
    for (let j = 0; j < w.length; j++) {
      x ^= x << 13; x ^= x >>> 17; x ^= x << 5;
      w[j] = (one(x & 0xffff) | (one(x >>> 16) << 16)) >>> 0; // little-endian: element 2j is the low half
    }
    i = w.length * 2;
  }
  for (; i < n; i++) {
    x ^= x << 13; x ^= x >>> 17; x ^= x << 5;
    o[i] = one(x & 0xffff);
  }
}

const isMemoryError = (e: unknown): boolean => e instanceof MobaError && e.code === 'E_MEMORY';
const message = (e: unknown): string => (e instanceof Error ? e.message : String(e)).split('\n')[0]!;

interface SizeContext {
  readonly b: Backend;
  readonly f: GpuFlags;
  readonly sync: () => Promise<void>;
  /** Seconds since start after which no new repetition starts. */
  readonly deadlineS: number;
  /** The L2 passes of each size (`l2Passes`: not flushed and/or flushed before each timed repetition). */
  readonly passes: readonly boolean[];
}

/** Plans one N: shapes, layout, FLOPs. */
function planSize(f: GpuFlags, N: number): { T: number; layout: Layout; base: Pick<GpuSizeResult, 'N' | 'T' | 'attendedFraction' | 'flops'> } {
  const T = f.batch * N;
  const layout: Layout = { cuSeqlens: Int32Array.from({ length: f.batch + 1 }, (_, i) => i * N) };
  const p = plan({ T, Hq: f.heads, Hkv: f.kvHeads, D: f.headDim, dtype: f.dtype }, layout, resolveConfig({ blockSize: f.blockSize, topk: f.topk }, f.headDim));
  return {
    T, layout,
    base: {
      N, T, attendedFraction: p.attendedPairs / p.causalPairs,
      flops: { route: p.flops.route, forward: p.flops.forward, backward: p.flops.backward, denseForward: p.flops.denseForward, denseBackward: p.flops.denseBackward },
    },
  };
}

/** One N: inputs, a warm-up, then per L2 pass the timed repetitions on the same inputs (one result per pass). */
async function measureSize(c: SizeContext, N: number): Promise<{ results: GpuSizeResult[]; hostS: number }> {
  const { b, f, sync } = c;
  const { T, layout, base } = planSize(f, N);
  const cfg = { blockSize: f.blockSize, topk: f.topk };
  const owned: DeviceTensor[] = [];
  const t0 = elapsedS();
  let hostS = 0;
  try {
    // one host buffer, refilled per tensor (q and dOut are [T, Hq, D]; k and v [T, Hkv, D])
    const host = f.dtype === 'f32' ? new Float32Array(T * f.heads * f.headDim) : new Uint16Array(T * f.heads * f.headDim);
    const up = async (heads: number, seed: number): Promise<DeviceTensor> => {
      const data = host.subarray(0, T * heads * f.headDim);
      fillRandom(data, f.dtype, seed);
      const t = await b.upload(f.dtype === 'f32' ? hostTensor('f32', [T, heads, f.headDim], data as Float32Array) : hostTensor(f.dtype, [T, heads, f.headDim], data as Uint16Array));
      owned.push(t);
      return t;
    };
    const s = f.seed * 1000003 + N;
    const q = await up(f.heads, 4 * s + 1);
    const k = await up(f.kvHeads, 4 * s + 2);
    const v = await up(f.kvHeads, 4 * s + 3);
    const dOut = await up(f.heads, 4 * s + 4);
    await sync();
    hostS = elapsedS() - t0;
    log(`N=${kLabel(N)}: inputs ready in ${hostS.toFixed(1)} s`);
    const timed = async <R>(fn: () => Promise<R>): Promise<[R, number]> => {
      await sync();
      const t = performance.now();
      const r = await fn();
      await sync();
      return [r, performance.now() - t];
    };
    const rep = async (): Promise<GpuRep> => {
      const [routing, route] = await timed(() => b.route(q, k, layout, cfg));
      try {
        const [fwd, forward] = await timed(() => b.forward(q, k, v, routing, layout, cfg));
        try {
          const [g, backward] = await timed(() => b.backward(q, k, v, fwd.out, fwd.lse, dOut, routing, layout, cfg));
          b.dispose(g.dq, g.dk, g.dv);
          return { route, forward, backward };
        } finally {
          b.dispose(fwd.out, fwd.lse);
        }
      } finally {
        b.dispose(routing);
      }
    };
    const total = (r: GpuRep): number => r.route + r.forward + r.backward;
    // the contract's memory accounting (core MemoryStats): device allocations on CUDA and WebGPU, per-call bounds on the CPU
    const accounting = typeof b.memoryStats === 'function' && typeof b.resetPeakMemory === 'function';
    if (accounting) b.resetPeakMemory();
    const warmup = await rep(); // compilation, workspace growth; its peak is that of one route + fwd + bwd with the inputs live
    const peakBytes = accounting ? b.memoryStats().peakBytes : null;
    log(`N=${kLabel(N)}: warm-up ${total(warmup).toFixed(1)} ms${peakBytes !== null ? `, peak ${(peakBytes / 2 ** 30).toFixed(2)} GiB` : ''}`);
    const left = c.deadlineS - elapsedS();
    const nReps = Math.max(1, Math.min(f.reps, Math.floor((left * 1000) / Math.max(total(warmup) * c.passes.length, 1e-3))));
    const flush = flushOf(b);
    const results: GpuSizeResult[] = [];
    for (const l2Flushed of c.passes) {
      const reps: GpuRep[] = [];
      for (let i = 0; i < nReps; i++) {
        if (l2Flushed) await flush!(); // --flush-l2: outside the timed region, ends with a device sync
        const r = await rep();
        reps.push(r);
        log(`N=${kLabel(N)}${l2Flushed ? ' (L2 flushed)' : ''}: rep ${i + 1}/${nReps} route ${r.route.toFixed(2)}, fwd ${r.forward.toFixed(2)}, bwd ${r.backward.toFixed(2)} ms`);
      }
      results.push({
        ...base, l2Flushed, status: 'ok', warmup, reps, peakBytes,
        ...(nReps < f.reps ? { note: `${nReps} of ${f.reps} rep(s): --time-limit` } : {}),
        ms: {
          route: median(reps.map((r) => r.route)),
          attnForward: median(reps.map((r) => r.forward)),
          forward: median(reps.map((r) => r.route + r.forward)),
          backward: median(reps.map((r) => r.backward)),
          fwdBwd: median(reps.map(total)),
        },
      });
    }
    return { results, hostS };
  } catch (e) {
    log(`N=${kLabel(N)}: ${isMemoryError(e) ? 'does not fit' : 'FAILED'}: ${message(e)}`);
    const status = isMemoryError(e) ? 'does not fit' : 'failed';
    return { results: c.passes.map((l2Flushed) => ({ ...base, l2Flushed, status, note: message(e), ms: null, reps: [], warmup: null, peakBytes: null })), hostS };
  } finally {
    try {
      b.dispose(...owned);
    } catch { /* a lost device */ }
  }
}

function nvidiaSmi(): { gpu: string; driver: string } | null {
  try {
    const out = execFileSync('nvidia-smi', ['--query-gpu=name,driver_version', '--format=csv,noheader'], { encoding: 'utf8', timeout: 15000, stdio: ['ignore', 'pipe', 'ignore'] });
    const [gpu, driver] = (out.split('\n')[0] ?? '').split(',').map((s) => s.trim());
    return gpu ? { gpu, driver: driver ?? '' } : null;
  } catch {
    return null;
  }
}

function deviceInfo(b: Backend): Record<string, unknown> | null {
  const x = b as Backend & Extras & { device?: Record<string, unknown>; caps?: unknown };
  if (b.name === 'cuda' && x.device) return { ...x.device };
  if (b.name === 'webgpu' && x.device) {
    const d = x.device as unknown as { adapterInfo?: Record<string, unknown>; limits: Record<string, number>; features: Iterable<string> };
    const info = d.adapterInfo ? { vendor: d.adapterInfo.vendor, architecture: d.adapterInfo.architecture, device: d.adapterInfo.device, description: d.adapterInfo.description } : {};
    const limits = ['maxStorageBufferBindingSize', 'maxBufferSize', 'maxComputeWorkgroupStorageSize', 'maxComputeInvocationsPerWorkgroup'];
    return { adapter: info, limits: Object.fromEntries(limits.map((k) => [k, d.limits[k]])), features: [...d.features].sort() };
  }
  if (b.name === 'cpu') return { threads: (b as { threads?: unknown }).threads ?? null };
  return null;
}

/** The commit: embedded at bundle time (MOBA_BENCH_COMMIT), else git's HEAD, "+dirty" with uncommitted changes. */
export function benchCommit(): string | null {
  if (process.env.MOBA_BENCH_COMMIT) return process.env.MOBA_BENCH_COMMIT;
  try {
    const git = (...a: string[]): string => execFileSync('git', a, { cwd: HERE, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    const head = git('rev-parse', 'HEAD');
    return git('status', '--porcelain', '--untracked-files=no') ? `${head}+dirty` : head;
  } catch {
    return null;
  }
}

const slug = (s: string): string => s.toLowerCase().replace(/[^a-z0-9]+/g, '-').slice(0, 32).replace(/^-+|-+$/g, '') || 'unknown';

/** Runs the GPU bench; returns the exit code. */
export async function runGpuBench(f: GpuFlags): Promise<number> {
  const started = new Date();
  const wantTorch = f.dense || f.matmul;
  // MoBA may run until this many seconds since start; the rest of --time-limit is left to torch
  const mobaDeadline = f.timeLimitS - (wantTorch ? Math.min(240, 0.45 * f.timeLimitS) : 0);
  log(`${f.backend}: N = ${f.tokens.map(kLabel).join(', ')} (batch ${f.batch}), Hq ${f.heads}, Hkv ${f.kvHeads}, D ${f.headDim}, ${f.dtype}, B ${f.blockSize}, topk ${f.topk}; ${f.reps} rep(s) after a warm-up; time limit ${f.timeLimitS} s`);
  let b: Backend;
  try {
    b = await openBackend(f.backend, { ...(f.threads !== undefined ? { threads: f.threads } : {}), memoryBytes: f.memoryGb * 2 ** 30 });
  } catch (e) {
    process.stderr.write(`error: ${message(e)}\n`);
    return 1;
  }
  const l2: L2Record = { mode: f.flushL2, available: flushOf(b) !== undefined };
  const passes = l2Passes(l2);
  if (l2.mode !== 'off' && !l2.available) log(`--flush-l2 ${l2.mode}: the ${b.name} backend has no flushL2(), nothing is flushed`);
  const smi = nvidiaSmi();
  const device = deviceInfo(b);
  const gpuName = smi?.gpu ?? (b.name === 'cuda' ? String(device?.name ?? '') || null : b.name === 'webgpu' ? String((device?.adapter as Record<string, unknown> | undefined)?.description ?? '') || null : null);
  const notes: string[] = [];
  const sizes: GpuSizeResult[] = [];
  let fma: FmaPeak | null = null;
  let fmaNote: string | undefined;
  try {
    if (b.name === 'webgpu') {
      if (!f.fma) fmaNote = '--no-fma';
      else {
        try {
          fma = await measureFmaPeak((b as Backend & { device: Parameters<typeof measureFmaPeak>[0] }).device);
          log(`f32 FMA peak: ${(fma.gflopsBest / 1000).toFixed(2)} TFLOP/s best, ${(fma.gflopsMedian / 1000).toFixed(2)} median (${fma.iterations} iterations, ${fma.msMedian.toFixed(1)} ms)`);
        } catch (e) {
          fmaNote = `the FMA kernel failed: ${message(e)}`;
          log(fmaNote);
        }
      }
    } else if (!f.fma) fmaNote = '--no-fma';
    const sync = (): Promise<void> => b.sync();
    let prev: { N: number; repS: number; hostS: number } | null = null;
    for (const N of f.tokens) {
      if (prev) {
        const r = N / prev.N;
        const predicted = prev.hostS * r + prev.repS * r * r * (1 + passes.length); // inputs (linear) + warm-up and one rep per pass (quadratic at worst)
        if (elapsedS() + predicted > mobaDeadline) {
          const note = `predicted ≈ ${predicted.toFixed(0)} s, over the time left for MoBA (${Math.max(0, mobaDeadline - elapsedS()).toFixed(0)} s of --time-limit ${f.timeLimitS})`;
          log(`N=${kLabel(N)}: skipped: ${note}`);
          for (const l2Flushed of passes) sizes.push({ ...planSize(f, N).base, l2Flushed, status: 'skipped', note, ms: null, reps: [], warmup: null, peakBytes: null });
          continue;
        }
      }
      const { hostS, results } = await measureSize({ b, f, sync, deadlineS: mobaDeadline, passes }, N);
      sizes.push(...results);
      const res = results[0]!;
      if (res.ms) prev = { N, repS: res.ms.fwdBwd / 1000, hostS };
      else if (res.warmup) prev = { N, repS: (res.warmup.route + res.warmup.forward + res.warmup.backward) / 1000, hostS };
    }
  } finally {
    await b.destroy();
  }

  // -- torch: dense SDPA and the matmul rate, with the GPU to itself --
  let sdpa: SdpaOutcome;
  const denseTokens = f.dense ? f.tokens.filter((N) => f.denseMax === null || N <= f.denseMax) : [];
  const overMax = f.dense ? f.tokens.filter((N) => !denseTokens.includes(N)).map((N) => ({ N, skipped: `over --dense-max ${kLabel(f.denseMax!)}` })) : [];
  const budget = f.timeLimitS - elapsedS() - 5;
  if (!wantTorch) sdpa = { ok: false, error: '--no-torch (or --no-dense and --no-matmul)' };
  else if (budget < 20) sdpa = { ok: false, error: `no time left of --time-limit ${f.timeLimitS} s (${Math.max(0, budget).toFixed(0)} s)` };
  else {
    log(`torch: ${denseTokens.length ? `dense SDPA at N = ${denseTokens.map(kLabel).join(', ')}` : 'no dense'}${f.matmul ? ' + bf16 matmul rate' : ''} (${f.python}, budget ${budget.toFixed(0)} s)`);
    sdpa = await runSdpa({
      python: f.python, tokens: denseTokens, batch: f.batch, heads: f.heads, kvHeads: f.kvHeads, headDim: f.headDim, dtype: f.dtype,
      reps: f.denseReps, matmul: f.matmul, budgetS: budget, log: (s) => log(s),
    });
    if (!sdpa.ok) log(`SDPA not measured: ${sdpa.error}`);
  }
  const dense: GpuBenchResult['dense'] = sdpa.ok && f.dense
    ? { measured: true, torch: sdpa.torch, cuda: sdpa.cuda, device: sdpa.device, ...(sdpa.backend ? { backend: sdpa.backend } : {}), sizes: [...sdpa.sizes, ...overMax].sort((x, y) => x.N - y.N) }
    : { measured: false, reason: sdpa.ok ? '--no-dense' : sdpa.error, sizes: [] };
  const mm = sdpa.ok ? sdpa.matmul : null;
  const tensorCore = mm && mm.tflopsBest !== undefined && mm.tflopsMedian !== undefined ? { tflopsBest: mm.tflopsBest, tflopsMedian: mm.tflopsMedian, n: mm.n ?? 8192 } : null;
  const tensorCoreNote = tensorCore ? undefined : !f.matmul ? '--no-matmul' : sdpa.ok ? (mm?.error ?? 'no matmul result') : sdpa.error;
  if (b.name !== 'cuda' && b.name !== 'webgpu') notes.push(`the ${b.name} backend here only exercises the bench; its times say nothing about a GPU`);
  const flushNote = passes.includes(true) ? 'dense SDPA (torch) is not flushed' : 'no L2 flush between repetitions (the published peer measurements flushed L2 before each; --flush-l2)';
  notes.push(`${flushNote}; inputs are seeded random values with |x| in [1/8, 2)`);

  const problem = { batch: f.batch, Hq: f.heads, Hkv: f.kvHeads, D: f.headDim, blockSize: f.blockSize, topk: f.topk, dtype: f.dtype, causal: true as const, reps: f.reps, paper: false };
  problem.paper = isPaperProblem(problem);
  const result: GpuBenchResult = {
    kind: 'moba-gpu-bench',
    date: started.toISOString(),
    command: ['node', ...process.execArgv, relative(process.cwd(), process.argv[1] ?? ''), ...process.argv.slice(2)].join(' '),
    gitCommit: benchCommit(),
    machine: {
      host: hostname(), cpu: cpus()[0]?.model ?? 'unknown', node: process.version, platform: `${process.platform} ${process.arch}`,
      gpu: gpuName, driver: smi?.driver ?? null, device,
    },
    backend: { name: b.name },
    l2Flush: l2,
    problem,
    sizes,
    dense,
    rates: { tensorCore, ...(tensorCoreNote ? { tensorCoreNote } : {}), fma, ...(fmaNote ? { fmaNote } : {}) },
    peersSource: PEERS_SOURCE,
    targets: [],
    notes,
  };
  const withTargets: GpuBenchResult = { ...result, targets: evaluateGpuTargets(result) };
  process.stdout.write(gpuTextTable(withTargets));
  if (f.write) {
    mkdirSync(f.out, { recursive: true });
    const stem = `${started.toISOString().slice(0, 10)}-${b.name}-bench-${slug(gpuName ?? cpus()[0]?.model ?? 'unknown')}`;
    const json = join(f.out, `${stem}.json`);
    const md = join(f.out, `${stem}.md`);
    writeFileSync(json, `${JSON.stringify(withTargets, null, 2)}\n`);
    writeFileSync(md, gpuMarkdownReport(withTargets));
    process.stdout.write(`\nwrote ${relative(process.cwd(), json)} and ${relative(process.cwd(), md)}\n`);
  }
  return sizes.some((s) => s.status === 'failed') ? 1 : 0;
}
