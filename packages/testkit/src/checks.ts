/**
 * The checks the properties share (the routing rule is in routing-checks.ts): the
 * reference and calibration runs of the tolerance policy (core/compare.ts), running a problem on a
 * backend, and failure messages that carry the seed, the config and the worst index with its bound.
 */
import fc from 'fast-check';
import {
  type AttentionLayout, type Backend, type DType, type DeviceTensor, type HostTensor, type ProblemShape, type ResolvedConfig, type Routing,
  type MobaConfig, type ToleranceCheck, MobaError, checkTolerance, roundTo, toFloat64,
} from '@moba/core';
import { referenceBackward, referenceForward } from '@moba/core/reference';
import type { ProblemSpec } from './problem.js';
import { describeSpec } from './problem.js';
import type { PropertyContext } from './types.js';

/**
 * Runs `body` on `numRuns` generated values with the run's seed (and replay path); no shrinking. `examples`
 * run first (fixed values at the edges of the caps that a random draw would rarely reach).
 */
export async function forAll<T>(
  ctx: PropertyContext, arb: fc.Arbitrary<T>, body: (x: T) => Promise<void>, numRuns = ctx.numRuns, examples: readonly T[] = [],
): Promise<void> {
  await fc.assert(fc.asyncProperty(arb, body), {
    seed: ctx.seed,
    numRuns,
    ...(examples.length > 0 ? { examples: examples.map((x): [T] => [x]) } : {}),
    endOnFailure: true,
    includeErrorInReport: true,
    ...(ctx.path !== undefined ? { path: ctx.path } : {}),
  });
}

/** A failure naming the problem: `config: spec \n detail lines`. */
export function failure(spec: ProblemSpec | string, lines: readonly string[]): Error {
  const cfg = typeof spec === 'string' ? spec : describeSpec(spec);
  const e = new Error(`config: ${cfg}\n  ${lines.join('\n  ')}`);
  e.stack = e.message; // reports print the stack: keep it to the explanation
  return e;
}

/** Throws a failure listing every check that is out of tolerance. */
export function expectWithin(spec: ProblemSpec | string, checks: readonly ToleranceCheck[]): void {
  const bad = checks.filter((c) => !c.ok);
  if (bad.length > 0) throw failure(spec, bad.map((c) => c.message));
}

/** Rounds every value to `dtype` (the storage rounding of a backend's outputs). */
export function roundAll(dtype: DType, a: Float64Array): Float64Array {
  return dtype === 'f32' ? a.map(Math.fround) : a.map((x) => roundTo(dtype, x));
}

/** Awaits `p`, failing after `ms` (a backend must never hang; this catches asynchronous hangs). */
export async function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const limit = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not finish within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([p, limit]);
  } finally {
    clearTimeout(timer);
  }
}

/** Tracks device tensors and routings made during one check and disposes them all at the end. */
export class Scope {
  private readonly items: (DeviceTensor | Routing)[] = [];
  constructor(readonly backend: Backend) {}
  async up(t: HostTensor): Promise<DeviceTensor> {
    return this.own(await this.backend.upload(t));
  }
  own<T extends DeviceTensor | Routing>(x: T): T {
    this.items.push(x);
    return x;
  }
  async f64(t: DeviceTensor): Promise<Float64Array> {
    return toFloat64(await this.backend.download(t));
  }
  dispose(): void {
    this.backend.dispose(...this.items.splice(0));
  }
}

/** Runs `body` with a fresh scope and always disposes it. */
export async function scoped<T>(backend: Backend, body: (s: Scope) => Promise<T>): Promise<T> {
  const s = new Scope(backend);
  try {
    return await body(s);
  } finally {
    s.dispose();
  }
}

/**
 * What running and checking attention needs of a problem: a `Problem` (self-attention), or one with fewer
 * queries than keys (SPEC §8: `layout` a `QKLayout`, `shape.T` query rows, `shape.Tk` key rows).
 */
export interface AttentionProblem {
  readonly shape: ProblemShape;
  readonly layout: AttentionLayout;
  readonly cfg: MobaConfig;
  readonly rcfg: ResolvedConfig;
  readonly q: HostTensor;
  readonly k: HostTensor;
  readonly v: HostTensor;
  readonly dOut: HostTensor;
  readonly q64: Float64Array;
  readonly k64: Float64Array;
  readonly v64: Float64Array;
  readonly dOut64: Float64Array;
}

export interface DeviceProblem {
  readonly q: DeviceTensor;
  readonly k: DeviceTensor;
  readonly v: DeviceTensor;
  readonly dOut: DeviceTensor;
}

export async function uploadProblem(s: Scope, p: AttentionProblem): Promise<DeviceProblem> {
  return { q: await s.up(p.q), k: await s.up(p.k), v: await s.up(p.v), dOut: await s.up(p.dOut) };
}

export interface AttentionResult {
  readonly out: Float64Array;
  readonly lse: Float64Array;
  readonly dq?: Float64Array;
  readonly dk?: Float64Array;
  readonly dv?: Float64Array;
}

