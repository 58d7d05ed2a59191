/**
 * The GPU bench's results (pure: no I/O): types, the published peer measurements (FlashMoBA's and FA2's on the H200,
 * 2026-11-29), the CUDA and WebGPU speed targets
 * (met / MISSED / not measured) and the printed and markdown tables.
 */
import { kLabel } from './args.js';
import type { FmaPeak } from './fma-peak.js';
import { type L2Record, judgedSizes, l2Label, l2Line } from './l2.js';
import type { Target } from './report.js';
import type { SdpaSize } from './sdpa.js';

// ------------------------------------------------------------------------------------------- peers

/** Where the peers' numbers come from. */
export const PEERS_SOURCE =
  'the published peer measurements (FlashMoBA and FA2 on the H200, 2026-11-29): one NVIDIA H200, driver 580.159.04, torch 2.11.0+cu130; ' +
  'FlashMoBA v2.0.0 kernels (sm_90) and torch SDPA flash (FA2); batch 2 packed varlen, 16/16 heads, D 128, bf16, causal, B 128, topk 8; ' +
  'CUDA-event medians with an L2 flush before each repetition; forward includes routing; peak = torch max_memory_allocated over one fwd+bwd';

/** FlashMoBA on the H200 (ms; peak GiB), from FlashMoBA's H200 measurements (2026-11-29), by N (tokens per sequence). */
export const FLASHMOBA: Readonly<Record<number, { readonly fwd: number; readonly routing: number; readonly attnFwd: number; readonly bwd: number; readonly fwdBwd: number; readonly peakGiB: number }>> = {
  8192: { fwd: 3.74, routing: 1.16, attnFwd: 2.82, bwd: 2.14, fwdBwd: 5.87, peakGiB: 0.64 },
  16384: { fwd: 8.39, routing: 1.87, attnFwd: 6.08, bwd: 4.02, fwdBwd: 11.92, peakGiB: 1.27 },
  32768: { fwd: 17.6, routing: 4.23, attnFwd: 13.19, bwd: 7.67, fwdBwd: 25.19, peakGiB: 2.54 },
  65536: { fwd: 46.76, routing: 11.65, attnFwd: 35.07, bwd: 14.97, fwdBwd: 61.42, peakGiB: 5.08 },
  131072: { fwd: 139.45, routing: 34.38, attnFwd: 105.11, bwd: 29.47, fwdBwd: 167.68, peakGiB: 10.16 },
  262144: { fwd: 444.43, routing: 107.83, attnFwd: 336.29, bwd: 59.8, fwdBwd: 502.1, peakGiB: 20.32 },
  524288: { fwd: 1452.3, routing: 348.92, attnFwd: 1105.78, bwd: 121.57, fwdBwd: 1574.82, peakGiB: 40.63 },
};

/** Dense causal attention (torch SDPA flash = FA2) on the H200 from the published peer measurements (2026-11-29; ms; peak GiB): reference only. */
export const FA2_PEERS: Readonly<Record<number, { readonly fwd: number; readonly bwd: number; readonly fwdBwd: number; readonly peakGiB: number }>> = {
  8192: { fwd: 1.72, bwd: 5.06, fwdBwd: 6.78, peakGiB: 0.75 },
  16384: { fwd: 6.37, bwd: 18.24, fwdBwd: 24.61, peakGiB: 1.5 },
  32768: { fwd: 25.08, bwd: 68.97, fwdBwd: 94.05, peakGiB: 3.01 },
  65536: { fwd: 101.26, bwd: 270.31, fwdBwd: 371.58, peakGiB: 6.02 },
  131072: { fwd: 426.02, bwd: 1072.62, fwdBwd: 1498.63, peakGiB: 12.03 },
  262144: { fwd: 1752.34, bwd: 4280.25, fwdBwd: 6032.59, peakGiB: 24.06 },
  524288: { fwd: 7167.44, bwd: 17078.79, fwdBwd: 24246.23, peakGiB: 48.13 },
};

/** The paper configuration (batch 2, 16 heads, D 128, bf16, B 128, top-8): only then are FlashMoBA's numbers comparable. */
export const PAPER_PROBLEM = { batch: 2, Hq: 16, Hkv: 16, D: 128, blockSize: 128, topk: 8, dtype: 'bf16', causal: true } as const;

