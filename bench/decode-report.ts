/**
 * Decode bench results: types and the printed and markdown tables; the device copy and read bandwidths they are
 * judged against are measured in decode-bandwidth.ts. Bytes and FLOPs per step come from `planCacheAttend`.
 */
import type { CacheAttendPlan } from 'moba-ts';
import { kLabel } from './args.js';
import type { Bandwidth, CopyBandwidth } from './decode-bandwidth.js';
import type { SdpaDense, TorchSummary } from './decode-sdpa.js';

export { type Bandwidth, type CopyBandwidth, measureCopyBandwidth, measureReadBandwidth, slopeCopy, slopeRate } from './decode-bandwidth.js';

/** Dense decode on the same cache (attend with topk covering every block). */
export type DenseDecode = { readonly attendMs: number; readonly reps: readonly number[] } | { readonly skipped: string } | null;

/** One (heads, N, batch) row: skipped (why), or measured; `sdpa`: torch SDPA dense decode of the row (decode-sdpa.ts). */
export type DecodeCase =
  | { readonly Hq: number; readonly Hkv: number; readonly N: number; readonly batch: number; readonly skipped: string; readonly sdpa?: SdpaDense }
  | {
    readonly Hq: number; readonly Hkv: number; readonly N: number; readonly batch: number; readonly sdpa?: SdpaDense;
    /** Tokens per sequence at the last timed step. */
    readonly length: number;
    /** Medians (ms): attend alone, and append + attend. */
    readonly attendMs: number; readonly stepMs: number;
    readonly reps: { readonly attend: readonly number[]; readonly step: readonly number[] };
    readonly plan: CacheAttendPlan;
    readonly dense: DenseDecode;
    /** WebGPU with MOBA_BENCH_PROFILE=1: GPU ms per kernel of one timed attend + append (timestamp queries). */
    readonly kernelMs?: Record<string, number>;
    /** Host ms per attend + append by op and phase (WebGPU: encode, error-scope wait). */
    readonly hostMs?: Record<string, number>;
  };

/** The chunked prefill of one heads pair, or why it was skipped. */
export type PrefillCase =
  | { readonly Hq: number; readonly Hkv: number; readonly context: number; readonly chunk: number; readonly skipped: string }
  | { readonly Hq: number; readonly Hkv: number; readonly context: number; readonly chunk: number; readonly stepMs: number; readonly reps: readonly number[]; readonly plan: CacheAttendPlan };

/** Everything a decode run writes to its JSON. */
export interface DecodeResult {
  readonly machine: Record<string, unknown>;
  readonly date: string;
  readonly command: string;
  readonly gitCommit: string | null;
  readonly backend: { readonly name: string };
  readonly problem: { readonly D: number; readonly blockSize: number; readonly topk: number; readonly dtype: string; readonly reps: number };
  readonly copy: CopyBandwidth;
  /** The streaming read bandwidth ("% read BW"): a read-and-reduce kernel (decode-bandwidth.ts); null figure when not measured. */
  readonly readBandwidth: Bandwidth;
  /** torch SDPA dense decode in the same run (bench/sdpa-decode.py), or why not. */
  readonly torch: TorchSummary;
  readonly cases: readonly DecodeCase[];
  readonly prefill: readonly PrefillCase[];
}

const f2 = (x: number): string => (x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x >= 1 ? x.toFixed(2) : x.toFixed(3));
const mib = (bytes: number): string => f2(bytes / 2 ** 20);

interface Row { cells: string[] }

/** The SDPA cells of a case: best ms (backend), torch dense / attend, and every backend's ms. */
function sdpaCells(c: DecodeCase): string[] {
  const d = c.sdpa;
  if (!d) return ['n/a', '', ''];
  if ('notMeasured' in d) return [`not measured: ${d.notMeasured}`, '', ''];
  if ('skipped' in d) return [`skipped (${d.skipped})`, '', ''];
  const vs = 'attendMs' in c ? `${(d.ms / c.attendMs).toFixed(1)}×` : '';
  return [`${f2(d.ms)} (${d.best})`, vs, Object.values(d.backends).map((t) => (t === null ? 'n/a' : f2(t))).join(' / ')];
}

