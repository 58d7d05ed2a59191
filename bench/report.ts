/**
 * Benchmark result types, the three CPU bench targets (judged met / missed), and the printed and
 * markdown tables. FLOPs and bytes come from `plan()` (formulas in docs/benchmarks.md).
 */
import { type L2Record, judgedSizes, l2Label, l2Line } from './l2.js';
import type { DenseRep, MobaRep } from './measure.js';

/** Results at one sequence length. Times are medians in ms (null when not measured). */
export interface SizeResult {
  readonly T: number;
  /** Whether `flushL2()` ran before each timed repetition of this size (`--flush-l2`; absent in older results: no). */
  readonly l2Flushed?: boolean;
  /** plan().attendedPairs / causalPairs. */
  readonly attendedFraction: number;
  readonly flops: {
    readonly route: number; readonly mobaForward: number; readonly mobaFwdBwd: number; readonly forwardKernel: number;
    readonly denseForward: number; readonly denseFwdBwd: number;
  };
  readonly bytes: {
    readonly route: number; readonly mobaForward: number; readonly mobaFwdBwd: number;
    readonly denseForward: number; readonly denseFwdBwd: number;
  };
  readonly ms: {
    readonly route: number; readonly mobaForward: number; readonly mobaFwdBwd: number; readonly forwardKernel: number;
    readonly denseForward: number | null; readonly denseFwdBwd: number | null;
  };
  /** Every timed repetition (ms per phase). */
  readonly reps: { readonly moba: readonly MobaRep[]; readonly dense: readonly DenseRep[] | null };
}

/** One CPU bench target and whether this run met it. */
export interface Target {
  readonly name: string;
  readonly target: string;
  readonly value: string;
  /** null: not measured in this run. */
  readonly met: boolean | null;
  readonly note?: string;
}

/** Everything one bench run measured; written as the results JSON. */
export interface BenchResult {
  readonly machine: {
    readonly cpu: string; readonly cores: number; readonly node: string; readonly platform: string; readonly host: string; readonly hostKind: string;
    /** `os.loadavg()` (1, 5, 15 min) when the run started and ended: load from other processes slows every time. */
    readonly loadAverage: { readonly start: readonly number[]; readonly end: readonly number[] };
  };
  readonly date: string;
  readonly command: string;
  readonly gitCommit: string | null;
  readonly backend: { readonly name: string; readonly threads: number };
  /** `--flush-l2` and whether the backend could flush (absent in older results: not asked). */
  readonly l2Flush?: L2Record;
  readonly problem: {
    readonly Hq: number; readonly Hkv: number; readonly D: number; readonly blockSize: number; readonly topk: number;
    readonly dtype: string; readonly sequences: number; readonly reps: number;
  };
  readonly sizes: readonly SizeResult[];
  /** MoBA forward + backward at the largest T: 1 thread vs `threads`, repetitions interleaved. */
  readonly scaling: {
    readonly T: number;
    readonly threads: number;
    readonly oneThread: { readonly mobaFwdBwdMs: number; readonly forwardKernelMs: number };
    readonly nThreads: { readonly mobaFwdBwdMs: number; readonly forwardKernelMs: number };
    readonly speedup: number;
    /** Forward kernel (routing given) FLOPs / time with one thread. */
    readonly forwardGflopsPerThread: number;
  } | null;
  readonly targets: readonly Target[];
}

