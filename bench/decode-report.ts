/**
 * Decode bench results: types, the device copy bandwidth they are judged against, and the printed and markdown
 * tables. Bytes and FLOPs per step come from `planCacheAttend`.
 */
import type { Backend, CacheAttendPlan } from 'moba-ts';
import { kLabel } from './args.js';
import { median } from './measure.js';

/** Dense decode on the same cache (attend with topk covering every block). */
export type DenseDecode = { readonly attendMs: number; readonly reps: readonly number[] } | { readonly skipped: string } | null;

export type DecodeCase =
  | { readonly Hq: number; readonly Hkv: number; readonly N: number; readonly batch: number; readonly skipped: string }
  | {
    readonly Hq: number; readonly Hkv: number; readonly N: number; readonly batch: number;
    /** Tokens per sequence at the last timed step. */
    readonly length: number;
    /** Medians (ms): attend alone, and append + attend. */
    readonly attendMs: number; readonly stepMs: number;
    readonly reps: { readonly attend: readonly number[]; readonly step: readonly number[] };
    readonly plan: CacheAttendPlan;
    readonly dense: DenseDecode;
  };

export type PrefillCase =
  | { readonly Hq: number; readonly Hkv: number; readonly context: number; readonly chunk: number; readonly skipped: string }
  | { readonly Hq: number; readonly Hkv: number; readonly context: number; readonly chunk: number; readonly stepMs: number; readonly reps: readonly number[]; readonly plan: CacheAttendPlan };

export interface CopyBandwidth {
  /** Bytes read + written per second by a large copy on the device; null when not measured. */
  readonly bytesPerSecond: number | null;
  readonly how: string;
}

export interface DecodeResult {
  readonly machine: Record<string, unknown>;
  readonly date: string;
  readonly command: string;
  readonly gitCommit: string | null;
  readonly backend: { readonly name: string };
  readonly problem: { readonly D: number; readonly blockSize: number; readonly topk: number; readonly dtype: string; readonly reps: number };
  readonly copy: CopyBandwidth;
  readonly cases: readonly DecodeCase[];
  readonly prefill: readonly PrefillCase[];
}

/** A backend that can time a device-to-device copy of `bytes` (ms, waited for); GPU backends may offer it. */
interface CopyTimer {
  timeDeviceCopy(bytes: number): Promise<number>;
}

/**
 * The device's copy bandwidth: the backend's own device copy where it has one (`timeDeviceCopy`), else, on the
 * CPU backend, a 256 MiB typed-array copy in this thread (read + write counted; one core's figure).
 */
export async function measureCopyBandwidth(b: Backend): Promise<CopyBandwidth> {
  const size = 256 * 2 ** 20;
  const timer = b as Partial<CopyTimer>;
  if (typeof timer.timeDeviceCopy === 'function') {
    await timer.timeDeviceCopy(size); // warm-up
    const out: number[] = [];
    for (let i = 0; i < 5; i++) out.push(await timer.timeDeviceCopy(size));
    const ms = median(out);
    return { bytesPerSecond: (2 * size) / (ms / 1e3), how: `device copy of ${size / 2 ** 20} MiB, median of 5` };
  }
  const dev = (b as { device?: WebGpuDeviceLike }).device;
  if (b.name === 'webgpu' && dev) return webgpuCopy(dev);
  if (b.name !== 'cpu') return { bytesPerSecond: null, how: `the ${b.name} backend has no device copy timer (timeDeviceCopy)` };
  const src = new Float32Array(size / 4).fill(1);
  const dst = new Float32Array(size / 4);
  dst.set(src);
  const ms: number[] = [];
  for (let i = 0; i < 5; i++) {
    const t0 = performance.now();
    dst.set(src);
    ms.push(performance.now() - t0);
  }
  return { bytesPerSecond: (2 * size) / (median(ms) / 1e3), how: `Float32Array copy of ${size / 2 ** 20} MiB in one thread, median of 5` };
}

/** The parts of a GPUDevice the copy timing uses (the WebGPU backend exposes its device as `device`). */
interface WebGpuDeviceLike {
  readonly limits: { readonly maxBufferSize: number };
  createBuffer(d: { size: number; usage: number }): { destroy(): void };
  createCommandEncoder(): { copyBufferToBuffer(a: unknown, ao: number, b: unknown, bo: number, n: number): void; finish(): unknown };
  readonly queue: { submit(c: unknown[]): void; onSubmittedWorkDone(): Promise<void> };
}

