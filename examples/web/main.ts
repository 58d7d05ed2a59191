/// <reference lib="dom" />
/**
 * MoBA in the browser: kconv → route → forward, then backward, on WebGPU (`navigator.gpu`), with the routing
 * heatmap on a canvas and the time of every phase. Without a WebGPU adapter it falls back to the CPU backend
 * (one thread, in the page) and says so. Served by `pnpm demo:web` (serve.ts).
 */
import {
  type Backend, type BackendOp, type DeviceTensor, type HostTensor, type MobaConfig, MobaError, Rng, hostTensor, moba, mobaBackward, routingCounts, sequences, timeBackend,
} from '@moba/core';
import { createCpuBackend } from '@moba/backend-cpu';
import { createWebGpuBackend } from '@moba/backend-webgpu';
import { type DecodeState, decodeSummary, runDecode } from './decode.js';
import { attendedFraction, drawHeatmap } from './heatmap.js';

/** Fixed problem dimensions (the controls set the rest). */
const HEADS = 4;
const KV_HEADS = 2;
const HEAD_DIM = 64;
const SEED = 7;

type Phase = 'kconv' | 'route' | 'forward' | 'backward' | 'kconvBackward';
const PHASES: readonly { key: Phase; label: string }[] = [
  { key: 'kconv', label: 'kconv' }, { key: 'route', label: 'route' }, { key: 'forward', label: 'forward' },
  { key: 'backward', label: 'backward' }, { key: 'kconvBackward', label: 'kconv backward' },
];

/** What the page exposes as `window.mobaDemo` (read by the browser test). */
export interface DemoRun {
  readonly backend: string;
  readonly tokens: number;
  readonly blockSize: number;
  readonly topk: number;
  readonly kconv: number;
  readonly ms: Partial<Record<Phase, number>>;
  readonly attended: number;
  readonly blocks: number;
  readonly diagonalSelections: number;
}

interface Engine {
  readonly backend: Backend;
  readonly label: string;
  readonly fallback: string | null;
}

const $ = <T extends HTMLElement>(id: string): T => {
  const el = document.getElementById(id);
  if (!el) throw new Error(`#${id} is missing`);
  return el as T;
};

/** The limits the backend uses, as much as the adapter offers (the backend picks tile sizes from them). */
const LIMITS = ['maxStorageBufferBindingSize', 'maxBufferSize', 'maxComputeWorkgroupStorageSize', 'maxComputeInvocationsPerWorkgroup',
  'maxComputeWorkgroupSizeX', 'maxStorageBuffersPerShaderStage', 'maxComputeWorkgroupsPerDimension'] as const;

async function openEngine(): Promise<Engine> {
  let why: string;
  try {
    const adapter = await navigator.gpu?.requestAdapter({ powerPreference: 'high-performance' });
    if (!adapter) throw new MobaError('E_DEVICE', navigator.gpu ? 'requestAdapter() returned no adapter' : 'navigator.gpu is missing', 'device');
    const requiredLimits: Record<string, number> = {};
    for (const name of LIMITS) requiredLimits[name] = adapter.limits[name];
    const requiredFeatures: GPUFeatureName[] = adapter.features.has('shader-f16') ? ['shader-f16'] : [];
    const device = await adapter.requestDevice({ label: 'moba-web-demo', requiredLimits, requiredFeatures });
    const backend = await createWebGpuBackend({ device });
    const info = adapter.info;
    const name = [info.vendor, info.architecture, info.description].filter(Boolean).join(' ') || 'unnamed adapter';
    return { backend, label: `WebGPU: ${name}${info.isFallbackAdapter ? ' (software)' : ''}`, fallback: null };
  } catch (e) {
    why = e instanceof Error ? e.message : String(e);
  }
  // In a page the CPU backend has no worker threads: it runs in this thread on plain ArrayBuffers (no
  // SharedArrayBuffer, so no cross-origin isolation is needed).
  const backend = createCpuBackend();
  const label = `CPU backend (${backend.threads} thread${backend.threads === 1 ? '' : 's'}, in the page)`;
  return { backend, label, fallback: `WebGPU is not available here (${why}); running on the CPU backend instead.` };
}

/**
 * Inputs: N(0, 1) plus one shared direction u. Queries carry u; each key block carries it with its own weight,
 * so some key blocks are popular with every query (vertical stripes in the heatmap) and most are not.
 */