// ------------------------------------------------------------------------------------------- results

/** Milliseconds of each phase in one repetition (routing, attention forward given the routing, backward). */
export interface GpuRep {
  readonly route: number;
  readonly forward: number;
  readonly backward: number;
}

/** MoBA at one N. Times are medians in ms. */
export interface GpuSizeResult {
  /** Tokens per sequence. */
  readonly N: number;
  /** Tokens in the packed batch (batch · N). */
  readonly T: number;
  readonly status: 'ok' | 'does not fit' | 'skipped' | 'failed';
  /** Whether `flushL2()` ran before each timed repetition (`--flush-l2`; `both` gives two results per N; absent: no). */
  readonly l2Flushed?: boolean;
  /** Why a size was not measured (or a remark on one that was). */
  readonly note?: string;
  /** plan().attendedPairs / causalPairs. */
  readonly attendedFraction: number;
  /** From plan(): route, attention forward, backward, and dense causal attention's forward / backward. */
  readonly flops: { readonly route: number; readonly forward: number; readonly backward: number; readonly denseForward: number; readonly denseBackward: number };
  readonly ms: { readonly route: number; readonly attnForward: number; readonly forward: number; readonly backward: number; readonly fwdBwd: number } | null;
  /** Every timed repetition. */
  readonly reps: readonly GpuRep[];
  /** The warm-up repetition (compilation included). */
  readonly warmup: GpuRep | null;
  /** Peak device bytes over one route + forward + backward, inputs, outputs, gradients and workspace included; null: not measured. */
  readonly peakBytes: number | null;
}

export interface GpuBenchResult {
  readonly kind: 'moba-gpu-bench';
  readonly date: string;
  readonly command: string;
  readonly gitCommit: string | null;
  readonly machine: {
    readonly host: string; readonly cpu: string; readonly node: string; readonly platform: string;
    /** GPU name and NVIDIA driver (nvidia-smi), else what the backend reports; null on a machine without one. */
    readonly gpu: string | null; readonly driver: string | null;
    /** What the backend says about its device (CUDA: name, arch, SMs, driver API, NVRTC; WebGPU: adapter info, limits). */
    readonly device: Record<string, unknown> | null;
  };
  readonly backend: { readonly name: string };
  /** `--flush-l2` and whether the backend could flush (absent in older results: not asked). */
  readonly l2Flush?: L2Record;
  readonly problem: {
    readonly batch: number; readonly Hq: number; readonly Hkv: number; readonly D: number; readonly blockSize: number; readonly topk: number;
    readonly dtype: string; readonly causal: true; readonly reps: number; readonly paper: boolean;
  };
  readonly sizes: readonly GpuSizeResult[];
  readonly dense: {
    readonly measured: boolean;
    /** Why dense SDPA was not measured at all. */
    readonly reason?: string;
    readonly torch?: string; readonly cuda?: string | null; readonly device?: string; readonly backend?: string;
    readonly sizes: readonly SdpaSize[];
  };
  readonly rates: {
    /** torch bf16 matmul in the same run (TFLOP/s): the tensor-core rate. */
    readonly tensorCore: { readonly tflopsBest: number; readonly tflopsMedian: number; readonly n: number } | null;
    readonly tensorCoreNote?: string;
    /** WebGPU: the f32 FMA peak of the WGSL kernel in the same run. */
    readonly fma: FmaPeak | null;
    readonly fmaNote?: string;
  };
  readonly peersSource: string;
  readonly targets: readonly Target[];
  readonly notes: readonly string[];
}

// ------------------------------------------------------------------------------------------- targets

/** fwd+bwd speedup over FlashMoBA that the CUDA speed targets ask for at N: faster everywhere (≥ 8K), 2× from 128K, 3× at 512K. */
export function fmRequiredSpeedup(N: number): number {
  return N >= 524288 ? 3 : N >= 131072 ? 2 : 1;
}

