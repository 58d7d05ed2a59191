/**
 * KV cache schedules (SPEC §9) for the cache properties: a small printable `CacheSpec` (sizes, config, kconv
 * width, a data seed and a list of append / attend steps over a few interleaved sequences) that fast-check
 * generates, narrowed by caps; and `CacheRun`, which plays a schedule on a backend's cache while keeping the
 * raw keys and values it appended on the host, so every result can be recomputed by the float64 reference.
 */
import fc from 'fast-check';
import { type Backend, type Capabilities, type DType, type HostTensor, type KVCache, Rng, fromFloat, toFloat64 } from '@moba/core';
import { headDims, randomTensor, topkArb } from '../problem.js';

/** One step: tokens appended to (or queries attending from) some sequences, by index into the run's sequences. */
export interface CacheStep {
  readonly op: 'append' | 'attend';
  /** `[sequence index, tokens appended | queries (clipped to the sequence's length)]`, each sequence at most once. */
  readonly parts: readonly (readonly [number, number])[];
}

export interface CacheSpec {
  readonly Hq: number;
  readonly Hkv: number;
  readonly D: number;
  readonly dtype: DType;
  readonly blockSize: number;
  readonly topk: number;
  readonly causal: boolean;
  /** kconv width, 0 without kconv. */
  readonly width: number;
  readonly seqs: number;
  readonly steps: readonly CacheStep[];
  readonly seed: number;
}

/** Tokens a sequence may reach in a schedule ("a few hundred"). */
export const MAX_SEQ_TOKENS = 300;
/** A topk above every sequence's block count (blockSize >= 1): the dense attend of `caps.cacheDense`. */
export const DENSE_TOPK = MAX_SEQ_TOKENS + 1;

export function describeCacheSpec(s: CacheSpec): string {
  const steps = s.steps.map((st) => `${st.op === 'append' ? 'A' : 'Q'}(${st.parts.map(([i, n]) => `${i}:${n}`).join(' ')})`).join(' ');
  return `Hq=${s.Hq} Hkv=${s.Hkv} D=${s.D} dtype=${s.dtype} blockSize=${s.blockSize} topk=${s.topk} causal=${s.causal} ` +
    `kconv W=${s.width} seqs=${s.seqs} dataSeed=${s.seed} steps: ${steps}`;
}

/** Parts over distinct sequences of `n`, in a random order. */
function partsArb(n: number, count: fc.Arbitrary<number>, minSeqs = 1): fc.Arbitrary<(readonly [number, number])[]> {
  return fc.tuple(fc.shuffledSubarray(Array.from({ length: n }, (_, i) => i), { minLength: Math.min(minSeqs, n), maxLength: n }), fc.array(count, { minLength: n, maxLength: n }))
    .map(([ids, counts]) => ids.map((id, i) => [id, counts[i]!] as const));
}

/** Chunk sizes: decode-sized (1..8), medium, or a prefill of up to a few hundred tokens. */
const chunkArb = fc.oneof({ arbitrary: fc.integer({ min: 1, max: 8 }), weight: 3 }, { arbitrary: fc.integer({ min: 9, max: 60 }), weight: 2 }, { arbitrary: fc.integer({ min: 61, max: 250 }), weight: 1 });
/** The first append's sizes (every sequence starts with one): short or a prefill. */
const prefillArb = fc.oneof(fc.integer({ min: 1, max: 16 }), fc.integer({ min: 17, max: 250 }));
/** Queries per sequence: 1 (decode) or more (chunked prefill). */
const nqArb = fc.oneof(fc.constant(1), fc.integer({ min: 2, max: 12 }));

export interface CacheLimits {
  /** Fewest sequences (default 1). */
  readonly minSeqs?: number;
  readonly maxSteps?: number;
  /** kconv width; undefined: 0..min(5, maxKconvWidth) when caps.kconv. */
  readonly width?: number;
}

