/// <reference lib="dom" />
/**
 * Decode mode of the demo: prefill a prompt into the backend's paged KV cache in chunks, then decode token by
 * token through `mobaStep`, timing each step to device completion (`backend.sync()` before and after) and, on the
 * same cache, a dense step (`cache.attend` with every block selected). The plot is redrawn after every step.
 */
import { type Backend, type HostTensor, type KVCache, MobaError, Rng, createCache, hostTensor, mobaStep } from '@moba/core';
import { drawDecodePlot } from './decode-plot.js';

export interface DecodeStepResult {
  /** Tokens in the cache after the step. */
  readonly context: number;
  readonly ms: number;
  readonly denseMs: number | null;
}

/** What the page exposes as `window.decodeState` (read by the browser test). */
export interface DecodeState {
  state: 'running' | 'done' | 'error';
  readonly backend: string;
  readonly prompt: number;
  readonly blockSize: number;
  readonly topk: number;
  readonly steps: DecodeStepResult[];
  /** Why there is no dense line, if there is none. */
  denseSkipped: string | null;
  error: string | null;
}

export interface DecodeParams {
  readonly prompt: number;
  readonly steps: number;
  readonly blockSize: number;
  readonly topk: number;
  readonly heads: number;
  readonly kvHeads: number;
  readonly headDim: number;
  readonly seed: number;
}

export const median = (xs: readonly number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? NaN : s.length % 2 ? s[s.length >> 1]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

/** The status line: median ms/step, tokens/s, dense/MoBA ratio. */
export function decodeSummary(st: DecodeState): string {
  const m = median(st.steps.map((s) => s.ms));
  const dense = st.steps.flatMap((s) => (s.denseMs === null ? [] : [s.denseMs]));
  const d = dense.length ? median(dense) : NaN;
  const parts = [`${st.steps.length} steps`, `median ${m.toFixed(2)} ms/step`, `${(1000 / m).toFixed(1)} tokens/s`];
  if (dense.length) parts.push(`dense ${d.toFixed(2)} ms/step, dense/MoBA ${(d / m).toFixed(2)}×`);
  return parts.join(', ');
}

/** Runs the decode; `onStep` is called after every step (the state is updated in place). */
export async function runDecode(backend: Backend, p: DecodeParams, canvas: HTMLCanvasElement, onStep: (st: DecodeState) => void): Promise<DecodeState> {
  const { heads: Hq, kvHeads: Hkv, headDim: D, blockSize: B } = p;
  const st: DecodeState = { state: 'running', backend: backend.name, prompt: p.prompt, blockSize: B, topk: p.topk, steps: [], denseSkipped: null, error: null };
  const rng = new Rng(p.seed);
  const rand = (rows: number, H: number): HostTensor => hostTensor('f32', [rows, H, D], rng.normals(rows * H * D));
  const denseTopk = Math.ceil((p.prompt + p.steps) / B) + 1;
  const cap = backend.caps.maxCacheTopk ?? backend.caps.maxTopk;
  if (denseTopk > cap && !backend.caps.cacheDense) st.denseSkipped = `no dense line: it needs topk ${denseTopk} > ${cap} (caps.maxCacheTopk)`;
  if (p.topk > cap) throw new MobaError('E_RANGE', `topk = ${p.topk} is invalid: must be an integer in [1, ${cap}] for a cache attend on ${backend.name}`, 'topk');
  let cache: KVCache | undefined;
  try {
    cache = await createCache(backend, { Hkv, D, dtype: 'f32', blockSize: B, capacityTokens: (Math.ceil((p.prompt + p.steps) / B) + 1) * B });
    const seqs = [cache.newSequence()];
    const cfg = { topk: p.topk };
    const chunk = 4 * B;
    for (let pos = 0; pos < p.prompt; pos += chunk) {
      const n = Math.min(chunk, p.prompt - pos);
      const r = await mobaStep(backend, cache, { seqs, q: rand(n, Hq), k: rand(n, Hkv), v: rand(n, Hkv), cuSeqlens: Int32Array.of(0, n) }, cfg);
      backend.dispose(r.out, r.lse);
    }
    await backend.sync();
    const one = Int32Array.of(0, 1);
    for (let step = 1; step <= p.steps; step++) {
      const q = rand(1, Hq);
      await backend.sync();
      const t0 = performance.now();
      const r = await mobaStep(backend, cache, { seqs, q, k: rand(1, Hkv), v: rand(1, Hkv) }, cfg);
      await backend.sync();
      const ms = performance.now() - t0;
      backend.dispose(r.out, r.lse);
      let denseMs: number | null = null;
      if (!st.denseSkipped) {
        const qd = await backend.upload(q);
        await backend.sync();
        const d0 = performance.now();
        const d = await cache.attend(seqs, qd, one, { topk: denseTopk });
        await backend.sync();
        denseMs = performance.now() - d0;
        backend.dispose(qd, d.out, d.lse);
      }
      st.steps.push({ context: cache.length(seqs[0]!), ms, denseMs });
      drawDecodePlot(canvas, st);
      onStep(st);
    }
    st.state = 'done';
    return st;
  } catch (e) {
    st.state = 'error';
    st.error = e instanceof Error ? `${e.name}: ${e.message}` : String(e);
    throw e;
  } finally {
    await cache?.destroy();
  }
}
