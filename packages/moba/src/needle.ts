/**
 * The FlashMoBA routing claim as an experiment (docs/routing-quality.md): planted "needle" keys among Gaussian
 * keys, routed by a backend's own `route`, the needle block's hit rate next to the statistical model's prediction.
 *
 * Model (derived in the doc): unit-norm queries, keys `k_i ~ N(0, I_d / d)`, so a key's score `q·k_i` has std
 * `s = 1/sqrt(d)`; the needle's score exceeds the others' mean by `Δμ` (raw score, this normalization). A block
 * centroid's score is the mean of its B key scores: the needle block's is `N(Δμ/B, s²/B)`, every other block's
 * `N(0, s²/B)`, all independent given q. In units of the centroid noise std the needle block stands
 * `μ = Δμ·sqrt(d/B)` above the rest (the paper's `SNR = Δμ·sqrt(d/(2B))` compares it with one other block:
 * `μ = sqrt(2)·SNR`). Causal routing keeps the own block and the top `k−1` of the `m` fully past blocks, so the
 * needle block is hit when at most `k−2` of the other `m−1` past blocks score above it.
 */
import { type Backend, type DeviceTensor, MobaError, Rng, hostTensor } from '@moba/core';
import { type BackendKind, createBackend } from './backends.js';

/** Upper tail `1 − Φ(x)` of the standard normal, relative error below 1.2e-7 (a Chebyshev fit of erfc). */
export function normalTail(x: number): number {
  const z = Math.abs(x) / Math.SQRT2;
  const t = 1 / (1 + 0.5 * z);
  const poly = -z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (-0.18628806 + t * (0.27886807
    + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277))))))));
  const erfc = t * Math.exp(poly);
  return x >= 0 ? erfc / 2 : 1 - erfc / 2;
}

/** `P(Binomial(n, p) ≤ c)`, summed in log space (no under/overflow for n up to millions). */
function binomialCdf(c: number, n: number, p: number): number {
  if (c >= n || p <= 0) return 1;
  if (c < 0 || p >= 1) return 0;
  const lr = Math.log(p) - Math.log1p(-p);
  let lt = n * Math.log1p(-p);
  let sum = 0;
  for (let j = 0; j <= c; j++) {
    sum += Math.exp(lt);
    lt += Math.log((n - j) / (j + 1)) + lr;
  }
  return Math.min(1, sum);
}

/**
 * Predicted probability that the needle block is among a causal query's selection: the needle block's
 * normalized score is `N(mu, 1)`, the `m − 1` other eligible blocks' are `N(0, 1)` (independent), `topk − 1`
 * slots go to eligible blocks. `∫ φ(x − mu) · P(Bin(m−1, 1−Φ(x)) ≤ topk−2) dx`, Simpson's rule on a fine grid.
 * Limits: `topk − 1 ≥ m` → 1; `topk = 1` → 0; `mu = 0` → `(topk − 1)/m` (chance); `mu → ∞` → 1.
 */
export function predictHitRate(mu: number, m: number, topk: number): number {
  if (!Number.isFinite(mu)) throw new MobaError('E_RANGE', `mu = ${mu} is invalid: must be a finite number`, 'mu');
  if (!Number.isInteger(m) || m < 1) throw new MobaError('E_RANGE', `m = ${m} is invalid: must be an integer >= 1 (eligible blocks)`, 'm');
  if (!Number.isInteger(topk) || topk < 1) throw new MobaError('E_RANGE', `topk = ${topk} is invalid: must be an integer >= 1`, 'topk');
  const slots = topk - 1;
  if (slots >= m) return 1;
  if (slots === 0) return 0;
  const lo = Math.min(mu, 0) - 9, hi = Math.max(mu, 0) + 9, n = 4000, h = (hi - lo) / n;
  let acc = 0;
  for (let i = 0; i <= n; i++) {
    const x = lo + i * h;
    const w = i === 0 || i === n ? 1 : i % 2 ? 4 : 2;
    const pdf = Math.exp(-0.5 * (x - mu) ** 2) / Math.sqrt(2 * Math.PI);
    acc += w * pdf * binomialCdf(slots - 1, m - 1, normalTail(x));
  }
  return Math.min(1, Math.max(0, (acc * h) / 3));
}