/** Whether the run's configuration is the paper configuration, the one the published peer measurements used. */
export function isPaperProblem(p: GpuBenchResult['problem']): boolean {
  const w = PAPER_PROBLEM;
  return p.batch === w.batch && p.Hq === w.Hq && p.Hkv === w.Hkv && p.D === w.D && p.blockSize === w.blockSize && p.topk === w.topk && p.dtype === w.dtype;
}

const GiB = 2 ** 30;
const fmtMs = (x: number): string => (x >= 100 ? x.toFixed(1) : x.toFixed(2));
const fmtX = (x: number): string => `${x.toFixed(2)}×`;
const whyNot = (s: GpuSizeResult): string => `MoBA ${s.status}${s.note ? ` (${s.note})` : ''}`;

/**
 * The CUDA speed targets at every N ≥ 8K that the run asked for: fwd+bwd faster than FlashMoBA (2× from 128K,
 * 3× at 512K), forward (routing included) faster than dense SDPA measured in the same run, peak memory ≤
 * FlashMoBA's. Plus one line naming the published peer sizes the run did not cover.
 */
export function evaluateGpuTargets(r: GpuBenchResult): Target[] {
  if (r.backend.name === 'webgpu') return evaluateWebGpuTargets(r);
  const out: Target[] = [];
  const paper = isPaperProblem(r.problem);
  const notPaper = 'the configuration differs from the paper configuration (batch 2, 16/16 heads, D 128, bf16, B 128, topk 8)';
  for (const s of judgedSizes(r.sizes)) { // with --flush-l2 both: the flushed results, as the peers measured
    if (s.N < 8192) continue;
    const n = kLabel(s.N);
    const fm = FLASHMOBA[s.N];
    // fwd+bwd vs FlashMoBA
    const need = fmRequiredSpeedup(s.N);
    const fbTarget = need === 1 ? 'faster than FlashMoBA (> 1×)' : `≥ ${need}× faster than FlashMoBA`;
    if (!s.ms) out.push({ name: `fwd+bwd vs FlashMoBA, N = ${n}`, target: fbTarget, value: `not measured: ${whyNot(s)}`, met: null });
    else if (!fm || !paper) {
      out.push({ name: `fwd+bwd vs FlashMoBA, N = ${n}`, target: fbTarget, value: `${fmtMs(s.ms.fwdBwd)} ms`, met: null, note: !paper ? notPaper : `the published peer measurements have no FlashMoBA number at N = ${n}` });
    } else {
      const x = fm.fwdBwd / s.ms.fwdBwd;
      out.push({
        name: `fwd+bwd vs FlashMoBA, N = ${n}`, target: fbTarget, value: `${fmtMs(s.ms.fwdBwd)} ms vs ${fmtMs(fm.fwdBwd)} ms = ${fmtX(x)}`,
        met: need === 1 ? x > 1 : x >= need,
      });
    }
    // forward vs dense SDPA (same run)
    const d = r.dense.sizes.find((x) => x.N === s.N);
    const fa2 = FA2_PEERS[s.N];
    const ref = fa2 && paper ? `published FA2 forward ${fmtMs(fa2.fwd)} ms (reference only)` : undefined;
    const fwdTarget = 'faster than dense SDPA forward (same run)';
    if (!s.ms) out.push({ name: `forward (routing included) vs dense, N = ${n}`, target: fwdTarget, value: `not measured: ${whyNot(s)}`, met: null });
    else if (d?.fwdMs === undefined) {
      const why = !r.dense.measured ? (r.dense.reason ?? 'dense SDPA not measured') : d?.skipped ?? d?.error ?? 'dense SDPA was not run at this N';
      out.push({ name: `forward (routing included) vs dense, N = ${n}`, target: fwdTarget, value: `${fmtMs(s.ms.forward)} ms; dense not measured: ${why}`, met: null, ...(ref ? { note: ref } : {}) });
    } else {
      const x = d.fwdMs / s.ms.forward;
      out.push({ name: `forward (routing included) vs dense, N = ${n}`, target: fwdTarget, value: `${fmtMs(s.ms.forward)} ms vs ${fmtMs(d.fwdMs)} ms = ${fmtX(x)}`, met: s.ms.forward < d.fwdMs });
    }
    // peak memory vs FlashMoBA
    const memTarget = fm && paper ? `≤ FlashMoBA's ${fm.peakGiB.toFixed(2)} GiB` : "≤ FlashMoBA's";
    if (s.peakBytes === null) {
      out.push({ name: `peak memory vs FlashMoBA, N = ${n}`, target: memTarget, value: `not measured: ${s.status !== 'ok' ? whyNot(s) : `the ${r.backend.name} backend does not account its allocations`}`, met: null });
    } else if (!fm || !paper) {
      out.push({ name: `peak memory vs FlashMoBA, N = ${n}`, target: memTarget, value: `${(s.peakBytes / GiB).toFixed(2)} GiB`, met: null, note: !paper ? notPaper : `the published peer measurements have no FlashMoBA number at N = ${n}` });
    } else {
      out.push({ name: `peak memory vs FlashMoBA, N = ${n}`, target: memTarget, value: `${(s.peakBytes / GiB).toFixed(2)} GiB (${((s.peakBytes / GiB / fm.peakGiB) * 100).toFixed(0)}% of FlashMoBA's)`, met: s.peakBytes <= fm.peakGiB * GiB });
    }
  }
  const missing = Object.keys(FLASHMOBA).map(Number).filter((N) => !r.sizes.some((s) => s.N === N));
  if (missing.length > 0) {
    out.push({ name: 'published peer sizes not in this run', target: 'every N of the published peer measurements (8K … 512K)', value: `not measured: ${missing.map(kLabel).join(', ')}`, met: null });
  }
  return out;
}

