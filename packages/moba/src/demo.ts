/**
 * `moba demo`, the main job: seeded random q, k, v (and kconv weights) → kconv → route → forward →
 * backward through `moba()` / `mobaBackward()` on a chosen backend, each backend call timed; then a
 * spot check of out, lse, dq and the routing against the float64 reference on sampled rows, the
 * attended fraction and FLOP/s from `plan()`, and an SVG heatmap of the routing.
 */
import { availableParallelism } from 'node:os';
import { writeFileSync } from 'node:fs';
import { resolve } from 'node:path';
import {
  type Backend, type DType, type DeviceTensor, type HostTensor, type Layout, type MobaConfig, type ProblemShape, type Routing,
  type BackendOp, MobaError, Rng, fromFloat, hostTensor, moba, mobaBackward, plan, resolveConfig, sequences, routingCounts, timeBackend,
} from '@moba/core';
import { type BackendKind, createBackend } from './backends.js';
import { type RoutingCheck, sampleRows, spotCheck } from './check.js';
import { heatmapSvg } from './heatmap.js';
import { Progress } from './progress.js';

/** What `moba demo` runs; the CLI flags map one to one. */
export interface DemoOptions {
  /** A kind for `createBackend()` (destroyed at the end), or a backend instance (left to the caller). */
  readonly backend: BackendKind | Backend;
  /** Total tokens T. */
  readonly tokens: number;
  /** Query heads Hq. */
  readonly heads: number;
  /** Key/value heads Hkv (divides Hq). */
  readonly kvHeads: number;
  readonly headDim: number;
  readonly blockSize: number;
  readonly topk: number;
  readonly dtype: DType;
  /** kconv width W; 0 turns key convolution off. */
  readonly kconv: number;
  /** Number of sequences T is split into (lengths differ by at most one). */
  readonly batch: number;
  readonly seed: number;
  /** CPU worker threads (default: the backend's choice). */
  readonly threads?: number;
  /** Query rows checked against the f64 reference. */
  readonly samples: number;
  /** Run once on a small problem first so timings exclude JIT warm-up and worker start. */
  readonly warmup: boolean;
  /** Where to write the routing heatmap (undefined: no SVG). */
  readonly svg?: string;
}

/** Defaults of `moba demo` (the README's main job). */
export const DEMO_DEFAULTS = {
  backend: 'cpu', tokens: 8192, heads: 4, headDim: 64, blockSize: 64, topk: 8, dtype: 'f32', kconv: 3, batch: 1, seed: 1, samples: 64,
} as const;

/** One timed phase of the run. */
export interface PhaseReport {
  readonly name: 'upload' | 'kconv' | 'route' | 'forward' | 'backward' | 'kconvBackward' | 'download';
  readonly ms: number;
  /** FLOPs from `plan()` (null for transfers and phases plan() does not model). */
  readonly flops: number | null;
  readonly gflopsPerSec: number | null;
}

/** The demo's report; `--json` prints exactly this. */
export interface DemoReport {
  readonly backend: { readonly name: string; readonly threads: number | null };
  readonly problem: {
    readonly T: number; readonly Hq: number; readonly Hkv: number; readonly D: number; readonly dtype: DType;
    readonly batch: number; readonly seqlens: { readonly min: number; readonly max: number };
    readonly blockSize: number; readonly topk: number; readonly causal: boolean; readonly kconvWidth: number;
    readonly scale: number; readonly seed: number;
  };
  readonly warmupTokens: number | null;
  readonly phases: readonly PhaseReport[];
  /** Sum of the compute phases (kconv, route, forward, backward, kconvBackward). */
  readonly computeMs: number;
  /** Wall time from the first upload to the last download (input generation excluded), the device idle at both ends. */
  readonly wallMs: number;
  /** Wall time outside the timed phases: host work between backend calls (orchestration, small host tensors). */
  readonly hostMs: number;
  readonly attended: { readonly pairs: number; readonly causalPairs: number; readonly fraction: number };
  readonly accuracy: {
    readonly rows: number;
    readonly heads: number;
    readonly out: ErrorSummary;
    readonly lse: ErrorSummary;
    readonly dq: ErrorSummary;
    readonly routing: RoutingCheck;
  };
  /** Absolute path of the SVG written, or null. */
  readonly svg: string | null;
  /** Peak resident memory of the process (MiB). */
  readonly peakRssMiB: number;
}

/** Max abs error and relative RMS error (see `errorStats`). */
export interface ErrorSummary {
  readonly maxAbs: number;
  readonly relRms: number;
}

export type PhaseName = PhaseReport['name'];

const LABELS: Record<PhaseName, string> = {
  upload: 'uploading inputs', kconv: 'kconv', route: 'routing', forward: 'forward',
  backward: 'backward', kconvBackward: 'kconv backward', download: 'downloading results',
};


/** Phase of each timed backend op (routingFromIndices is not used by the demo). */
const PHASE_OF: Record<BackendOp, PhaseName> = {
  upload: 'upload', download: 'download', routingIndices: 'download', routingFromIndices: 'route',
  route: 'route', forward: 'forward', backward: 'backward', kconv: 'kconv', kconvBackward: 'kconvBackward',
};