/** Runs forward (and backward) of `p` on the backend with a given routing; returns f64 copies. */
export async function runAttention(s: Scope, p: AttentionProblem, d: DeviceProblem, r: Routing, opts: { backward: boolean }): Promise<AttentionResult> {
  const { out, lse } = await s.backend.forward(d.q, d.k, d.v, r, p.layout, p.cfg);
  s.own(out);
  s.own(lse);
  const res = { out: await s.f64(out), lse: await s.f64(lse) };
  if (!opts.backward) return res;
  const g = await s.backend.backward(d.q, d.k, d.v, out, lse, d.dOut, r, p.layout, p.cfg);
  s.own(g.dq);
  s.own(g.dk);
  s.own(g.dv);
  return { ...res, dq: await s.f64(g.dq), dk: await s.f64(g.dk), dv: await s.f64(g.dv) };
}

/** The f64 reference and its calibration run (f32 intermediates, outputs rounded to the dtype). */
export interface ReferencePair {
  readonly ref: Required<AttentionResult>;
  readonly cal: Required<AttentionResult>;
}

/**
 * Reference + calibration of forward and backward for `p` under `indices` (optionally other keys; `calKeys`
 * replaces them in the calibration run only, e.g. keys that went through a kconv rounded to the dtype).
 */
export function referencePair(p: AttentionProblem, indices: Int32Array, opts: { keys?: Float64Array; calKeys?: Float64Array; backward?: boolean } = {}): ReferencePair {
  const { shape, layout, rcfg } = p;
  const dt = shape.dtype;
  const keys = opts.keys ?? p.k64;
  const ckeys = opts.calKeys ?? keys;
  const f = referenceForward(p.q64, keys, p.v64, indices, shape, layout, rcfg);
  const cf = referenceForward(p.q64, ckeys, p.v64, indices, shape, layout, rcfg, Math.fround);
  const calOut = roundAll(dt, cf.out);
  const calLse = cf.lse.map(Math.fround); // lse stays f32 in every dtype
  if (opts.backward === false) {
    const none = new Float64Array(0);
    return { ref: { out: f.out, lse: f.lse, dq: none, dk: none, dv: none }, cal: { out: calOut, lse: calLse, dq: none, dk: none, dv: none } };
  }
  const b = referenceBackward(p.q64, keys, p.v64, f.out, f.lse, p.dOut64, indices, shape, layout, rcfg);
  const cb = referenceBackward(p.q64, ckeys, p.v64, calOut, calLse, p.dOut64, indices, shape, layout, rcfg, Math.fround);
  return {
    ref: { out: f.out, lse: f.lse, dq: b.dq, dk: b.dk, dv: b.dv },
    cal: { out: calOut, lse: calLse, dq: roundAll(dt, cb.dq), dk: roundAll(dt, cb.dk), dv: roundAll(dt, cb.dv) },
  };
}

/** Tolerance checks of a backend result against a reference pair (gradients only when present; dk, dv `[Tk, Hkv, D]`). */
export function attentionChecks(label: string, shape: ProblemShape, got: AttentionResult, rp: ReferencePair): ToleranceCheck[] {
  const { T, Hq, Hkv, D, dtype } = shape;
  const Tk = shape.Tk ?? T;
  const checks = [
    checkTolerance(`${label} out`, got.out, rp.ref.out, rp.cal.out, { kind: 'forward', dtype, shape: [T, Hq, D] }),
    checkTolerance(`${label} lse`, got.lse, rp.ref.lse, rp.cal.lse, { kind: 'forward', dtype: 'f32', shape: [T, Hq] }),
  ];
  if (got.dq && got.dk && got.dv) {
    checks.push(
      checkTolerance(`${label} dq`, got.dq, rp.ref.dq, rp.cal.dq, { kind: 'backward', dtype, shape: [T, Hq, D] }),
      checkTolerance(`${label} dk`, got.dk, rp.ref.dk, rp.cal.dk, { kind: 'backward', dtype, shape: [Tk, Hkv, D] }),
      checkTolerance(`${label} dv`, got.dv, rp.ref.dv, rp.cal.dv, { kind: 'backward', dtype, shape: [Tk, Hkv, D] }),
    );
  }
  return checks;
}

/** Expects `fn` to reject with a MobaError whose code is one of `codes`; returns a problem description or null. */
export async function expectMobaError(what: string, codes: readonly string[], fn: () => Promise<unknown>): Promise<string | null> {
  try {
    await withTimeout(Promise.resolve().then(fn), 30_000, what);
  } catch (e) {
    if (e instanceof MobaError || (e instanceof Error && e.name === 'MobaError' && typeof (e as MobaError).code === 'string')) {
      const code = (e as MobaError).code;
      return codes.includes(code) ? null : `${what}: threw ${code} (${e.message}), expected ${codes.join(' or ')}`;
    }
    return `${what}: threw ${e instanceof Error ? `${e.name}: ${e.message}` : String(e)}, expected a MobaError ${codes.join(' or ')}`;
  }
  return `${what}: did not throw, expected a MobaError ${codes.join(' or ')}`;
}

/** First element at which two typed arrays differ bitwise (NaN payloads and -0 included); -1 when equal. */
export function firstBitDiff(a: Float32Array | Uint16Array | Int32Array, b: Float32Array | Uint16Array | Int32Array): number {
  if (a.length !== b.length || a.BYTES_PER_ELEMENT !== b.BYTES_PER_ELEMENT) return 0;
  const ua = new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
  const ub = new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
  for (let i = 0; i < ua.length; i++) if (ua[i] !== ub[i]) return Math.floor(i / a.BYTES_PER_ELEMENT);
  return -1;
}