/** fwd+bwd speedup over dense SDPA (same run) that the WebGPU speed targets ask of the WebGPU backend at 128K tokens per sequence. */
export const WEBGPU_DENSE_SPEEDUP = 2;
const WEBGPU_TARGET_N = 131072;

/**
 * The WebGPU speed targets at N = 128K: fwd+bwd at least 2× faster than dense SDPA measured in the same
 * run, and the forward's effective f32 rate reported as a fraction of the WGSL f32 FMA peak of the same run.
 */
export function evaluateWebGpuTargets(r: GpuBenchResult): Target[] {
  const n = kLabel(WEBGPU_TARGET_N);
  const s = judgedSizes(r.sizes).find((x) => x.N === WEBGPU_TARGET_N);
  const d = r.dense.sizes.find((x) => x.N === WEBGPU_TARGET_N);
  const speedName = `fwd+bwd vs dense SDPA, N = ${n}`;
  const speedTarget = `≥ ${WEBGPU_DENSE_SPEEDUP}× faster than dense SDPA (same run)`;
  const out: Target[] = [];
  if (!s) out.push({ name: speedName, target: speedTarget, value: `not measured: N = ${n} not in this run`, met: null });
  else if (!s.ms) out.push({ name: speedName, target: speedTarget, value: `not measured: ${whyNot(s)}`, met: null });
  else if (d?.fwdBwdMs === undefined) {
    const why = !r.dense.measured ? (r.dense.reason ?? 'dense SDPA not measured') : d?.skipped ?? d?.error ?? 'dense SDPA was not run at this N';
    out.push({ name: speedName, target: speedTarget, value: `${fmtMs(s.ms.fwdBwd)} ms; dense not measured: ${why}`, met: null });
  } else {
    const x = d.fwdBwdMs / s.ms.fwdBwd;
    out.push({ name: speedName, target: speedTarget, value: `${fmtMs(s.ms.fwdBwd)} ms vs ${fmtMs(d.fwdBwdMs)} ms = ${fmtX(x)}`, met: x >= WEBGPU_DENSE_SPEEDUP });
  }
  const rateName = `forward f32 rate as a fraction of the FMA peak, N = ${n}`;
  const rateTarget = 'reported (same run)';
  const fma = r.rates.fma;
  if (!s?.ms || !fma) {
    out.push({ name: rateName, target: rateTarget, value: `not measured: ${!s?.ms ? (s ? whyNot(s) : `N = ${n} not in this run`) : (r.rates.fmaNote ?? 'no FMA peak')}`, met: null });
  } else {
    const tflops = (s.flops.route + s.flops.forward) / s.ms.forward / 1e9;
    const peak = fma.gflopsBest / 1000;
    out.push({ name: rateName, target: rateTarget, value: `${tflops.toFixed(2)} TFLOP/s = ${((tflops / peak) * 100).toFixed(1)}% of ${peak.toFixed(2)} TFLOP/s`, met: true });
  }
  return out;
}