/** The needle block's gap in centroid-noise units for raw gap `delta`, head dim `d`, block `B`: `delta·sqrt(d/B)`. */
export const needleMu = (delta: number, d: number, B: number): number => delta * Math.sqrt(d / B);
/** The paper's signal-to-noise ratio `delta·sqrt(d/(2B))` (needle block against one other block). */
export const paperSnr = (delta: number, d: number, B: number): number => delta * Math.sqrt(d / (2 * B));

/** Wilson score interval of `hits / n` at normal quantile `z`. */
export function wilson(hits: number, n: number, z = 1.96): [number, number] {
  if (n === 0) return [0, 1];
  const p = hits / n, z2 = z * z, den = 1 + z2 / n;
  const mid = (p + z2 / (2 * n)) / den, half = (z * Math.sqrt((p * (1 - p)) / n + z2 / (4 * n * n))) / den;
  return [Math.max(0, mid - half), Math.min(1, mid + half)];
}

/** One generated problem: `q [rows, H, d]` unit-norm (orthonormal within a head), `k [T, H, d]`, one needle per query row. */
export interface NeedleProblem {
  readonly tokens: number;
  readonly heads: number;
  /** Query rows per head (the last `rows` positions, bottom-right aligned). */
  readonly rows: number;
  readonly headDim: number;
  readonly q: Float32Array;
  readonly k: Float32Array;
  /** First needle token of query row `a`, head `h`, at `[a·H + h]`; the needle spans `span` tokens from there. */
  readonly needle: Int32Array;
  readonly span: number;
}

/** Gaussian keys, orthonormal queries (so each row sees independent scores and none of the other rows' needles). */
export function noiseProblem(tokens: number, heads: number, rows: number, headDim: number, seed: number): Omit<NeedleProblem, 'needle' | 'span'> {
  if (rows > headDim) throw new MobaError('E_RANGE', `rows = ${rows} is invalid: at most headDim = ${headDim} orthonormal queries per head`, 'rows');
  if (rows > tokens) throw new MobaError('E_RANGE', `rows = ${rows} is invalid: at most tokens = ${tokens}`, 'rows');
  const rng = new Rng(seed);
  const k = rng.normals(tokens * heads * headDim, 1 / Math.sqrt(headDim));
  const q = new Float32Array(rows * heads * headDim);
  const v = new Float64Array(headDim);
  for (let h = 0; h < heads; h++) {
    for (let a = 0; a < rows; a++) {
      for (let c = 0; c < headDim; c++) v[c] = rng.normal();
      for (let pass = 0; pass < 2; pass++) { // Gram–Schmidt, twice for f64 orthogonality
        for (let b = 0; b < a; b++) {
          const o = (b * heads + h) * headDim;
          let dot = 0;
          for (let c = 0; c < headDim; c++) dot += v[c]! * q[o + c]!;
          for (let c = 0; c < headDim; c++) v[c]! -= dot * q[o + c]!;
        }
      }
      let nrm = 0;
      for (let c = 0; c < headDim; c++) nrm += v[c]! ** 2;
      const o = (a * heads + h) * headDim;
      for (let c = 0; c < headDim; c++) q[o + c] = v[c]! / Math.sqrt(nrm);
    }
  }
  return { tokens, heads, rows, headDim, q, k };
}

/**
 * Plants one needle per query row into a copy of the keys: row `a` (at position `t = T − rows + a`) gets `span`
 * consecutive tokens inside one uniformly chosen block `j < floor(t/B)` (never its own), each key moved by
 * `(delta/span)·q_a`, so the row's summed score gap over the span is `delta`. Rows without a past block get -1.
 */