/** `inner` with every op timed to device completion into `ms` (per phase) and reported to `progress`. */
function timed(inner: Backend, ms: Map<PhaseName, number>, progress: Progress | undefined): Backend {
  return timeBackend(inner, {
    start: (op) => progress?.start(LABELS[PHASE_OF[op]]),
    end: (op, t) => {
      const phase = PHASE_OF[op];
      ms.set(phase, (ms.get(phase) ?? 0) + t);
      progress?.end();
    },
  });
}

/** `batch` sequence lengths summing to T, differing by at most one. */
export function splitSeqlens(T: number, batch: number): Int32Array {
  const cu = new Int32Array(batch + 1);
  for (let b = 0; b < batch; b++) cu[b + 1] = cu[b]! + Math.floor(T / batch) + (b < T % batch ? 1 : 0);
  return cu;
}

/** Seeded N(0, std²) tensors in `dtype`, drawn one after another from one stream (q, k, v, dOut, then kconv w). */
function tensorMaker(dtype: DType, seed: number): (dims: number[], std?: number) => HostTensor {
  const rng = new Rng(seed);
  return (dims, std = 1) => {
    const x = rng.normals(dims.reduce((a, b) => a * b, 1), std);
    return dtype === 'f32' ? hostTensor('f32', dims, x) : fromFloat(x, dtype, dims);
  };
}

/** One moba() + mobaBackward() round trip on a small problem, to warm JIT and workers. */
async function warmUp(backend: Backend, shape: ProblemShape, cfg: MobaConfig, kconv: number, T: number): Promise<void> {
  const { Hq, Hkv, D, dtype } = shape;
  const make = tensorMaker(dtype, 12345);
  const [q, k, v, dOut] = [make([T, Hq, D]), make([T, Hkv, D]), make([T, Hkv, D]), make([T, Hq, D])];
  const w = kconv > 0 ? make([Hkv * D, kconv], 0.1) : undefined;
  const res = await moba(backend, { q, k, v, cuSeqlens: Int32Array.of(0, T), ...(w ? { kconvWeight: w } : {}) }, cfg);
  const g = await mobaBackward(backend, res.ctx, dOut);
  backend.dispose(res.out, res.lse, g.dq, g.dk, g.dv, ...(g.dKconvWeight ? [g.dKconvWeight] : []));
  res.ctx.dispose();
}

