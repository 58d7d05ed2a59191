/**
 * Non-finite values (docs/api.md, "Non-finite values"): NaN, +Inf and −Inf in one element of q, k, v, dOut or the
 * kconv weight. Each backend is compared with the float64 reference row by row: the set of rows of out, lse, dq,
 * dk, dv (k', dk, dw for kconv) that hold a non-finite value must be exactly the reference's, and the finite rows
 * must pass the usual tolerance. Tiny shapes, one run per case: the suite runs on software adapters too.
 */
import { type Backend, type Capabilities, type DType, type ToleranceCheck, Rng, checkTolerance, fromFloat, toFloat64 } from '@moba/core';
import { referenceKconv, referenceKconvBackward } from '@moba/core/reference';
import { type ReferencePair, attentionChecks, failure, referencePair, roundAll, runAttention, scoped, uploadProblem, withTimeout } from '../checks.js';
import { type Problem, type ProblemSpec, describeSpec, makeProblem, nearestHeadDim, preferredDtype, randomTensor } from '../problem.js';
import { type Property, Skip } from '../types.js';

export type Operand = 'q' | 'k' | 'v' | 'dOut';
const VALUES: readonly [string, number][] = [['NaN', NaN], ['+Inf', Infinity], ['-Inf', -Infinity]];

/** Rows (of `width` elements) holding a non-finite value. */
export function badRows(a: ArrayLike<number>, width: number): Set<number> {
  const bad = new Set<number>();
  for (let i = 0; i < a.length; i++) if (!Number.isFinite(a[i]!)) bad.add(Math.floor(i / width));
  return bad;
}

/** `a` with every element of the rows in `rows` set to 0 (so that the tolerance check sees the finite rows only). */
function zeroRows(a: Float64Array, width: number, rows: ReadonlySet<number>): Float64Array {
  const z = a.slice();
  for (const r of rows) z.fill(0, r * width, (r + 1) * width);
  return z;
}

/**
 * Lines naming the rows whose finiteness differs between `got` and `ref` (rows unravelled over `heads`); rows
 * non-finite in `allowed` (caps.nonFinite 'block') may be non-finite in `got` too.
 */
export function rowSetErrors(name: string, got: ArrayLike<number>, ref: ArrayLike<number>, width: number, heads: number, allowed?: ArrayLike<number>): string[] {
  const g = badRows(got, width);
  const r = badRows(ref, width);
  const may = allowed ? badRows(allowed, width) : new Set<number>();
  const lines: string[] = [];
  const at = (row: number): string => `${name} row (t=${Math.floor(row / heads)}, h=${row % heads})`;
  for (const row of g) if (!r.has(row) && !may.has(row)) lines.push(`${at(row)} is non-finite (${Array.from(Array.prototype.slice.call(got, row * width, row * width + Math.min(width, 4))).join(', ')}…), the reference's is finite`);
  for (const row of r) if (!g.has(row)) lines.push(`${at(row)} is finite (${Array.from(Array.prototype.slice.call(got, row * width, row * width + Math.min(width, 4))).join(', ')}…), the reference's is not`);
  return lines;
}

/** `p` with the f64 values of `operand` replaced (rounded to the dtype, non-finite values kept). */
export function withValues(p: Problem, operand: Operand, values: Float64Array): Problem {
  const t = fromFloat(values, p.shape.dtype, p[operand].shape);
  return { ...p, [operand]: t, [`${operand}64`]: toFloat64(t) } as Problem;
}

/** `p` with element `i` of `operand` set to `x`. */
export function inject(p: Problem, operand: Operand, i: number, x: number): Problem {
  const a = p[`${operand}64`].slice();
  a[i] = x;
  return withValues(p, operand, a);
}