function makeInputs(T: number, blockSize: number, kconv: number): { q: HostTensor; k: HostTensor; v: HostTensor; dOut: HostTensor; w: HostTensor | null } {
  const rng = new Rng(SEED);
  const u = rng.normals(HEAD_DIM, 1 / Math.sqrt(HEAD_DIM));
  const q = rng.normals(T * HEADS * HEAD_DIM);
  const k = rng.normals(T * KV_HEADS * HEAD_DIM);
  const v = rng.normals(T * KV_HEADS * HEAD_DIM);
  const dOut = rng.normals(T * HEADS * HEAD_DIM);
  const nb = Math.ceil(T / blockSize);
  const weight = Float32Array.from({ length: nb }, () => 4 * rng.normal());
  for (let t = 0; t < T; t++) {
    for (let h = 0; h < HEADS; h++) for (let d = 0; d < HEAD_DIM; d++) q[(t * HEADS + h) * HEAD_DIM + d]! += 2 * u[d]!;
    const wb = weight[Math.floor(t / blockSize)]!;
    for (let h = 0; h < KV_HEADS; h++) for (let d = 0; d < HEAD_DIM; d++) k[(t * KV_HEADS + h) * HEAD_DIM + d]! += wb * u[d]!;
  }
  const w = kconv > 0 ? hostTensor('f32', [KV_HEADS * HEAD_DIM, kconv], rng.normals(KV_HEADS * HEAD_DIM * kconv, 0.1)) : null;
  return {
    q: hostTensor('f32', [T, HEADS, HEAD_DIM], q), k: hostTensor('f32', [T, KV_HEADS, HEAD_DIM], k),
    v: hostTensor('f32', [T, KV_HEADS, HEAD_DIM], v), dOut: hostTensor('f32', [T, HEADS, HEAD_DIM], dOut), w,
  };
}

/** Delegates to `inner`, adding the time of each phase (to device completion, `backend.sync()`) into `ms`. */
function timed(inner: Backend, ms: Partial<Record<Phase, number>>): Backend {
  const phases: Partial<Record<BackendOp, Phase>> = { route: 'route', forward: 'forward', backward: 'backward', kconv: 'kconv', kconvBackward: 'kconvBackward' };
  return timeBackend(inner, {
    end: (op, t) => {
      const phase = phases[op];
      if (phase) ms[phase] = (ms[phase] ?? 0) + t;
    },
  });
}

/** One moba() + mobaBackward() round trip; returns the routing indices `[T, Hq, topk]`. */
async function roundTrip(backend: Backend, T: number, cfg: MobaConfig, kconv: number): Promise<Int32Array> {
  const inp = makeInputs(T, cfg.blockSize, kconv);
  const owned: DeviceTensor[] = [];
  const up = async (t: HostTensor): Promise<DeviceTensor> => {
    const d = await backend.upload(t);
    owned.push(d);
    return d;
  };
  const [q, k, v, dOut] = [await up(inp.q), await up(inp.k), await up(inp.v), await up(inp.dOut)];
  const w = inp.w ? await up(inp.w) : undefined;
  try {
    const res = await moba(backend, { q, k, v, cuSeqlens: Int32Array.of(0, T), ...(w ? { kconvWeight: w } : {}) }, cfg);
    const g = await mobaBackward(backend, res.ctx, dOut);
    const indices = await backend.routingIndices(res.routing);
    backend.dispose(res.out, res.lse, g.dq, g.dk, g.dv, ...(g.dKconvWeight ? [g.dKconvWeight] : []));
    res.ctx.dispose();
    return indices;
  } finally {
    backend.dispose(...owned);
  }
}

function readInt(id: string, lo: number, hi: number, name: string): number {
  const v = Number(($(id) as HTMLInputElement | HTMLSelectElement).value);
  if (!Number.isInteger(v) || v < lo || v > hi) throw new MobaError('E_RANGE', `${name} = ${String(v)} is invalid: must be an integer in [${lo}, ${hi}]`, name);
  return v;
}