/** The schedule generator, narrowed by caps (dtypes, head dims, block size, topk, nonCausal, kconv). */
export function cacheSpecArb(caps: Capabilities, lim: CacheLimits = {}): fc.Arbitrary<CacheSpec> {
  const maxW = caps.kconv ? Math.min(5, caps.maxKconvWidth) : 0;
  const width = lim.width !== undefined ? fc.constant(Math.min(lim.width, maxW)) : maxW > 0 ? fc.integer({ min: 0, max: maxW }) : fc.constant(0);
  return fc.record({
    Hkv: fc.integer({ min: 1, max: 2 }),
    group: fc.oneof(fc.constant(1), fc.integer({ min: 2, max: 4 })),
    D: fc.constantFrom(...headDims(caps, 16)),
    dtype: fc.constantFrom(...caps.dtypes),
    blockSize: fc.integer({ min: 1, max: Math.min(16, caps.maxBlockSize) }),
    // caps.cacheDense: sometimes a topk covering every block of any sequence (dense decode on the same cache)
    topk: caps.cacheDense ? fc.oneof({ weight: 4, arbitrary: topkArb({ ...caps, maxTopk: Math.min(caps.maxTopk, 6) }) }, { weight: 1, arbitrary: fc.constant(DENSE_TOPK) })
      : topkArb({ ...caps, maxTopk: Math.min(caps.maxTopk, 6) }),
    causal: caps.nonCausal ? fc.boolean() : fc.constant(true),
    width,
    seqs: fc.integer({ min: lim.minSeqs ?? 1, max: 3 }),
    seed: fc.integer({ min: 1, max: 0x7fffffff }),
  }).chain((r) => fc.tuple(partsArb(r.seqs, prefillArb, r.seqs), fc.array(fc.oneof(
    partsArb(r.seqs, chunkArb, 1).map((parts): CacheStep => ({ op: 'append', parts })),
    partsArb(r.seqs, nqArb, 1).map((parts): CacheStep => ({ op: 'attend', parts })),
  ), { minLength: 1, maxLength: lim.maxSteps ?? 7 })).map(([first, steps]) => {
    const { group, ...rest } = r;
    const last: CacheStep = { op: 'attend', parts: Array.from({ length: r.seqs }, (_, i) => [i, 3] as const) };
    return clipSchedule({ ...rest, Hq: r.Hkv * group, steps: [{ op: 'append', parts: first }, ...steps, last] });
  }));
}

/** Caps every sequence at MAX_SEQ_TOKENS (appends beyond are cut) and drops parts that became empty. */
export function clipSchedule(s: CacheSpec): CacheSpec {
  const len = new Array<number>(s.seqs).fill(0);
  const steps: CacheStep[] = [];
  for (const st of s.steps) {
    const parts = st.op === 'attend' ? st.parts : st.parts.map(([i, n]) => {
      const m = Math.min(n, MAX_SEQ_TOKENS - len[i]!);
      len[i]! += m;
      return [i, m] as const;
    }).filter(([, n]) => n > 0);
    if (parts.length > 0) steps.push({ op: st.op, parts });
  }
  return { ...s, steps };
}

/** `spec` with `parts` appended before its first step. */
export function withFirstAppend(spec: CacheSpec, parts: readonly (readonly [number, number])[]): CacheSpec {
  return clipSchedule({ ...spec, steps: [{ op: 'append', parts }, ...spec.steps] });
}

/** Pages a schedule needs at most (every sequence's final length), plus `slack`. */
export function pagesNeeded(s: CacheSpec, slack = 1): number {
  const len = new Array<number>(s.seqs).fill(0);
  for (const st of s.steps) if (st.op === 'append') for (const [i, n] of st.parts) len[i]! += n;
  return len.reduce((a, n) => a + Math.ceil(n / s.blockSize), 0) + slack;
}

/** The attend results of one step, as raw data (for bitwise comparisons) and f64. */
export interface AttendResult {
  readonly seqs: readonly number[];
  readonly nq: readonly number[];
  readonly q64: Float64Array;
  readonly out: HostTensor;
  readonly lse: HostTensor;
}

/**
 * One schedule played on one cache. `raw[i]` / `values[i]` hold sequence i's appended raw keys and values
 * (dtype-rounded, f64); `ids[i]` is its cache id.
 */
export class CacheRun {
  readonly raw: number[][];
  readonly values: number[][];
  /** Cache ids by sequence index (forks and renewed sequences change it). */
  readonly ids: number[];
  readonly weight: { t: HostTensor; f64: Float64Array } | null;
  /** Appends and attends so far: they seed the next step's data (the same in every run of a spec). */
  private appends = 0;
  private attends = 0;

  private constructor(readonly backend: Backend, readonly cache: KVCache, readonly spec: CacheSpec, weight: CacheRun['weight']) {
    this.weight = weight;
    this.ids = Array.from({ length: spec.seqs }, () => cache.newSequence());
    this.raw = this.ids.map(() => []);
    this.values = this.ids.map(() => []);
  }

  /** The kconv weight of a spec (small enough that both SiLU regimes occur). */
  static weightOf(spec: CacheSpec): CacheRun['weight'] {
    return spec.width > 0 ? randomTensor(new Rng(spec.seed ^ 0x6b63), spec.dtype, [spec.Hkv * spec.D, spec.width], 0.5) : null;
  }

  /** A fresh cache for `spec` with room for `pages` pages (default: the schedule's need plus one). */
  static async start(b: Backend, spec: CacheSpec, pages = pagesNeeded(spec)): Promise<CacheRun> {
    const weight = CacheRun.weightOf(spec);
    const wd = weight ? await b.upload(weight.t) : undefined;
    try {
      const cache = await b.createCache!({
        Hkv: spec.Hkv, D: spec.D, dtype: spec.dtype, blockSize: spec.blockSize, capacityTokens: pages * spec.blockSize, maxSequences: 8,
        ...(wd ? { kconvWeight: wd } : {}),
      });
      return new CacheRun(b, cache, spec, weight);
    } finally {
      if (wd) b.dispose(wd); // the cache copied it
    }
  }

