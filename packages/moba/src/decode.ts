/**
 * `moba decode`: inference on a backend's paged KV cache. Prefills `batch` prompts of `tokens` random tokens in
 * chunks, then decodes `steps` tokens per sequence through `mobaStep`, timing each step to device completion and,
 * on the same cache, a dense step (attend with every block selected); every `checkEvery` steps the step's output is
 * checked against the float64 reference over the whole sequences so far (SPEC §8). Writes an SVG of step latency
 * against context length.
 */
import {
  type Backend, type DType, type DeviceTensor, type HostTensor, type KVCache, MobaError, Rng, createCache, errorStats, fromFloat,
  mobaStep, resolveConfig, toFloat64,
} from '@moba/core';
import { referenceForward, referenceKconv, referenceRoute } from '@moba/core/reference';
import { type BackendKind, createBackend } from './backends.js';
import type { Progress } from './progress.js';

export interface DecodeOptions {
  readonly backend: BackendKind | Backend;
  /** Prompt tokens per sequence. */
  readonly tokens: number;
  readonly steps: number;
  readonly batch: number;
  readonly heads: number;
  readonly kvHeads: number;
  readonly headDim: number;
  readonly blockSize: number;
  readonly topk: number;
  readonly dtype: DType;
  /** kconv width, 0 = off. */
  readonly kconv: number;
  /** Prefill chunk (tokens per sequence per prefill step). */
  readonly chunk: number;
  /** Check every this many decode steps against the reference (0: never). */
  readonly checkEvery: number;
  readonly dense: boolean;
  readonly seed: number;
  readonly threads?: number;
}

export interface DecodeStep {
  readonly step: number;
  /** Tokens per sequence after the step. */
  readonly context: number;
  readonly ms: number;
  readonly denseMs: number | null;
  /** Max abs error of the step's out against the reference (checked steps only). */
  readonly maxAbsError?: number;
}

export interface DecodeReport {
  readonly backend: string;
  readonly problem: Omit<DecodeOptions, 'backend' | 'threads'>;
  readonly prefill: { readonly ms: number; readonly tokensPerSecond: number };
  readonly steps: readonly DecodeStep[];
  readonly medianMs: number;
  readonly tokensPerSecond: number;
  readonly denseMedianMs: number | null;
  /** Why there is no dense comparison, if there is none. */
  readonly denseSkipped?: string;
  readonly checked: number;
  readonly worstError: number | null;
  /** The bound the errors are judged against (a few ulps of the dtype times the output scale). */
  readonly errorBound: number;
  readonly cacheStats: ReturnType<KVCache['memoryStats']>;
}