/** Which set of speed targets a result is judged by. */
const targetSet = (r: GpuBenchResult): string => (r.backend.name === 'webgpu' ? 'WebGPU' : `CUDA${r.backend.name !== 'cuda' ? '; set for the CUDA backend, shown for comparison' : ''}`);

/** Counts of met / MISSED / not measured. */
export function targetCounts(ts: readonly Target[]): { met: number; missed: number; notMeasured: number } {
  return { met: ts.filter((t) => t.met === true).length, missed: ts.filter((t) => t.met === false).length, notMeasured: ts.filter((t) => t.met === null).length };
}

// ------------------------------------------------------------------------------------------- tables

const mark = (m: boolean | null): string => (m === null ? 'not measured' : m ? 'met' : 'MISSED');
const dash = '–';
const tf = (flops: number, ms: number | undefined | null): number | null => (ms === undefined || ms === null || ms <= 0 ? null : flops / (ms * 1e9));
const fmtTf = (x: number | null): string => (x === null ? dash : x >= 10 ? x.toFixed(1) : x >= 0.1 ? x.toFixed(2) : x.toPrecision(2));
const pct = (x: number | null, ref: number | null): string => {
  if (x === null || ref === null) return dash;
  const v = (x / ref) * 100;
  return `${v >= 10 ? v.toFixed(0) : v >= 0.1 ? v.toFixed(1) : v.toPrecision(1)}%`;
};
const gib = (b: number | null | undefined): string => (b === null || b === undefined ? dash : (b / GiB).toFixed(2));
const ms = (x: number | null | undefined): string => (x === null || x === undefined ? dash : fmtMs(x));

/** The reference rate (TFLOP/s) the effective rates are compared with, and what it is. */
export function referenceRate(r: GpuBenchResult): { tflops: number; what: string } | null {
  if (r.backend.name === 'webgpu') return r.rates.fma ? { tflops: r.rates.fma.gflopsBest / 1000, what: 'f32 FMA peak (WGSL)' } : null;
  return r.rates.tensorCore ? { tflops: r.rates.tensorCore.tflopsBest, what: 'bf16 tensor-core matmul' } : null;
}

type Row = readonly string[];

function mobaTable(r: GpuBenchResult): { head: Row; rows: Row[] } {
  const ref = referenceRate(r);
  const refName = ref ? (r.backend.name === 'webgpu' ? '% of FMA peak' : '% of TC rate') : '% of peak';
  const head: Row = ['N', 'route ms', 'attn fwd ms', 'fwd ms (incl. route)', 'bwd ms', 'fwd+bwd ms', 'peak GiB', 'TFLOP/s route / attn fwd / fwd / bwd', `${refName} route / attn fwd / fwd / bwd`];
  const rows = r.sizes.map((s): Row => {
    const N = l2Label(kLabel(s.N), s.l2Flushed, r.l2Flush);
    if (!s.ms) return [N, s.status, ...Array<string>(7).fill(dash)];
    const rates = [tf(s.flops.route, s.ms.route), tf(s.flops.forward, s.ms.attnForward), tf(s.flops.route + s.flops.forward, s.ms.forward), tf(s.flops.backward, s.ms.backward)];
    const R = ref?.tflops ?? null;
    return [
      N, ms(s.ms.route), ms(s.ms.attnForward), ms(s.ms.forward), ms(s.ms.backward), ms(s.ms.fwdBwd), gib(s.peakBytes),
      rates.map(fmtTf).join(' / '), rates.map((x) => pct(x, R)).join(' / '),
    ];
  });
  return { head, rows };
}