/** The targets: fwd+bwd speedup ≥ ½ FLOP ratio at 16K; ≥ 3 GFLOP/s per thread forward; 2 threads ≥ 1.7× one. */
export function evaluateTargets(r: BenchResult): Target[] {
  const out: Target[] = [];
  const sizes = judgedSizes(r.sizes); // with --flush-l2 both: the flushed sizes
  const at16k = sizes.find((s) => s.T === 16384);
  const big = at16k ?? sizes[sizes.length - 1];
  if (big) {
    const ratio = big.flops.denseFwdBwd / big.flops.mobaFwdBwd;
    const speedup = big.ms.denseFwdBwd !== null ? big.ms.denseFwdBwd / big.ms.mobaFwdBwd : null;
    out.push({
      name: `fwd+bwd speedup over dense at T = ${big.T}`,
      target: `≥ ½ × FLOP ratio = ${(ratio / 2).toFixed(2)}×`,
      value: speedup !== null ? `${speedup.toFixed(2)}× (FLOP ratio ${ratio.toFixed(2)}×, ${(speedup / ratio * 100).toFixed(0)}% of it)` : 'dense not measured',
      met: speedup !== null ? speedup >= ratio / 2 : null,
      ...(at16k ? {} : { note: 'T = 16384 was not run: judged at the largest T' }),
    });
  }
  if (r.scaling) {
    const g = r.scaling.forwardGflopsPerThread;
    out.push({ name: `forward inner loops, GFLOP/s per thread (1 thread, T = ${r.scaling.T})`, target: '≥ 3 GFLOP/s', value: `${g.toFixed(2)} GFLOP/s`, met: g >= 3 });
    out.push({
      name: `thread scaling, MoBA fwd+bwd at T = ${r.scaling.T}`, target: `${r.scaling.threads} threads ≥ 1.7× one`,
      value: `${r.scaling.speedup.toFixed(2)}×`, met: r.scaling.speedup >= 1.7,
      ...(r.scaling.threads !== 2 ? { note: `measured with ${r.scaling.threads} threads` } : {}),
    });
  } else if (big) {
    const g = big.flops.forwardKernel / (big.ms.forwardKernel * 1e6) / r.backend.threads;
    out.push({ name: `forward inner loops, GFLOP/s per thread (T = ${big.T})`, target: '≥ 3 GFLOP/s', value: `${g.toFixed(2)} GFLOP/s`, met: g >= 3, note: `${r.backend.threads} thread(s): total rate / threads (no 1-thread run)` });
    out.push({ name: 'thread scaling', target: '2 threads ≥ 1.7× one', value: 'not measured', met: null });
  }
  return out;
}

const ms = (x: number | null): string => (x === null ? '–' : x >= 1000 ? `${(x / 1000).toFixed(2)} s` : `${x.toFixed(1)} ms`);
const gf = (x: number): string => (x / 1e9).toFixed(2);
const rate = (flops: number, t: number | null): string => (t === null || t <= 0 ? '–' : (flops / (t * 1e6)).toFixed(2));
const mb = (x: number): string => (x / 2 ** 20).toFixed(1);
/** The largest MoBA peak (`memoryStats().peakBytes`) over a size's repetitions, in MiB. */
const peakMb = (s: SizeResult): string => {
  const p = s.reps.moba.map((r) => r.peakBytes).filter((x) => typeof x === 'number');
  return p.length > 0 ? mb(Math.max(...p)) : '–';
};
const mark = (m: boolean | null): string => (m === null ? 'not measured' : m ? 'met' : 'MISSED');

type Row = readonly string[];

function rows(r: BenchResult): Row[] {
  const out: Row[] = [];
  for (const s of r.sizes) {
    const T = l2Label(String(s.T), s.l2Flushed, r.l2Flush);
    const ratio = (d: number, m: number): string => (d / m).toFixed(2);
    const speed = (d: number | null, m: number): string => (d === null ? '–' : (d / m).toFixed(2));
    out.push([T, 'route', ms(s.ms.route), gf(s.flops.route), rate(s.flops.route, s.ms.route), '–', '–', '–', mb(s.bytes.route), '–', '–', '–']);
    out.push([
      T, 'forward', ms(s.ms.mobaForward), gf(s.flops.mobaForward), rate(s.flops.mobaForward, s.ms.mobaForward),
      ms(s.ms.denseForward), gf(s.flops.denseForward), rate(s.flops.denseForward, s.ms.denseForward),
      `${mb(s.bytes.mobaForward)} / ${mb(s.bytes.denseForward)}`, speed(s.ms.denseForward, s.ms.mobaForward), ratio(s.flops.denseForward, s.flops.mobaForward), '–',
    ]);
    out.push([
      T, 'fwd+bwd', ms(s.ms.mobaFwdBwd), gf(s.flops.mobaFwdBwd), rate(s.flops.mobaFwdBwd, s.ms.mobaFwdBwd),
      ms(s.ms.denseFwdBwd), gf(s.flops.denseFwdBwd), rate(s.flops.denseFwdBwd, s.ms.denseFwdBwd),
      `${mb(s.bytes.mobaFwdBwd)} / ${mb(s.bytes.denseFwdBwd)}`, speed(s.ms.denseFwdBwd, s.ms.mobaFwdBwd), ratio(s.flops.denseFwdBwd, s.flops.mobaFwdBwd), peakMb(s),
    ]);
  }
  return out;
}