async function runDemo(engine: Engine): Promise<DemoRun> {
  const T = readInt('tokens', 1, 65536, 'tokens');
  const blockSize = readInt('blockSize', 1, 4096, 'blockSize');
  const topk = readInt('topk', 1, 64, 'topk');
  const kconv = readInt('kconv', 0, 8, 'kconv');
  const cfg: MobaConfig = { blockSize, topk, causal: true };
  const { backend } = engine;
  // warm-up on a short problem with the same config: pipeline compilation and JIT stay out of the timings
  await roundTrip(backend, Math.min(T, 4 * blockSize), cfg, kconv);
  const ms: Partial<Record<Phase, number>> = {};
  const indices = await roundTrip(timed(backend, ms), T, cfg, kconv);

  const seqs = sequences({ cuSeqlens: Int32Array.of(0, T) }, blockSize);
  const rc = routingCounts(indices, HEADS, topk, seqs, blockSize);
  const att = attendedFraction(indices, HEADS, topk, seqs, blockSize);
  const canvas = $('heatmap') as HTMLCanvasElement;
  drawHeatmap(canvas, rc, {
    title: `MoBA routing: T = ${T}, block ${blockSize}, top-${topk}${kconv > 0 ? `, kconv ${kconv}` : ''}`,
    subtitle: `selections per (query block, key block), summed over ${HEADS} heads; ${backend.name} backend`,
  });
  let diagonal = 0;
  for (let b = 0; b < rc.nb; b++) diagonal += rc.counts[b * rc.nb + b]!;

  const body = $('timings').querySelector('tbody')!;
  body.replaceChildren();
  let total = 0;
  for (const { key, label } of PHASES) {
    const t = ms[key];
    if (t === undefined) continue;
    total += t;
    const tr = document.createElement('tr');
    tr.dataset.phase = key;
    tr.dataset.ms = String(t);
    tr.innerHTML = `<th scope="row">${label}</th><td>${t.toFixed(2)} ms</td>`;
    body.append(tr);
  }
  const tr = document.createElement('tr');
  tr.className = 'total';
  tr.innerHTML = `<th scope="row">total</th><td>${total.toFixed(2)} ms</td>`;
  body.append(tr);
  const attended = $('attended');
  attended.dataset.fraction = String(att.fraction);
  attended.textContent = `attended ${(100 * att.fraction).toFixed(2)}% of the causal query–key pairs (${att.pairs.toLocaleString('en')} of ${att.causalPairs.toLocaleString('en')}); ${rc.nb} key blocks per sequence`;
  return { backend: backend.name, tokens: T, blockSize, topk, kconv, ms, attended: att.fraction, blocks: rc.nb, diagonalSelections: diagonal };
}

async function main(): Promise<void> {
  const status = $('status');
  const button = $('run') as HTMLButtonElement;
  const engine = await openEngine();
  $('backend').textContent = engine.label;
  const note = $('fallback');
  if (engine.fallback) {
    note.textContent = engine.fallback;
    note.hidden = false;
  }
  $('problem').textContent = `${HEADS} query heads, ${KV_HEADS} kv heads, head dim ${HEAD_DIM}, f32, causal, one sequence, seed ${SEED}`;
  const go = async (): Promise<void> => {
    button.disabled = true;
    status.dataset.state = 'running';
    status.textContent = 'running…';
    try {
      const r = await runDemo(engine);
      (globalThis as unknown as { mobaDemo: DemoRun }).mobaDemo = r;
      status.dataset.state = 'done';
      status.textContent = `done (after a warm-up run) on ${r.backend}`;
    } catch (e) {
      status.dataset.state = 'error';
      status.textContent = e instanceof Error ? `${e.name}: ${e.message}` : String(e);
    } finally {
      button.disabled = false;
    }
  };
  const decodeButton = $('decode') as HTMLButtonElement;
  const decode = async (): Promise<void> => {
    button.disabled = decodeButton.disabled = true;
    status.dataset.state = 'running';
    status.textContent = 'decoding…';
    const canvas = $('decodePlot') as HTMLCanvasElement;
    canvas.hidden = false;
    const win = globalThis as unknown as { decodeState?: DecodeState };
    try {
      const p = {
        prompt: readInt('prompt', 1, 65536, 'prompt'), steps: readInt('steps', 1, 4096, 'steps'), blockSize: readInt('blockSize', 1, 4096, 'blockSize'),
        topk: readInt('topk', 1, 64, 'topk'), heads: HEADS, kvHeads: KV_HEADS, headDim: HEAD_DIM, seed: SEED,
      };
      const st = await runDecode(engine.backend, p, canvas, (s) => {
        win.decodeState = s;
        status.textContent = `decoding on ${s.backend}: ${decodeSummary(s)}`;
      });
      win.decodeState = st;
      status.dataset.state = 'done';
      status.textContent = `decode done on ${st.backend}: ${decodeSummary(st)}${st.denseSkipped ? ` (${st.denseSkipped})` : ''}`;
    } catch (e) {
      const msg = e instanceof Error ? `${e.name}: ${e.message}` : String(e);
      win.decodeState = { ...(win.decodeState ?? { backend: engine.backend.name, prompt: 0, blockSize: 0, topk: 0, steps: [], denseSkipped: null }), state: 'error', error: msg };
      status.dataset.state = 'error';
      status.textContent = msg;
    } finally {
      button.disabled = decodeButton.disabled = false;
    }
  };
  button.addEventListener('click', () => void go());
  decodeButton.addEventListener('click', () => void decode());
  button.disabled = false;
  decodeButton.disabled = false;
  status.dataset.state = 'ready';
  status.textContent = 'ready: press run';
}

void main().catch((e: unknown) => {
  const status = document.getElementById('status');
  if (status) {
    status.dataset.state = 'error';
    status.textContent = e instanceof Error ? `${e.name}: ${e.message}` : String(e);
  }
});