function compareTable(r: GpuBenchResult): { head: Row; rows: Row[] } {
  const paper = isPaperProblem(r.problem);
  const head: Row = [
    'N', 'dense fwd', 'dense bwd', 'dense fwd+bwd', 'dense peak GiB', 'dense TFLOP/s fwd / bwd', 'fwd vs dense', 'fwd+bwd vs dense',
    'FM fwd', 'FM bwd', 'FM fwd+bwd', 'FM peak GiB', 'fwd+bwd vs FM',
  ];
  const rows = r.sizes.map((s): Row => {
    const d = r.dense.sizes.find((x) => x.N === s.N);
    const fm = paper ? FLASHMOBA[s.N] : undefined;
    const dcell = d?.fwdMs === undefined ? (d?.skipped ? 'skipped' : d?.error ? 'error' : dash) : ms(d.fwdMs);
    const speed = (den: number | undefined, mine: number | undefined): string => (den === undefined || mine === undefined ? dash : fmtX(den / mine));
    return [
      l2Label(kLabel(s.N), s.l2Flushed, r.l2Flush), dcell, ms(d?.bwdMs), ms(d?.fwdBwdMs), gib(d?.peakBytes),
      d?.fwdMs !== undefined ? `${fmtTf(tf(s.flops.denseForward, d.fwdMs))} / ${fmtTf(tf(s.flops.denseBackward, d.bwdMs))}` : dash,
      speed(d?.fwdMs, s.ms?.forward), speed(d?.fwdBwdMs, s.ms?.fwdBwd),
      fm ? ms(fm.fwd) : dash, fm ? ms(fm.bwd) : dash, fm ? ms(fm.fwdBwd) : dash, fm ? fm.peakGiB.toFixed(2) : dash, speed(fm?.fwdBwd, s.ms?.fwdBwd),
    ];
  });
  return { head, rows };
}

/** Why a size (MoBA or dense) was not measured, or a remark on one that was: one line each. */
function footnotes(r: GpuBenchResult): string[] {
  const out: string[] = [];
  for (const s of r.sizes) if (s.note) out.push(`N = ${kLabel(s.N)}, MoBA ${s.status === 'ok' ? '' : `${s.status}: `}${s.note}`);
  for (const d of r.dense.sizes) {
    if (d.skipped || d.error) out.push(`N = ${kLabel(d.N)}, dense ${d.skipped ? `skipped: ${d.skipped}` : `error: ${d.error}`}`);
  }
  return out;
}

function header(r: GpuBenchResult): string[] {
  const p = r.problem;
  const L = [
    `MoBA on the ${r.backend.name} backend: ${p.batch} × N tokens (packed varlen), Hq ${p.Hq}, Hkv ${p.Hkv}, D ${p.D}, ${p.dtype}, causal, block ${p.blockSize}, topk ${p.topk}` +
      `${p.paper ? ' (the paper configuration)' : ''}; median of ${p.reps} rep(s) after a warm-up, every op waited for on the device`,
    `GPU: ${r.machine.gpu ?? 'none found'}${r.machine.driver ? `, driver ${r.machine.driver}` : ''}; node ${r.machine.node}, ${r.machine.platform}, host ${r.machine.host}; ${r.date.slice(0, 10)}${r.gitCommit ? `, commit ${r.gitCommit}` : ''}`,
  ];
  const tc = r.rates.tensorCore;
  L.push(tc ? `tensor-core rate (torch bf16 ${tc.n}³ matmul, same run): ${tc.tflopsBest.toFixed(1)} TFLOP/s best, ${tc.tflopsMedian.toFixed(1)} median` : `tensor-core rate: not measured: ${r.rates.tensorCoreNote ?? 'unknown'}`);
  if (r.backend.name === 'webgpu' || r.rates.fma || r.rates.fmaNote) {
    const f = r.rates.fma;
    L.push(f ? `f32 FMA peak (WGSL, ${f.invocations} invocations × ${f.iterations} iterations × ${f.chains * f.unroll} FMAs, same run): ${(f.gflopsBest / 1000).toFixed(2)} TFLOP/s best, ${(f.gflopsMedian / 1000).toFixed(2)} median`
      : `f32 FMA peak: not measured: ${r.rates.fmaNote ?? 'unknown'}`);
  }
  const d = r.dense;
  L.push(d.measured ? `dense: ${d.backend ?? 'torch SDPA'} on ${d.device ?? '?'} (torch ${d.torch ?? '?'}, CUDA ${d.cuda ?? '?'}), batch ${p.batch}, same shapes, same run` : `SDPA not measured: ${d.reason ?? 'unknown'}`);
  L.push('FM = FlashMoBA from its published H200 measurements (same GPU model, 2026-11-29; not this run)', l2Line(r.l2Flush, r.backend.name));
  return L;
}