function rows(r: DecodeResult): { head: string[]; body: Row[]; prefillHead: string[]; prefill: Row[] } {
  const bw = r.copy.bytesPerSecond;
  const rbw = r.readBandwidth.bytesPerSecond;
  const measured = r.cases.map((c) => c.sdpa).find((d): d is Extract<SdpaDense, { ms: number }> => d !== undefined && 'ms' in d);
  const names = Object.keys(measured?.backends ?? {});
  const head = [
    'heads', 'N', 'batch', 'attend ms', 'step ms', 'tok/s', 'MiB/step', 'GB/s', '% copy BW', '% read BW', 'dense ms', 'dense/attend', 'byte ratio',
    'SDPA dense ms', 'vs SDPA', names.length ? `SDPA ms (${names.join(' / ')})` : 'SDPA backends',
  ];
  const body = r.cases.map((c): Row => {
    const lead = [`${c.Hq}/${c.Hkv}`, kLabel(c.N), String(c.batch)];
    if ('skipped' in c) return { cells: [...lead, `skipped (${c.skipped})`, '', '', '', '', '', '', '', '', '', ...sdpaCells(c)] };
    const gbs = c.plan.bytes.total / (c.attendMs / 1e3);
    const dense = c.dense && 'attendMs' in c.dense ? c.dense.attendMs : null;
    return {
      cells: [
        ...lead, f2(c.attendMs), f2(c.stepMs), f2(c.batch / (c.stepMs / 1e3)), mib(c.plan.bytes.total), f2(gbs / 1e9),
        bw ? `${((100 * gbs) / bw).toFixed(0)}%` : 'n/a', rbw ? `${((100 * gbs) / rbw).toFixed(0)}%` : 'n/a',
        dense !== null ? f2(dense) : c.dense ? `skipped (${(c.dense as { skipped: string }).skipped})` : 'n/a',
        dense !== null ? `${(dense / c.attendMs).toFixed(1)}×` : '', `${(c.plan.denseBytes / c.plan.bytes.total).toFixed(1)}×`,
        ...sdpaCells(c),
      ],
    };
  });
  const prefillHead = ['heads', 'context', 'chunk', 'step ms', 'tok/s', 'attend TFLOP/s', 'MiB read'];
  const prefill = r.prefill.map((c): Row => {
    const lead = [`${c.Hq}/${c.Hkv}`, kLabel(c.context), kLabel(c.chunk)];
    if ('skipped' in c) return { cells: [...lead, `skipped (${c.skipped})`, '', '', ''] };
    const fl = c.plan.flops.route + c.plan.flops.attend;
    return { cells: [...lead, f2(c.stepMs), f2(c.chunk / (c.stepMs / 1e3)), f2(fl / (c.stepMs / 1e3) / 1e12), mib(c.plan.bytes.total)] };
  });
  return { head, body, prefillHead, prefill };
}

/** A bandwidth figure and its method, for the headers. */
function copyLine(c: Bandwidth, what = 'copy'): string {
  if (!c.bytesPerSecond) return c.how.startsWith('not measured') ? c.how : `not measured (${c.how})`;
  const single = c.singleBytesPerSecond !== undefined ? `; one ${what} with its fixed cost ${(c.singleBytesPerSecond / 1e9).toFixed(1)} GB/s` : '';
  return `${(c.bytesPerSecond / 1e9).toFixed(1)} GB/s (${c.how}${single})`;
}