/** Runs forward and backward of `p` under `indices` and returns every row-set and tolerance failure. */
export async function nonFiniteErrors(ctx: { readonly backend: Backend }, p: Problem, indices: Int32Array, opts: { route?: boolean } = {}): Promise<string[]> {
  const b = ctx.backend;
  const { T, Hq, Hkv, D } = p.shape;
  return scoped(b, async (s) => {
    const d = await uploadProblem(s, p);
    if (opts.route) s.own(await withTimeout(b.route(d.q, d.k, p.layout, p.cfg), 300_000, 'route() with a non-finite input'));
    const r = s.own(await b.routingFromIndices(indices.slice(), { T, Hq }, p.layout, p.cfg));
    const got = await withTimeout(runAttention(s, p, d, r, { backward: true }), 300_000, 'forward/backward with a non-finite input');
    const rp = referencePair(p, indices);
    // caps.nonFinite 'block': the causal mask may be absent for non-finite values (the same routing, non-causal)
    const block = b.caps.nonFinite === 'block' && p.rcfg.causal ? referencePair({ ...p, rcfg: { ...p.rcfg, causal: false } }, indices).ref : undefined;
    const lines = [
      ...rowSetErrors('out', got.out, rp.ref.out, D, Hq, block?.out),
      ...rowSetErrors('lse', got.lse, rp.ref.lse, 1, Hq, block?.lse),
      ...rowSetErrors('dq', got.dq!, rp.ref.dq, D, Hq, block?.dq),
      ...rowSetErrors('dk', got.dk!, rp.ref.dk, D, Hkv, block?.dk),
      ...rowSetErrors('dv', got.dv!, rp.ref.dv, D, Hkv, block?.dv),
    ];
    if (lines.length > 0) return lines;
    // -- the finite rows: the usual tolerance (empty rows' lse = -Infinity stays, as exact) --
    const mask = (name: keyof ReferencePair['ref'], width: number): Set<number> => {
      const bad = badRows(rp.ref[name], width);
      for (const row of badRows(got[name]!, width)) bad.add(row); // rows 'block' allows (the others failed above)
      if (name === 'lse') for (const row of [...bad]) if (rp.ref.lse[row] === -Infinity) bad.delete(row);
      return bad;
    };
    const m = { out: mask('out', D), lse: mask('lse', 1), dq: mask('dq', D), dk: mask('dk', D), dv: mask('dv', D) };
    const w = { out: D, lse: 1, dq: D, dk: D, dv: D };
    const pick = (x: ReferencePair['ref']): ReferencePair['ref'] =>
      ({ out: zeroRows(x.out, w.out, m.out), lse: zeroRows(x.lse, w.lse, m.lse), dq: zeroRows(x.dq, w.dq, m.dq), dk: zeroRows(x.dk, w.dk, m.dk), dv: zeroRows(x.dv, w.dv, m.dv) });
    const checks: ToleranceCheck[] = attentionChecks('finite rows', p.shape, pick(got as ReferencePair['ref']), { ref: pick(rp.ref), cal: pick(rp.cal) });
    return checks.filter((c) => !c.ok).map((c) => c.message);
  });
}

/** The sweep's problem: two sequences (11, 6), B 4, top-2 (own block + the one before), GQA 2/1, one row with no keys. */
function sweepProblem(caps: Capabilities, dtype: DType, seed: number): { p: Problem; indices: Int32Array } {
  const spec: ProblemSpec = {
    seqlens: [11, 6], Hq: 2, Hkv: 1, D: nearestHeadDim(caps, dtype === 'f32' ? 4 : 64), dtype,
    blockSize: Math.min(4, caps.maxBlockSize), topk: Math.min(2, caps.maxTopk), causal: true, seed,
  };
  const p = makeProblem(spec);
  const { T, Hq } = p.shape;
  const K = spec.topk;
  const B = spec.blockSize;
  const indices = new Int32Array(T * Hq * K).fill(-1);
  for (let t = 0; t < T; t++) {
    const sq = p.seqs.seqs[p.seqs.seqOf[t]!]!;
    const cb = Math.floor((t - sq.start) / B);
    for (let h = 0; h < Hq; h++) {
      const row = (t * Hq + h) * K;
      if (t === 9 && h === 0) continue; // no keys: out 0, lse -Infinity whatever the data
      const both = cb > 0 && K > 1 && !(cb === 2 && h === 1); // head 1 of block 2 skips block 1 (unselected)
      if (both) indices.set([cb - 1, cb], row);
      else indices[row] = cb;
    }
  }
  return { p, indices };
}

/** Where the sweep puts its value: q and dOut at (t 5, h 1), k and v at key 5 (kv head 0); dim 0. */
function sweepIndex(p: Problem, operand: Operand): number {
  const { Hq, Hkv, D } = p.shape;
  return operand === 'q' || operand === 'dOut' ? (5 * Hq + 1) * D : (5 * Hkv + 0) * D;
}