const HEAD: Row = ['T', 'op', 'MoBA time', 'MoBA GFLOP', 'MoBA GFLOP/s', 'dense time', 'dense GFLOP', 'dense GFLOP/s', 'MB moved MoBA / dense', 'speedup', 'FLOP ratio', 'MoBA peak MiB'];

function header(r: BenchResult): string[] {
  const p = r.problem;
  const load = r.machine.loadAverage;
  const busy = load.start[0]! > 0.5;
  return [
    `MoBA vs dense causal attention, ${r.backend.name} backend, ${r.backend.threads} thread(s)`,
    `Hq = ${p.Hq}, Hkv = ${p.Hkv}, D = ${p.D}, block ${p.blockSize}, topk ${p.topk}, ${p.dtype}, ${p.sequences} sequence; median of ${p.reps} rep(s) after a warm-up`,
    `${r.machine.cpu}, ${r.machine.cores} cores, node ${r.machine.node}, ${r.date.slice(0, 10)}${r.gitCommit ? `, commit ${r.gitCommit.slice(0, 10)}` : ''}`,
    `load average (1 min) ${load.start[0]!.toFixed(2)} at the start, ${load.end[0]!.toFixed(2)} at the end` +
      (busy ? ': the machine was busy before the run started, so the times are pessimistic' : ''),
    l2Line(r.l2Flush, r.backend.name),
  ];
}

function scalingLines(r: BenchResult): string[] {
  const s = r.scaling;
  if (!s) return ['thread scaling: not measured'];
  return [
    `thread scaling at T = ${s.T} (repetitions interleaved): MoBA fwd+bwd ${ms(s.oneThread.mobaFwdBwdMs)} (1 thread) vs ${ms(s.nThreads.mobaFwdBwdMs)} (${s.threads} threads) = ${s.speedup.toFixed(2)}×;`,
    `  forward kernel (routing given) ${ms(s.oneThread.forwardKernelMs)} on 1 thread = ${s.forwardGflopsPerThread.toFixed(2)} GFLOP/s per thread`,
  ];
}

/** The table printed on stdout. */
export function textTable(r: BenchResult): string {
  const all = [HEAD, ...rows(r)];
  const w = HEAD.map((_, c) => Math.max(...all.map((row) => row[c]!.length)));
  const line = (row: Row): string => row.map((v, c) => (c < 2 ? v.padEnd(w[c]!) : v.padStart(w[c]!))).join('  ');
  const L = [...header(r), '', line(HEAD), w.map((n) => '-'.repeat(n)).join('  '), ...rows(r).map(line), '', ...scalingLines(r), '', 'targets:'];
  for (const t of r.targets) L.push(`  [${mark(t.met)}] ${t.name}: ${t.value} (target ${t.target})${t.note ? `; ${t.note}` : ''}`);
  return `${L.join('\n')}\n`;
}

/** The markdown report written next to the JSON. */
export function markdownReport(r: BenchResult): string {
  const [title, ...rest] = header(r);
  const L = [`# ${title}`, '', ...rest.map((x) => `${x}  `), '', `Command: \`${r.command}\``, ''];
  L.push(`| ${HEAD.join(' | ')} |`, `|${HEAD.map((_, c) => (c < 2 ? '---' : '---:')).join('|')}|`);
  for (const row of rows(r)) L.push(`| ${row.join(' | ')} |`);
  L.push('', 'speedup = dense time / MoBA time; FLOP ratio = dense FLOPs / MoBA FLOPs (MoBA FLOPs include routing); MoBA peak = the most of `memoryStats().peakBytes` over one route + forward + backward, inputs included (on the CPU an upper bound per call).', '');
  L.push(...scalingLines(r).map((x) => x.trim()), '', '## Targets', '', '| target | value | required | status |', '|---|---|---|---|');
  for (const t of r.targets) L.push(`| ${t.name}${t.note ? ` (${t.note})` : ''} | ${t.value} | ${t.target} | ${mark(t.met)} |`);
  return `${L.join('\n')}\n`;
}