export function plantNeedles(base: Omit<NeedleProblem, 'needle' | 'span'>, blockSize: number, delta: number, span: number, seed: number): NeedleProblem {
  if (span > blockSize) throw new MobaError('E_RANGE', `span = ${span} is invalid: at most blockSize = ${blockSize}`, 'span');
  const { tokens: T, heads: H, rows, headDim: d } = base;
  const k = Float32Array.from(base.k);
  const needle = new Int32Array(rows * H).fill(-1);
  const rng = new Rng(seed);
  for (let a = 0; a < rows; a++) {
    const cb = Math.floor((T - rows + a) / blockSize);
    if (cb === 0) continue;
    for (let h = 0; h < H; h++) {
      const p = rng.int(0, cb - 1) * blockSize + rng.int(0, blockSize - span);
      needle[a * H + h] = p;
      const qo = (a * H + h) * d;
      for (let l = 0; l < span; l++) {
        const ko = ((p + l) * H + h) * d;
        for (let c = 0; c < d; c++) k[ko + c]! += (delta / span) * base.q[qo + c]!;
      }
    }
  }
  return { ...base, k, needle, span };
}

/** Routes the problem on `backend` (optionally after kconv with a uniform width-`kconv` weight); hit per row (1/0, -1: no needle). */
export async function routeNeedles(backend: Backend, p: NeedleProblem, blockSize: number, topk: number, kconv = 0): Promise<Int8Array> {
  const { tokens: T, heads: H, rows, headDim: d } = p;
  const layout = { cuSeqlensQ: Int32Array.from([0, rows]), cuSeqlensK: Int32Array.from([0, T]) };
  const qd = await backend.upload(hostTensor('f32', [rows, H, d], p.q));
  let kd: DeviceTensor = await backend.upload(hostTensor('f32', [T, H, d], p.k));
  if (kconv > 0) {
    const w = await backend.upload(hostTensor('f32', [H * d, kconv], new Float32Array(H * d * kconv).fill(1 / kconv)));
    const kc = await backend.kconv(kd, w, { cuSeqlens: layout.cuSeqlensK });
    backend.dispose(kd, w);
    kd = kc;
  }
  const r = await backend.route(qd, kd, layout, { blockSize, topk });
  const idx = await backend.routingIndices(r);
  backend.dispose(qd, kd, r);
  const hit = new Int8Array(rows * H);
  for (let i = 0; i < rows * H; i++) {
    const p0 = p.needle[i]!;
    if (p0 < 0) { hit[i] = -1; continue; }
    const j = Math.floor(p0 / blockSize);
    let found = 0;
    for (let s = 0; s < topk; s++) if (idx[i * topk + s] === j) found = 1;
    hit[i] = found;
  }
  return hit;
}

export interface NeedleOptions {
  readonly backend: BackendKind | Backend;
  readonly tokens: number;
  /** Query rows per (d, B, Δμ) cell per trial. */
  readonly rows: number;
  readonly trials: number;
  readonly deltas: readonly number[];
  readonly headDims: readonly number[];
  readonly blockSizes: readonly number[];
  /** Attended fraction topk·B/T kept fixed: topk = round(fraction·T/B). */
  readonly fraction: number;
  /** Tokens per needle in the kconv comparison. */
  readonly span: number;
  /** kconv width of the comparison (0: no comparison). */
  readonly kconv: number;
  /** The Δμ (one of `deltas`) at which the span/kconv comparison runs. */
  readonly kconvDelta: number;
  readonly seed: number;
  readonly threads?: number;
}

export interface NeedleCell {
  readonly headDim: number;
  readonly blockSize: number;
  readonly topk: number;
  readonly delta: number;
  readonly snr: number;
  readonly mu: number;
  readonly rows: number;
  readonly hits: number;
  readonly measured: number;
  readonly predicted: number;
  /** Chance: the hit rate at Δμ = 0, mean of (topk−1)/m over the rows. */
  readonly chance: number;
  /** 95% Wilson interval of the measured rate. */
  readonly ci: readonly [number, number];
  /** The span-needle comparison (kconv section): hit rates without and with kconv; only at Δμ = kconvDelta. */
  readonly spanPlain?: number;
  readonly spanKconv?: number;
}

export interface NeedleReport {
  readonly backend: string;
  readonly options: Omit<NeedleOptions, 'backend' | 'threads'>;
  readonly cells: readonly NeedleCell[];
  readonly ms: number;
}

