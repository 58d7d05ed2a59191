/**
 * Problems for the conformance properties: a small, printable `ProblemSpec` (sizes, config and a data
 * seed) is what fast-check generates and shrinks; `makeProblem` expands it into dtype-rounded inputs
 * `q [T, Hq, D]`, `k, v [T, Hkv, D]`, `dOut [T, Hq, D]`. Generators are narrowed by the backend's caps only.
 */
import fc from 'fast-check';
import {
  type Capabilities, type DType, type HostTensor, type Layout, type MobaConfig, type ProblemShape, type ResolvedConfig, type Sequences,
  Rng, fromFloat, plan, resolveConfig, sequences, toFloat64,
} from '@moba/core';

/** Everything that defines one problem; small enough to print in a failure message. */
export interface ProblemSpec {
  /** Tokens of each packed sequence (T = their sum). */
  readonly seqlens: readonly number[];
  readonly Hq: number;
  readonly Hkv: number;
  readonly D: number;
  readonly dtype: DType;
  readonly blockSize: number;
  readonly topk: number;
  readonly causal: boolean;
  /** Seed of the input data. */
  readonly seed: number;
  readonly scale?: number;
}

/** A spec expanded into inputs; the f64 arrays hold the dtype-rounded values. */
export interface Problem {
  readonly spec: ProblemSpec;
  readonly shape: ProblemShape;
  readonly layout: Layout;
  readonly cfg: MobaConfig;
  readonly rcfg: ResolvedConfig;
  readonly seqs: Sequences;
  readonly q: HostTensor;
  readonly k: HostTensor;
  readonly v: HostTensor;
  readonly dOut: HostTensor;
  readonly q64: Float64Array;
  readonly k64: Float64Array;
  readonly v64: Float64Array;
  readonly dOut64: Float64Array;
}

/** `cuSeqlens` of a list of sequence lengths. */
export function cuSeqlensOf(seqlens: readonly number[]): Int32Array {
  const cu = new Int32Array(seqlens.length + 1);
  seqlens.forEach((n, i) => (cu[i + 1] = cu[i]! + n));
  return cu;
}

/** One line naming every size and option of a spec (used in failure messages). */
export function describeSpec(s: ProblemSpec): string {
  const T = s.seqlens.reduce((a, b) => a + b, 0);
  return `T=${T} seqlens=[${s.seqlens.join(',')}] Hq=${s.Hq} Hkv=${s.Hkv} D=${s.D} dtype=${s.dtype} blockSize=${s.blockSize} ` +
    `topk=${s.topk} causal=${s.causal}${s.scale !== undefined ? ` scale=${s.scale}` : ''} dataSeed=${s.seed}`;
}

/** Draws values in `dtype` from N(0, std²); returns the tensor and its exact f64 values. */
export function randomTensor(rng: Rng, dtype: DType, shape: readonly number[], std = 1): { t: HostTensor; f64: Float64Array } {
  const n = shape.reduce((a, b) => a * b, 1);
  const t = fromFloat(rng.normals(n, std), dtype, shape);
  return { t, f64: toFloat64(t) };
}

/** Expands a spec into inputs. `keys` may replace the generated k (values are rounded to the dtype). */
export function makeProblem(spec: ProblemSpec, keys?: Float64Array): Problem {
  const { Hq, Hkv, D, dtype } = spec;
  const T = spec.seqlens.reduce((a, b) => a + b, 0);
  const rng = new Rng(spec.seed);
  const q = randomTensor(rng, dtype, [T, Hq, D]);
  let k = randomTensor(rng, dtype, [T, Hkv, D]);
  if (keys) {
    const t = fromFloat(keys, dtype, [T, Hkv, D]);
    k = { t, f64: toFloat64(t) };
  }
  const v = randomTensor(rng, dtype, [T, Hkv, D]);
  const dOut = randomTensor(rng, dtype, [T, Hq, D]);
  const layout = { cuSeqlens: cuSeqlensOf(spec.seqlens) };
  const cfg: MobaConfig = { blockSize: spec.blockSize, topk: spec.topk, causal: spec.causal, ...(spec.scale !== undefined ? { scale: spec.scale } : {}) };
  return {
    spec, layout, cfg,
    shape: { T, Hq, Hkv, D, dtype },
    rcfg: resolveConfig(cfg, D),
    seqs: sequences(layout, spec.blockSize),
    q: q.t, k: k.t, v: v.t, dOut: dOut.t,
    q64: q.f64, k64: k.f64, v64: v.f64, dOut64: dOut.f64,
  };
}