  length(i: number): number {
    return this.raw[i]!.length / (this.spec.Hkv * this.spec.D);
  }

  /** Raw keys and values for `parts` (the data of the run's next step: the same in every run of the spec). */
  nextData(parts: readonly (readonly [number, number])[]): { k: HostTensor; v: HostTensor; k64: Float64Array; v64: Float64Array; cu: Int32Array } {
    const { Hkv, D, dtype } = this.spec;
    const T = parts.reduce((a, [, n]) => a + n, 0);
    const rng = new Rng((this.spec.seed + 7919 * ++this.appends) >>> 0);
    const k = randomTensor(rng, dtype, [T, Hkv, D]);
    const v = randomTensor(rng, dtype, [T, Hkv, D]);
    const cu = new Int32Array(parts.length + 1);
    parts.forEach(([, n], b) => (cu[b + 1] = cu[b]! + n));
    return { k: k.t, v: v.t, k64: k.f64, v64: v.f64, cu };
  }

  /** Appends `parts` in one call (or, with `split`, one call per sequence: the same data, another batch composition). */
  async append(parts: readonly (readonly [number, number])[], split = false): Promise<void> {
    const d = this.nextData(parts);
    const C = this.spec.Hkv * this.spec.D;
    const groups = split ? parts.map((_, b) => [b]) : [parts.map((_, b) => b)];
    for (const g of groups) {
      const rows = (x: Float64Array): Float64Array => Float64Array.from(g.flatMap((b) => Array.from(x.subarray(d.cu[b]! * C, d.cu[b + 1]! * C))));
      const k = split ? fromFloat(rows(d.k64), this.spec.dtype, [rows(d.k64).length / C, this.spec.Hkv, this.spec.D]) : d.k;
      const v = split ? fromFloat(rows(d.v64), this.spec.dtype, [rows(d.v64).length / C, this.spec.Hkv, this.spec.D]) : d.v;
      const cu = new Int32Array(g.length + 1);
      g.forEach((b, i) => (cu[i + 1] = cu[i]! + parts[b]![1]));
      const kd = await this.backend.upload(k);
      const vd = await this.backend.upload(v);
      try {
        await this.cache.append(g.map((b) => this.ids[parts[b]![0]]!), kd, vd, cu);
      } finally {
        this.backend.dispose(kd, vd);
      }
    }
    parts.forEach(([i], b) => {
      for (let x = d.cu[b]! * C; x < d.cu[b + 1]! * C; x++) {
        this.raw[i]!.push(d.k64[x]!);
        this.values[i]!.push(d.v64[x]!);
      }
    });
  }

  /** The attend parts that can run now: sequences with tokens, nq clipped to their length. */
  attendParts(parts: readonly (readonly [number, number])[]): [number, number][] {
    return parts.filter(([i]) => this.length(i) > 0).map(([i, n]) => [i, Math.min(n, this.length(i))]);
  }

  /** Attends `parts` (already clipped) with queries `q64` (or fresh ones) in one call. */
  async attend(parts: readonly (readonly [number, number])[], q64?: Float64Array): Promise<AttendResult> {
    const { Hq, D, dtype } = this.spec;
    const Tq = parts.reduce((a, [, n]) => a + n, 0);
    const q = q64 ? fromFloat(q64, dtype, [Tq, Hq, D]) : randomTensor(new Rng((this.spec.seed + 104729 * ++this.attends) >>> 0), dtype, [Tq, Hq, D]).t;
    const cu = new Int32Array(parts.length + 1);
    parts.forEach(([, n], b) => (cu[b + 1] = cu[b]! + n));
    const qd = await this.backend.upload(q);
    try {
      const res = await this.cache.attend(parts.map(([i]) => this.ids[i]!), qd, cu, { topk: this.spec.topk, causal: this.spec.causal });
      const out = await this.backend.download(res.out);
      const lse = await this.backend.download(res.lse);
      this.backend.dispose(res.out, res.lse);
      return { seqs: parts.map(([i]) => i), nq: parts.map(([, n]) => n), q64: toFloat64(q), out, lse };
    } finally {
      this.backend.dispose(qd);
    }
  }

  /** Frees sequence i and gives its index a new, empty sequence (which may reuse the freed pages). */
  renew(i: number): void {
    this.cache.free(this.ids[i]!);
    this.ids[i] = this.cache.newSequence();
    this.raw[i] = [];
    this.values[i] = [];
  }

  /** Forks sequence i; returns the fork's index (its host record a copy of i's). */
  async fork(i: number): Promise<number> {
    const id = await this.cache.fork(this.ids[i]!);
    this.ids.push(id);
    this.raw.push([...this.raw[i]!]);
    this.values.push([...this.values[i]!]);
    return this.ids.length - 1;
  }

  async destroy(): Promise<void> {
    await this.cache.destroy();
  }
}