/** The cases of the sweep: every operand × value in the preferred dtype, two in each other dtype (in turn: k, v / q, dOut). */
function sweepCases(caps: Capabilities): { dtype: DType; operand: Operand; label: string; value: number }[] {
  const ops: Operand[] = ['q', 'k', 'v', 'dOut'];
  const out: { dtype: DType; operand: Operand; label: string; value: number }[] = [];
  const pref = preferredDtype(caps);
  ops.forEach((operand) => VALUES.forEach(([label, value]) => out.push({ dtype: pref, operand, label, value })));
  const others = caps.dtypes.filter((d) => d !== pref);
  others.forEach((dtype, i) => {
    const pair: Operand[] = i % 2 === 0 ? ['k', 'v'] : ['q', 'dOut'];
    pair.forEach((operand, j) => {
      const [label, value] = VALUES[(i + j) % VALUES.length]!;
      out.push({ dtype, operand, label, value });
    });
  });
  return out;
}

/** The cases of issue #11: T = 2, D = 1, B = 2, top-1, causal (T = 1 for the last). */
const ISSUE_CASES: { label: string; T: number; q: number[]; k: number[]; v: number[]; dOut: number[]; scale?: number }[] = [
  { label: 'v = [1, NaN]', T: 2, q: [1, 1], k: [1, 1], v: [1, NaN], dOut: [1, 1] },
  { label: 'v = [1, +Inf]', T: 2, q: [1, 1], k: [1, 1], v: [1, Infinity], dOut: [1, 1] },
  { label: 'q = [+Inf, 1]', T: 2, q: [Infinity, 1], k: [1, 1], v: [1, 2], dOut: [1, 1] },
  { label: 'k = [1, -Inf]', T: 2, q: [1, 1], k: [1, -Infinity], v: [1, 2], dOut: [1, 1] },
  { label: 'dOut = [1, -Inf]', T: 2, q: [1, 1], k: [1, 1], v: [1, 2], dOut: [1, -Infinity] },
  { label: 'q = [+Inf], k = [-1] (every score -Inf)', T: 1, q: [Infinity], k: [-1], v: [1], dOut: [1] },
  // a finite f32 scale whose product with the scores overflows f32 (scale·log2e·1.5 > 3.4e38); lse stays finite
  { label: 'scale = 2^127, q = [1.5, 1.5], k = [1, 0.5] (all finite)', T: 2, q: [1.5, 1.5], k: [1, 0.5], v: [1, 2], dOut: [1, 1], scale: 2 ** 127 },
];