/** Head dims the generators may use: the declared list, or 1..min(maxHeadDim, cap). */
export function headDims(caps: Capabilities, cap = 24): number[] {
  if (caps.headDims && caps.headDims.length > 0) {
    const small = caps.headDims.filter((d) => d <= Math.max(cap, 128));
    return small.length > 0 ? [...small] : [Math.min(...caps.headDims)];
  }
  const hi = Math.min(caps.maxHeadDim, cap);
  return Array.from({ length: hi }, (_, i) => i + 1);
}

/** `want` narrowed to what caps allow (falling back to the small default range when none fits). */
function productionDims(caps: Capabilities, want?: readonly number[]): number[] {
  if (!want) return headDims(caps);
  const ok = want.filter((d) => supportsHeadDim(caps, d));
  return ok.length > 0 ? ok : [nearestHeadDim(caps, Math.max(...want))];
}

/** The dtype single-dtype checks use: f32 when declared, else the first declared one. */
export function preferredDtype(caps: Capabilities): DType {
  return caps.dtypes.includes('f32') ? 'f32' : caps.dtypes[0]!;
}

/** Whether the backend takes head dim `D`. */
export function supportsHeadDim(caps: Capabilities, D: number): boolean {
  return caps.headDims ? caps.headDims.includes(D) : D >= 1 && D <= caps.maxHeadDim;
}

/** A supported head dim near `want` (the nearest declared one for a list). */
export function nearestHeadDim(caps: Capabilities, want: number): number {
  if (supportsHeadDim(caps, want)) return want;
  const list = caps.headDims ? [...caps.headDims] : [Math.min(want, caps.maxHeadDim)];
  return list.reduce((best, d) => (Math.abs(d - want) < Math.abs(best - want) ? d : best), list[0]!);
}

export interface SpecLimits {
  readonly maxTokens?: number;
  readonly maxSeqs?: number;
  readonly maxTopk?: number;
  readonly maxBlockSize?: number;
  readonly causal?: boolean;
  readonly dtypes?: readonly DType[];
  /** Head dims to draw from (filtered by caps) instead of the small default range. */
  readonly headDims?: readonly number[];
  readonly minBlockSize?: number;
  readonly minTokens?: number;
  readonly maxHkv?: number;
  /** Largest GQA group Hq / Hkv (default 8). */
  readonly maxGroup?: number;
}

/** GQA group sizes the generators reach: 1..3 usually, 4..8 (large groups, with Hkv up to its limit) a third of the time. */
export function groupArb(max = 8): fc.Arbitrary<number> {
  const small = fc.integer({ min: 1, max: Math.min(3, max) });
  return max <= 3 ? small : fc.oneof({ arbitrary: small, weight: 2 }, { arbitrary: fc.integer({ min: 4, max }), weight: 1 });
}

/** topk values the generators reach: 1..6 usually, 7..`hi` (hi = min(maxTopk, 16)) a third of the time. */
export function topkArb(caps: Capabilities, hi = 16): fc.Arbitrary<number> {
  const top = Math.min(caps.maxTopk, hi);
  const small = fc.integer({ min: 1, max: Math.min(6, top) });
  return top <= 6 ? small : fc.oneof({ arbitrary: small, weight: 2 }, { arbitrary: fc.integer({ min: 7, max: top }), weight: 1 });
}

/** The workspace `plan()` gives a spec (what `caps.memoryBytes` bounds). */
export function specWorkspace(s: ProblemSpec): number {
  const T = s.seqlens.reduce((a, b) => a + b, 0);
  const layout = { cuSeqlens: cuSeqlensOf(s.seqlens) };
  const cfg = { blockSize: s.blockSize, topk: s.topk, causal: s.causal };
  return plan({ T, Hq: s.Hq, Hkv: s.Hkv, D: s.D, dtype: s.dtype }, layout, resolveConfig(cfg, s.D)).workspaceBytes;
}