/** topk for block size B at attended fraction `fraction` of T tokens. */
export const needleTopk = (tokens: number, B: number, fraction: number): number => Math.max(1, Math.round((fraction * tokens) / B));

/** Runs the whole grid; `onCell` is told each finished cell (progress). */
export async function runNeedle(o: NeedleOptions, onCell?: (done: number, total: number) => void): Promise<NeedleReport> {
  const t0 = performance.now();
  const own = typeof o.backend === 'string';
  const backend = typeof o.backend === 'string'
    ? await createBackend(o.backend, o.backend === 'cpu' && o.threads !== undefined ? { threads: o.threads } : undefined)
    : o.backend;
  const cells: NeedleCell[] = [];
  const total = o.headDims.length * o.blockSizes.length * o.deltas.length * o.trials;
  let done = 0;
  try {
    for (const d of o.headDims) {
      const rowsPerHead = Math.min(o.rows, d);
      const heads = Math.ceil(o.rows / rowsPerHead);
      const acc = new Map<string, { rows: number; hits: number; pred: number; chance: number; spanRows: number; plain: number; conv: number }>();
      for (let trial = 0; trial < o.trials; trial++) {
        const seed = (o.seed * 7919 + trial * 104729 + d) >>> 0;
        const base = noiseProblem(o.tokens, heads, rowsPerHead, d, seed); // one key set per (d, trial), shared by its cells
        for (const B of o.blockSizes) {
          const topk = needleTopk(o.tokens, B, o.fraction);
          for (const [di, delta] of o.deltas.entries()) {
            const key = `${B}|${di}`;
            const a = acc.get(key) ?? { rows: 0, hits: 0, pred: 0, chance: 0, spanRows: 0, plain: 0, conv: 0 };
            acc.set(key, a);
            const cellSeed = (seed ^ (B * 131 + di * 7 + 17)) >>> 0;
            const hit = await routeNeedles(backend, plantNeedles(base, B, delta, 1, cellSeed), B, topk);
            for (let i = 0; i < o.rows; i++) { // rows beyond o.rows (the last head's spare queries) are not counted
              if (hit[i]! < 0) continue;
              const m = Math.floor((o.tokens - rowsPerHead + Math.floor(i / heads)) / B);
              a.rows++;
              a.hits += hit[i]!;
              a.pred += predictCached(needleMu(delta, d, B), m, topk);
              a.chance += Math.min(1, (topk - 1) / m);
            }
            if (o.kconv > 0 && delta === o.kconvDelta) {
              const ps = plantNeedles(base, B, delta, o.span, cellSeed + 1);
              const plain = await routeNeedles(backend, ps, B, topk);
              const conv = await routeNeedles(backend, ps, B, topk, o.kconv);
              for (let i = 0; i < o.rows; i++) {
                if (plain[i]! < 0) continue;
                a.spanRows++;
                a.plain += plain[i]!;
                a.conv += conv[i]!;
              }
            }
            onCell?.(++done, total);
          }
        }
      }
      for (const B of o.blockSizes) {
        const topk = needleTopk(o.tokens, B, o.fraction);
        for (const [di, delta] of o.deltas.entries()) {
          const a = acc.get(`${B}|${di}`)!;
          cells.push({
            headDim: d, blockSize: B, topk, delta, snr: paperSnr(delta, d, B), mu: needleMu(delta, d, B), rows: a.rows, hits: a.hits,
            measured: a.hits / a.rows, predicted: a.pred / a.rows, chance: a.chance / a.rows, ci: wilson(a.hits, a.rows),
            ...(a.spanRows > 0 ? { spanPlain: a.plain / a.spanRows, spanKconv: a.conv / a.spanRows } : {}),
          });
        }
      }
    }
  } finally {
    if (own) await backend.destroy();
  }
  const { backend: _b, threads: _t, ...options } = o;
  return { backend: backend.name, options, cells, ms: performance.now() - t0 };
}

const cache = new Map<string, number>();
function predictCached(mu: number, m: number, topk: number): number {
  const key = `${mu}|${m}|${topk}`;
  if (!cache.has(key)) cache.set(key, predictHitRate(mu, m, topk));
  return cache.get(key)!;
}