/** Runs the demo; progress (if given) goes to `progress`. Throws MobaError on invalid sizes. */
export async function runDemo(o: DemoOptions, progress?: Progress): Promise<DemoReport> {
  const shape: ProblemShape = { T: o.tokens, Hq: o.heads, Hkv: o.kvHeads, D: o.headDim, dtype: o.dtype };
  const cu = splitSeqlens(o.tokens, o.batch);
  const layout: Layout = { cuSeqlens: cu };
  const cfg: MobaConfig = { blockSize: o.blockSize, topk: o.topk };
  const rc = resolveConfig(cfg, o.headDim);
  const owned = typeof o.backend === 'string';
  if (o.threads !== undefined && (o.backend === 'webgpu' || o.backend === 'cuda')) {
    throw new MobaError('E_RANGE', `threads = ${o.threads} applies to the CPU backend only, not '${o.backend}'`, 'threads');
  }
  const backend = typeof o.backend === 'string' ? await createBackend(o.backend, o.threads !== undefined ? { threads: o.threads } : undefined) : o.backend;
  try {
    const warmT = Math.min(o.tokens, 1024);
    if (o.warmup) {
      progress?.start('warming up');
      await warmUp(backend, shape, cfg, o.kconv, warmT);
      progress?.end();
    }
    // -- inputs: each generated and uploaded in turn, so at most one host copy is alive next to the device ones --
    const ms = new Map<PhaseName, number>();
    const tb = timed(backend, ms, undefined);
    progress?.start('generating and uploading random inputs');
    const make = tensorMaker(o.dtype, o.seed);
    let generateMs = 0;
    const upload = async (dims: number[]): Promise<DeviceTensor> => {
      const t0 = performance.now();
      const t = make(dims);
      generateMs += performance.now() - t0;
      return tb.upload(t);
    };
    await backend.sync();
    const wall0 = performance.now();
    const dev = {
      q: await upload([o.tokens, o.heads, o.headDim]), // [T, Hq, D]
      k: await upload([o.tokens, o.kvHeads, o.headDim]), // [T, Hkv, D]
      v: await upload([o.tokens, o.kvHeads, o.headDim]), // [T, Hkv, D]
      dOut: await upload([o.tokens, o.heads, o.headDim]), // [T, Hq, D]
    };
    const tw = performance.now();
    const w = o.kconv > 0 ? make([o.kvHeads * o.headDim, o.kconv], 0.1) : undefined; // [Hkv·D, W], host (small)
    generateMs += performance.now() - tw;
    progress?.end();

    // -- the main job: kconv → route → forward, then backward, every backend call timed to device completion --
    const job = timed(backend, ms, progress);
    const res = await moba(job, { q: dev.q, k: dev.k, v: dev.v, cuSeqlens: cu, ...(w ? { kconvWeight: w } : {}) }, cfg);
    const grads = await mobaBackward(job, res.ctx, dev.dOut);
    const out = await job.download(res.out);
    const lse = await job.download(res.lse);
    const dq = await job.download(grads.dq);
    const indices = await job.routingIndices(res.routing); // [T, Hq, topk]
    const wallMs = performance.now() - wall0 - generateMs;
    release(backend, res.out, res.lse, grads.dq, grads.dk, grads.dv, grads.dKconvWeight);
    res.ctx.dispose();
    const inputs = { q: await backend.download(dev.q), k: await backend.download(dev.k), v: await backend.download(dev.v), dOut: await backend.download(dev.dOut) };
    release(backend, dev.q, dev.k, dev.v, dev.dOut);

    // -- spot check against the f64 reference --
    progress?.start(`checking ${Math.min(o.samples, o.tokens)} rows against the float64 reference`);
    const seqs = sequences(layout, rc.blockSize);
    const sampler = new Rng(o.seed ^ 0x5eed); // rows drawn independently of the inputs
    const rows = sampleRows(o.tokens, o.samples, () => sampler.next());
    const check = spotCheck({ shape, layout, seqs, cfg: rc, ...inputs, ...(w ? { w } : {}), indices, out, lse, dq }, rows);
    progress?.end();

    // -- heatmap --
    let svgPath: string | null = null;
    if (o.svg !== undefined) {
      svgPath = resolve(o.svg);
      const title = `MoBA routing: T = ${o.tokens}, block ${o.blockSize}, top-${o.topk}`;
      const subtitle = `selections per (query block, key block), summed over ${o.heads} heads${o.batch > 1 ? ` and ${o.batch} sequences` : ''}; ${backend.name} backend, seed ${o.seed}`;
      writeFileSync(svgPath, heatmapSvg(routingCounts(indices, o.heads, o.topk, seqs, o.blockSize), { title, subtitle }));
    }

    const p = plan(shape, layout, rc, { kconvWidth: o.kconv });
    const flopsOf: Partial<Record<PhaseName, number>> = {
      kconv: p.flops.kconv, route: p.flops.route, forward: p.flops.forward, backward: p.flops.backward,
    };
    const order: PhaseName[] = ['upload', 'kconv', 'route', 'forward', 'backward', 'kconvBackward', 'download'];
    const phases = order.filter((n) => ms.has(n)).map((name): PhaseReport => {
      const t = ms.get(name)!;
      const flops = flopsOf[name] ?? null;
      return { name, ms: t, flops, gflopsPerSec: flops !== null && t > 0 ? flops / (t * 1e6) : null };
    });
    const compute = phases.filter((ph) => ph.name !== 'upload' && ph.name !== 'download').reduce((a, ph) => a + ph.ms, 0);
    const timedMs = phases.reduce((a, ph) => a + ph.ms, 0);
    let [minLen, maxLen] = [Infinity, 0]; // a loop, not Math.min(...lens): batch may be 10⁵+ sequences (a spread overflows the stack)
    for (let b = 0; b < o.batch; b++) [minLen, maxLen] = [Math.min(minLen, cu[b + 1]! - cu[b]!), Math.max(maxLen, cu[b + 1]! - cu[b]!)];
    const summary = (e: { maxAbs: number; relRms: number }): ErrorSummary => ({ maxAbs: e.maxAbs, relRms: e.relRms });
    return {
      backend: { name: backend.name, threads: threadsOf(backend, o) },
      problem: {
        T: o.tokens, Hq: o.heads, Hkv: o.kvHeads, D: o.headDim, dtype: o.dtype, batch: o.batch,
        seqlens: { min: minLen, max: maxLen },
        blockSize: rc.blockSize, topk: rc.topk, causal: rc.causal, kconvWidth: o.kconv, scale: rc.scale, seed: o.seed,
      },
      warmupTokens: o.warmup ? warmT : null,
      phases,
      computeMs: compute,
      wallMs,
      hostMs: Math.max(0, wallMs - timedMs),
      attended: { pairs: p.attendedPairs, causalPairs: p.causalPairs, fraction: p.attendedPairs / p.causalPairs },
      accuracy: {
        rows: rows.length, heads: o.heads,
        out: summary(check.out), lse: summary(check.lse), dq: summary(check.dq), routing: check.routing,
      },
      svg: svgPath,
      peakRssMiB: process.resourceUsage().maxRSS / 1024,
    };
  } finally {
    progress?.end();
    if (owned) await backend.destroy();
  }
}

function release(backend: Backend, ...items: (DeviceTensor | Routing | undefined)[]): void {
  backend.dispose(...items.filter((t): t is DeviceTensor | Routing => t !== undefined));
}

/** Worker threads of a CPU backend (what it reports, else what was asked, else the core count). */
function threadsOf(backend: Backend, o: DemoOptions): number | null {
  const reported = (backend as { threads?: unknown }).threads;
  if (typeof reported === 'number') return reported;
  if (backend.name !== 'cpu') return null;
  return o.threads ?? availableParallelism();
}