/** The torch side, for the headers. */
function torchLine(t: TorchSummary): string {
  if (!t.measured) return `torch SDPA dense decode: not measured (${t.reason})`;
  const after = t.copy && 'bytesPerSecondBest' in t.copy && t.copy.after?.bytesPerSecondBest !== undefined ? `, ${(t.copy.after.bytesPerSecondBest / 1e9).toFixed(1)} best after the rows` : '';
  const cp = t.copy && 'bytesPerSecondBest' in t.copy
    ? `; torch copy bandwidth ${(t.copy.bytesPerSecondBest / 1e9).toFixed(1)} GB/s best, ${(t.copy.bytesPerSecondMedian / 1e9).toFixed(1)} median (${t.copy.how})${after}`
    : t.copy ? `; torch copy bandwidth: ${t.copy.error}` : '';
  return `torch ${t.torch} (CUDA ${t.cuda ?? '?'}) on ${t.device}: SDPA, one query per sequence over the full K/V, no mask, each backend forced in turn, CUDA-event medians of ${t.reps} after ${t.warmup} warm-ups, best shown${cp}`;
}

function pad(table: string[][]): string {
  const w = table[0]!.map((_, i) => Math.max(...table.map((r) => (r[i] ?? '').length)));
  return table.map((r) => r.map((c, i) => c.padStart(w[i]!)).join('  ')).join('\n');
}

/** The printed table (stdout). */
export function decodeTable(r: DecodeResult): string {
  const t = rows(r);
  const p = r.problem;
  return [
    `decode on ${r.backend.name}: D ${p.D}, ${p.dtype}, B ${p.blockSize}, topk ${p.topk}; medians of ${p.reps} steps; copy bandwidth ${copyLine(r.copy)}; read bandwidth ${copyLine(r.readBandwidth, 'read')}`,
    torchLine(r.torch),
    pad([t.head, ...t.body.map((x) => x.cells)]),
    ...(t.prefill.length ? ['', 'chunked prefill (append + attend of every chunk token, forked from the same context per step)', pad([t.prefillHead, ...t.prefill.map((x) => x.cells)])] : []),
    '',
  ].join('\n');
}

/** The markdown report (`<date>-decode-<backend>.md`). */
export function decodeMarkdown(r: DecodeResult): string {
  const t = rows(r);
  const md = (head: string[], body: Row[]): string[] => [`| ${head.join(' | ')} |`, `|${head.map(() => '---').join('|')}|`, ...body.map((x) => `| ${x.cells.join(' | ')} |`)];
  const p = r.problem;
  return [
    `# Decode on ${r.backend.name} (${r.date.slice(0, 10)})`,
    '',
    `- Command: \`${r.command}\`; commit ${r.gitCommit ?? 'unknown'}`,
    `- Machine: ${JSON.stringify(r.machine)}`,
    `- D ${p.D}, ${p.dtype}, B ${p.blockSize}, topk ${p.topk}; medians of ${p.reps} timed steps after 2 warm-ups, each waited for.`,
    `- Copy bandwidth (the "% copy BW" reference): ${copyLine(r.copy)}.`,
    `- Read bandwidth (the "% read BW" reference): ${copyLine(r.readBandwidth, 'read')}.`,
    `- ${torchLine(r.torch)}.`,
    '- "attend": the new token\'s k, v appended untimed, then attend; "step": append + attend. "MiB/step": bytes a sparse step must read',
    '  (planCacheAttend). "byte ratio": dense bytes / sparse bytes, the most a sparse step can gain over dense at equal bandwidth.',
    '  "% copy BW", "% read BW": GB/s over the copy and over the read bandwidth above (a decode attend reads, so the read figure',
    '  is its roofline). "dense ms": the backend\'s own dense decode on the same cache (topk covering every block). "SDPA dense ms": torch SDPA (best',
    '  backend, named) over a K/V of N tokens per sequence; "vs SDPA": SDPA dense ms / attend ms (above 1×: the sparse attend is faster).',
    '',
    ...md(t.head, t.body),
    '',
    ...(t.prefill.length ? ['## Chunked prefill', '', ...md(t.prefillHead, t.prefill), ''] : []),
  ].join('\n');
}