export const nonFiniteProperties: Property[] = [
  {
    group: 'non-finite',
    name: 'issue #11 cases (T=2, D=1; a scale near the f32 maximum): the rows that turn non-finite and the finite values match the reference',
    async run(ctx) {
      const caps = ctx.backend.caps;
      if (nearestHeadDim(caps, 1) !== 1) throw new Skip('head dim 1 is not in caps');
      const failures: string[] = [];
      for (const c of ISSUE_CASES) {
        const spec: ProblemSpec = {
          seqlens: [c.T], Hq: 1, Hkv: 1, D: 1, dtype: preferredDtype(caps), blockSize: Math.min(2, caps.maxBlockSize), topk: 1, causal: true, seed: 1,
          ...(c.scale !== undefined ? { scale: c.scale } : {}),
        };
        let p = makeProblem(spec);
        for (const op of ['q', 'k', 'v', 'dOut'] as const) p = withValues(p, op, Float64Array.from(c[op]));
        const lines = await nonFiniteErrors(ctx, p, new Int32Array(c.T)); // every row: its own block 0
        if (lines.length > 0) failures.push(`${c.label}:\n    ${lines.join('\n    ')}`);
      }
      if (failures.length > 0) throw new Error(failures.join('\n'));
    },
  },
  {
    group: 'non-finite',
    name: 'NaN, +Inf, -Inf in q, k, v or dOut: non-finite rows exactly as the reference, finite rows within tolerance',
    async run(ctx) {
      const failures: string[] = [];
      for (const c of sweepCases(ctx.backend.caps)) {
        const { p: clean, indices } = sweepProblem(ctx.backend.caps, c.dtype, ctx.seed);
        const at = sweepIndex(clean, c.operand);
        const p = inject(clean, c.operand, at, c.value);
        const lines = await nonFiniteErrors(ctx, p, indices, { route: c.dtype === preferredDtype(ctx.backend.caps) && (c.operand === 'q' || c.operand === 'k') });
        if (lines.length > 0) failures.push(`${c.operand}[${at}] = ${c.label} (${describeSpec(p.spec)}):\n    ${lines.slice(0, 8).join('\n    ')}`);
      }
      if (failures.length > 0) throw new Error(`seed=${ctx.seed}\n${failures.join('\n')}`);
    },
  },
  {
    group: 'non-finite',
    name: "NaN, +Inf, -Inf in the kconv weight or k: k', dk, dw non-finite exactly as the reference",
    async run(ctx) {
      const b = ctx.backend;
      if (!b.caps.kconv) throw new Skip('kconv is not in caps');
      const dt = preferredDtype(b.caps);
      const D = nearestHeadDim(b.caps, 4);
      const W = Math.min(3, b.caps.maxKconvWidth);
      const Hkv = 2;
      const C = Hkv * D;
      const seqlens = [7, 4];
      const T = 11;
      const layout = { cuSeqlens: Int32Array.from([0, 7, 11]) };
      const shape = [T, Hkv, D];
      const failures: string[] = [];
      const cases: { label: string; where: 'w' | 'k'; at: number; value: number }[] = [
        ...VALUES.map(([label, value]) => ({ label: `w[${C - 1}, ${W - 1}] = ${label}`, where: 'w' as const, at: (C - 1) * W + (W - 1), value })),
        ...VALUES.map(([label, value]) => ({ label: `w[0, 0] = ${label}`, where: 'w' as const, at: 0, value })),
        { label: 'k[2, 1, 0] = NaN', where: 'k', at: (2 * Hkv + 1) * D, value: NaN },
        { label: 'k[8, 0, 1] = -Inf', where: 'k', at: 8 * C + Math.min(1, D - 1), value: -Infinity },
      ];
      for (const c of cases) {
        const rng = new Rng(ctx.seed);
        const k0 = randomTensor(rng, dt, shape);
        const dkOut = randomTensor(rng, dt, shape);
        const w0 = randomTensor(rng, dt, [C, W], 0.5);
        const set = (f: Float64Array, sh: number[]) => {
          const a = f.slice();
          a[c.at] = c.value;
          const t = fromFloat(a, dt, sh);
          return { t, f64: toFloat64(t) };
        };
        const k = c.where === 'k' ? set(k0.f64, shape) : k0;
        const w = c.where === 'w' ? set(w0.f64, [C, W]) : w0;
        const lines = await scoped(b, async (s) => {
          const kd = await s.up(k.t);
          const wd = await s.up(w.t);
          const kOut = await s.f64(s.own(await withTimeout(b.kconv(kd, wd, layout), 300_000, 'kconv with a non-finite input')));
          const g = await withTimeout(b.kconvBackward(kd, wd, await s.up(dkOut.t), layout), 300_000, 'kconvBackward with a non-finite input');
          s.own(g.dk);
          s.own(g.dw);
          const dk = await s.f64(g.dk);
          const dw = await s.f64(g.dw);
          const ref = referenceKconv(k.f64, w.f64, C, W, layout);
          const rg = referenceKconvBackward(k.f64, w.f64, dkOut.f64, C, W, layout);
          const errs = [
            ...rowSetErrors("k'", kOut, ref, D, Hkv), ...rowSetErrors('dk', dk, rg.dk, D, Hkv), ...rowSetErrors('dw (t = channel)', dw, rg.dw, W, 1),
          ];
          if (errs.length > 0) return errs;
          const cal = referenceKconv(k.f64, w.f64, C, W, layout, Math.fround);
          const cg = referenceKconvBackward(k.f64, w.f64, dkOut.f64, C, W, layout, Math.fround);
          const fin = (a: Float64Array, ra: Float64Array, width: number) => zeroRows(a, width, badRows(ra, width));
          return [
            checkTolerance("k'", fin(kOut, ref, D), fin(ref, ref, D), fin(roundAll(dt, cal), ref, D), { kind: 'forward', dtype: dt, shape }),
            checkTolerance('dk', fin(dk, rg.dk, D), fin(rg.dk, rg.dk, D), fin(roundAll(dt, cg.dk), rg.dk, D), { kind: 'backward', dtype: dt, shape }),
            checkTolerance('dw', fin(dw, rg.dw, W), fin(rg.dw, rg.dw, W), fin(roundAll(dt, cg.dw), rg.dw, W), { kind: 'backward', dtype: dt, shape: [C, W] }),
          ].filter((x) => !x.ok).map((x) => x.message);
        });
        if (lines.length > 0) failures.push(`${c.label} (T=${T} seqlens=[${seqlens.join(',')}] Hkv=${Hkv} D=${D} W=${W} dtype=${dt}):\n    ${lines.slice(0, 8).join('\n    ')}`);
      }
      if (failures.length > 0) throw failure(`seed=${ctx.seed}`, failures);
    },
  },
];