/** copyBufferToBuffer between two device buffers, waited for with onSubmittedWorkDone; median of 5 after a warm-up. */
async function webgpuCopy(dev: WebGpuDeviceLike): Promise<CopyBandwidth> {
  const size = Math.min(256 * 2 ** 20, Math.floor(dev.limits.maxBufferSize / 4) * 4);
  const COPY_SRC = 0x4, COPY_DST = 0x8, STORAGE = 0x80;
  const a = dev.createBuffer({ size, usage: COPY_SRC | COPY_DST | STORAGE });
  const c = dev.createBuffer({ size, usage: COPY_SRC | COPY_DST | STORAGE });
  const once = async (): Promise<number> => {
    await dev.queue.onSubmittedWorkDone();
    const t0 = performance.now();
    const e = dev.createCommandEncoder();
    for (let i = 0; i < 4; i++) e.copyBufferToBuffer(i % 2 ? c : a, 0, i % 2 ? a : c, 0, size);
    dev.queue.submit([e.finish()]);
    await dev.queue.onSubmittedWorkDone();
    return (performance.now() - t0) / 4;
  };
  try {
    await once();
    const ms: number[] = [];
    for (let i = 0; i < 5; i++) ms.push(await once());
    return { bytesPerSecond: (2 * size) / (median(ms) / 1e3), how: `WebGPU copyBufferToBuffer of ${size / 2 ** 20} MiB (4 per submit), median of 5` };
  } finally {
    a.destroy();
    c.destroy();
  }
}

const f2 = (x: number): string => (x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x >= 1 ? x.toFixed(2) : x.toFixed(3));
const mib = (bytes: number): string => f2(bytes / 2 ** 20);

interface Row { cells: string[] }

function rows(r: DecodeResult): { head: string[]; body: Row[]; prefillHead: string[]; prefill: Row[] } {
  const bw = r.copy.bytesPerSecond;
  const head = ['heads', 'N', 'batch', 'attend ms', 'step ms', 'tok/s', 'MiB/step', 'GB/s', '% copy BW', 'dense ms', 'dense/attend', 'byte ratio'];
  const body = r.cases.map((c): Row => {
    const lead = [`${c.Hq}/${c.Hkv}`, kLabel(c.N), String(c.batch)];
    if ('skipped' in c) return { cells: [...lead, `skipped (${c.skipped})`, '', '', '', '', '', '', '', ''] };
    const gbs = c.plan.bytes.total / (c.attendMs / 1e3);
    const dense = c.dense && 'attendMs' in c.dense ? c.dense.attendMs : null;
    return {
      cells: [
        ...lead, f2(c.attendMs), f2(c.stepMs), f2(c.batch / (c.stepMs / 1e3)), mib(c.plan.bytes.total), f2(gbs / 1e9),
        bw ? `${((100 * gbs) / bw).toFixed(0)}%` : 'n/a',
        dense !== null ? f2(dense) : c.dense ? `skipped (${(c.dense as { skipped: string }).skipped})` : 'n/a',
        dense !== null ? `${(dense / c.attendMs).toFixed(1)}×` : '', `${(c.plan.denseBytes / c.plan.bytes.total).toFixed(1)}×`,
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

function pad(table: string[][]): string {
  const w = table[0]!.map((_, i) => Math.max(...table.map((r) => (r[i] ?? '').length)));
  return table.map((r) => r.map((c, i) => c.padStart(w[i]!)).join('  ')).join('\n');
}

export function decodeTable(r: DecodeResult): string {
  const t = rows(r);
  const bw = r.copy.bytesPerSecond ? `${(r.copy.bytesPerSecond / 1e9).toFixed(1)} GB/s (${r.copy.how})` : `not measured (${r.copy.how})`;
  const p = r.problem;
  return [
    `decode on ${r.backend.name}: D ${p.D}, ${p.dtype}, B ${p.blockSize}, topk ${p.topk}; medians of ${p.reps} steps; copy bandwidth ${bw}`,
    pad([t.head, ...t.body.map((x) => x.cells)]),
    ...(t.prefill.length ? ['', 'chunked prefill (append + attend of every chunk token, forked from the same context per step)', pad([t.prefillHead, ...t.prefill.map((x) => x.cells)])] : []),
    '',
  ].join('\n');
}

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
    `- Copy bandwidth: ${r.copy.bytesPerSecond ? `${(r.copy.bytesPerSecond / 1e9).toFixed(1)} GB/s` : 'not measured'} (${r.copy.how}).`,
    '- "attend": the new token\'s k, v appended untimed, then attend; "step": append + attend. "MiB/step": bytes a sparse step must read',
    '  (planCacheAttend). "byte ratio": dense bytes / sparse bytes, the most a sparse step can gain over dense at equal bandwidth.',
    '',
    ...md(t.head, t.body),
    '',
    ...(t.prefill.length ? ['## Chunked prefill', '', ...md(t.prefillHead, t.prefill), ''] : []),
  ].join('\n');
}