const median = (xs: readonly number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? NaN : s.length % 2 ? s[s.length >> 1]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

/** What the reference needs of each sequence: its raw keys and values so far (f64, exact dtype values). */
class History {
  readonly k: number[][];
  readonly v: number[][];
  constructor(n: number) {
    this.k = Array.from({ length: n }, () => []);
    this.v = Array.from({ length: n }, () => []);
  }
  add(b: number, k: Float64Array, v: Float64Array, row0: number, rows: number, C: number): void {
    for (let i = row0 * C; i < (row0 + rows) * C; i++) {
      this.k[b]!.push(k[i]!);
      this.v[b]!.push(v[i]!);
    }
  }
}

export async function runDecode(o: DecodeOptions, progress?: Progress): Promise<DecodeReport> {
  const owned = typeof o.backend === 'string';
  const b = typeof o.backend === 'string' ? await createBackend(o.backend, o.threads !== undefined && o.backend === 'cpu' ? { threads: o.threads } : undefined) : o.backend;
  const rng = new Rng(o.seed);
  const { heads: Hq, kvHeads: Hkv, headDim: D, blockSize: B, batch, dtype } = o;
  const C = Hkv * D;
  const rand = (rows: number, H: number): HostTensor => fromFloat(rng.normals(rows * H * D), dtype, [rows, H, D]);
  const tmp: DeviceTensor[] = [];
  let cache: KVCache | undefined;
  try {
    const wHost = o.kconv > 0 ? fromFloat(rng.normals(C * o.kconv).map((x) => 0.3 * x), dtype, [C, o.kconv]) : undefined;
    const w = wHost ? await b.upload(wHost) : undefined;
    if (w) tmp.push(w);
    cache = await createCache(b, { Hkv, D, dtype, blockSize: B, capacityTokens: batch * (Math.ceil((o.tokens + o.steps) / B) + 1) * B, maxSequences: batch, ...(w ? { kconvWeight: w } : {}) });
    const seqs = Array.from({ length: batch }, () => cache!.newSequence());
    const hist = new History(batch);
    const cfg = { topk: o.topk };
    // -- prefill in chunks --
    progress?.start(`prefill ${batch} × ${o.tokens} tokens`);
    const t0 = performance.now();
    for (let pos = 0; pos < o.tokens; pos += o.chunk) {
      const n = Math.min(o.chunk, o.tokens - pos);
      const k = rand(batch * n, Hkv), v = rand(batch * n, Hkv);
      const r = await mobaStep(b, cache, { seqs, q: rand(batch * n, Hq), k, v, cuSeqlens: Int32Array.from({ length: batch + 1 }, (_, i) => i * n) }, cfg);
      b.dispose(r.out, r.lse);
      const [kf, vf] = [toFloat64(k), toFloat64(v)];
      for (let s = 0; s < batch; s++) hist.add(s, kf, vf, s * n, n, C);
    }
    await b.sync();
    const prefillMs = performance.now() - t0;
    // -- decode --
    const steps: DecodeStep[] = [];
    const one = Int32Array.from({ length: batch + 1 }, (_, i) => i);
    const denseTopk = Math.ceil((o.tokens + o.steps) / B) + 1;
    const capTopk = b.caps.maxCacheTopk ?? b.caps.maxTopk;
    const denseSkipped = !o.dense ? '--no-dense'
      : denseTopk > capTopk && !b.caps.cacheDense ? `topk ${denseTopk} > caps.maxCacheTopk ${capTopk} (no caps.cacheDense)` : undefined;
    let worst: number | null = null;
    let checked = 0;
    for (let step = 1; step <= o.steps; step++) {
      progress?.start(`decode step ${step}/${o.steps}`);
      const q = rand(batch, Hq), k = rand(batch, Hkv), v = rand(batch, Hkv);
      await b.sync();
      const s0 = performance.now();
      const r = await mobaStep(b, cache, { seqs, q, k, v }, cfg);
      await b.sync();
      const ms = performance.now() - s0;
      const [kf, vf] = [toFloat64(k), toFloat64(v)];
      for (let s = 0; s < batch; s++) hist.add(s, kf, vf, s, 1, C);
      let denseMs: number | null = null;
      if (!denseSkipped) {
        const qd = await b.upload(q);
        await b.sync();
        const d0 = performance.now();
        const d = await cache.attend(seqs, qd, one, { topk: denseTopk });
        await b.sync();
        denseMs = performance.now() - d0;
        b.dispose(qd, d.out, d.lse);
      }
      let maxAbsError: number | undefined;
      if (o.checkEvery > 0 && (step % o.checkEvery === 0 || step === o.steps)) {
        const got = toFloat64(await b.download(r.out));
        maxAbsError = reference(hist, toFloat64(q), got, wHost ? toFloat64(wHost) : undefined, o);
        worst = Math.max(worst ?? 0, maxAbsError);
        checked++;
      }
      b.dispose(r.out, r.lse);
      steps.push({ step, context: o.tokens + step, ms, denseMs, ...(maxAbsError !== undefined ? { maxAbsError } : {}) });
    }
    progress?.end();
    const med = median(steps.map((s) => s.ms));
    const dense = steps.flatMap((s) => (s.denseMs === null ? [] : [s.denseMs]));
    const { backend: _b, threads: _t, ...problem } = o;
    const eps = dtype === 'f32' ? 2 ** -23 : dtype === 'f16' ? 2 ** -10 : 2 ** -7;
    return {
      backend: b.name, problem, prefill: { ms: prefillMs, tokensPerSecond: (batch * o.tokens) / (prefillMs / 1e3) },
      steps, medianMs: med, tokensPerSecond: batch / (med / 1e3), denseMedianMs: dense.length ? median(dense) : null,
      ...(denseSkipped ? { denseSkipped } : {}), checked, worstError: worst, errorBound: 8 * eps + 1e-5, cacheStats: cache.memoryStats(),
    };
  } finally {
    b.dispose(...tmp);
    await cache?.destroy();
    if (owned) await b.destroy();
  }
}

/** Max abs error of one decode step's out `[batch, Hq, D]` against the float64 reference (SPEC §8: nq = 1 per sequence). */
function reference(h: History, q: Float64Array, got: Float64Array, w: Float64Array | undefined, o: DecodeOptions): number {
  const { heads: Hq, kvHeads: Hkv, headDim: D, blockSize: B, batch } = o;
  const lens = h.k.map((k) => k.length / (Hkv * D));
  const cuK = Int32Array.from([0, ...lens.map((_, i) => lens.slice(0, i + 1).reduce((a, x) => a + x, 0))]);
  const layout = { cuSeqlensQ: Int32Array.from({ length: batch + 1 }, (_, i) => i), cuSeqlensK: cuK };
  let k: Float64Array = Float64Array.from(h.k.flat());
  const v = Float64Array.from(h.v.flat());
  if (w) {
    k = referenceKconv(k, w, Hkv * D, o.kconv, { cuSeqlens: cuK });
    k = toFloat64(fromFloat(k, o.dtype, [k.length])); // the cache holds k' rounded to its dtype, as the kconv op gives it
  }
  const shape = { T: batch, Tk: cuK[batch]!, Hq, Hkv, D, dtype: o.dtype };
  const cfg = resolveConfig({ blockSize: B, topk: o.topk }, D);
  const ref = referenceForward(q, k, v, referenceRoute(q, k, shape, layout, cfg), shape, layout, cfg);
  const e = errorStats(got, ref.out);
  if (!Number.isFinite(e.maxAbs)) throw new MobaError('E_DEVICE', `decode step output is not finite (max abs error ${e.maxAbs})`, 'out');
  return e.maxAbs;
}