/** `s` shrunk (topk, then heads, then tokens halved) until its workspace fits `caps.memoryBytes`. */
export function fitMemory<S extends ProblemSpec>(caps: Capabilities, s: S): S {
  let x = s;
  while (specWorkspace(x) > caps.memoryBytes) {
    if (x.topk > 1) x = { ...x, topk: Math.ceil(x.topk / 2) };
    else if (x.Hq > x.Hkv) x = { ...x, Hq: x.Hkv };
    else if (x.Hkv > 1) x = { ...x, Hq: 1, Hkv: 1 };
    else if (x.seqlens.some((n) => n > 1)) x = { ...x, seqlens: x.seqlens.map((n) => Math.ceil(n / 2)) };
    else break; // the smallest problem: nothing left to shrink
  }
  return x;
}

/**
 * The general problem generator, narrowed by `caps` (dtypes, head dims, maxTopk, maxBlockSize, nonCausal,
 * memoryBytes): GQA groups up to 8 with Hkv up to 2, topk up to min(maxTopk, 16).
 */
export function specArb(caps: Capabilities, lim: SpecLimits = {}): fc.Arbitrary<ProblemSpec> {
  const maxLen = lim.maxTokens ?? 40;
  const causal = lim.causal !== undefined ? fc.constant(lim.causal) : caps.nonCausal ? fc.boolean() : fc.constant(true);
  const dtypes = (lim.dtypes ?? caps.dtypes).filter((d) => caps.dtypes.includes(d));
  return fc.record({
    seqlens: fc.array(fc.integer({ min: Math.min(lim.minTokens ?? 1, maxLen), max: maxLen }), { minLength: 1, maxLength: lim.maxSeqs ?? 3 }),
    Hkv: fc.integer({ min: 1, max: lim.maxHkv ?? 2 }),
    group: groupArb(lim.maxGroup ?? 8),
    D: fc.constantFrom(...productionDims(caps, lim.headDims)),
    dtype: fc.constantFrom(...dtypes),
    blockSize: fc.integer({ min: Math.min(lim.minBlockSize ?? 1, caps.maxBlockSize), max: Math.min(caps.maxBlockSize, lim.maxBlockSize ?? 12) }),
    topk: topkArb({ ...caps, maxTopk: Math.min(caps.maxTopk, lim.maxTopk ?? 16) }),
    causal,
    seed: fc.integer({ min: 1, max: 0x7fffffff }),
  }).map(({ group, ...r }) => fitMemory(caps, { ...r, Hq: r.Hkv * group }));
}

/**
 * A random valid routing `[T, Hq, topk]` for `p` (SPEC §3 format): per row a random subset of the
 * allowed blocks (causal: 0..cb, the own block usually included; non-causal: any block), ascending,
 * -1 padded; a few rows get fewer blocks than topk, and occasionally none.
 */
export function randomRouting(p: Problem, rng: Rng): Int32Array {
  const { T, Hq } = p.shape;
  const K = p.rcfg.topk;
  const B = p.rcfg.blockSize;
  const out = new Int32Array(T * Hq * K).fill(-1);
  for (let t = 0; t < T; t++) {
    const s = p.seqs.seqs[p.seqs.seqOf[t]!]!;
    const cb = Math.floor((t - s.start) / B);
    const allowed = p.rcfg.causal ? cb + 1 : s.nBlocks;
    for (let h = 0; h < Hq; h++) {
      const pool = Array.from({ length: allowed }, (_, j) => j);
      const chosen: number[] = [];
      const r = rng.next();
      let want = r < 0.04 ? 0 : r < 0.2 ? rng.int(1, Math.min(K, allowed)) : Math.min(K, allowed);
      if (p.rcfg.causal && want > 0 && rng.next() < 0.9) {
        chosen.push(cb); // the own block, as the router would pick it
        pool.pop();
        want--;
      }
      while (want-- > 0 && pool.length > 0) chosen.push(pool.splice(rng.int(0, pool.length - 1), 1)[0]!);
      chosen.sort((a, b) => a - b).forEach((j, i) => (out[(t * Hq + h) * K + i] = j));
    }
  }
  return out;
}