function lines(head: Row, rows: readonly Row[]): string[] {
  const all = [head, ...rows];
  const w = head.map((_, c) => Math.max(...all.map((row) => (row[c] ?? '').length)));
  const line = (row: Row): string => row.map((v, c) => (c === 0 ? v.padEnd(w[c]!) : v.padStart(w[c]!))).join('  ');
  return [line(head), w.map((n) => '-'.repeat(n)).join('  '), ...rows.map(line)];
}

function md(head: Row, rows: readonly Row[]): string[] {
  return [`| ${head.join(' | ')} |`, `|${head.map((_, c) => (c === 0 ? '---' : '---:')).join('|')}|`, ...rows.map((r) => `| ${r.join(' | ')} |`)];
}

const LEGEND = [
  'route = backend.route (centroids, top-k, collect); attn fwd = backend.forward given the routing; fwd = route + attn fwd; fwd+bwd = route + attn fwd + backward (same repetition).',
  'TFLOP/s = plan() FLOPs / time (fwd counts route + attention FLOPs); dense TFLOP/s use causal FLOPs. "x vs dense" / "vs FM" = their time / ours (> 1: MoBA faster).',
];

function targetLines(r: GpuBenchResult): string[] {
  const c = targetCounts(r.targets);
  const L = [`targets (${targetSet(r)}): ${c.met} met, ${c.missed} MISSED, ${c.notMeasured} not measured`];
  for (const t of r.targets) L.push(`  [${mark(t.met)}] ${t.name}: ${t.value} (target ${t.target})${t.note ? `; ${t.note}` : ''}`);
  return L;
}

/** The table printed on stdout. */
export function gpuTextTable(r: GpuBenchResult): string {
  const a = mobaTable(r);
  const b = compareTable(r);
  const L = [...header(r), '', 'MoBA (ms):', ...lines(a.head, a.rows), '', 'dense SDPA (this run) and FlashMoBA (published, 2026-11-29), ms:', ...lines(b.head, b.rows), '', ...LEGEND];
  const notes = [...footnotes(r), ...r.notes];
  if (notes.length) L.push('', ...notes.map((n) => `note: ${n}`));
  L.push('', ...targetLines(r));
  return `${L.join('\n')}\n`;
}

/** The markdown report written next to the JSON. */
export function gpuMarkdownReport(r: GpuBenchResult): string {
  const [title, ...rest] = header(r);
  const a = mobaTable(r);
  const b = compareTable(r);
  const L = [`# ${title}`, '', ...rest.map((x) => `${x}  `), '', `Command: \`${r.command}\``, '', '## MoBA (ms)', '', ...md(a.head, a.rows), ''];
  L.push('## Dense SDPA (this run) and FlashMoBA (published, 2026-11-29), ms', '', ...md(b.head, b.rows), '', ...LEGEND.map((x) => `${x}  `), '');
  const notes = [...footnotes(r), ...r.notes];
  if (notes.length) L.push('## Notes', '', ...notes.map((n) => `- ${n}`), '');
  const c = targetCounts(r.targets);
  L.push(`## Targets (${targetSet(r)})`, '', `${c.met} met, ${c.missed} MISSED, ${c.notMeasured} not measured.`, '');
  L.push('| target | value | required | status |', '|---|---|---|---|');
  for (const t of r.targets) L.push(`| ${t.name}${t.note ? ` (${t.note})` : ''} | ${t.value} | ${t.target} | ${mark(t.met)} |`);
  L.push('', `FlashMoBA and FA2 reference numbers: ${PEERS_SOURCE}.`);
  return `${L.join('\n')}\n`;
}
