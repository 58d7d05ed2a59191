/**
 * Validation (SPEC §7): every bad input, passed to the public API (the Backend methods and the
 * one-call `moba()` / `mobaBackward()`), rejects with a `MobaError` of the right code, never a crash or
 * a hang; a workspace over `caps.memoryBytes` gives E_MEMORY before any allocation; disposed tensors
 * and destroyed backends are refused.
 */
import {
  type Backend, type DType, type DeviceTensor, type Layout, type MobaConfig, type Routing, DTYPES, Rng,
  hostTensor, moba, mobaBackward, plan, resolveConfig,
} from '@moba/core';
import { type Scope, expectMobaError, failure, scoped, uploadProblem } from '../checks.js';
import { kconvCases } from './validation-kconv.js';
import { type Problem, type ProblemSpec, makeProblem, nearestHeadDim, preferredDtype, randomRouting } from '../problem.js';
import { type Property, type PropertyContext, Skip } from '../types.js';

export interface Case {
  readonly what: string;
  readonly codes: readonly string[];
  readonly fn: () => Promise<unknown>;
}

function baseSpec(ctx: PropertyContext): ProblemSpec {
  const caps = ctx.backend.caps;
  return {
    seqlens: [10, 7], Hq: 2, Hkv: 1, D: nearestHeadDim(caps, 8), dtype: preferredDtype(caps),
    blockSize: Math.min(4, caps.maxBlockSize), topk: Math.min(2, caps.maxTopk), causal: true, seed: ctx.seed,
  };
}

const RANGE = ['E_RANGE'];
const SHAPE = ['E_SHAPE'];
const UNSUPPORTED = ['E_UNSUPPORTED'];

/** Config errors of route/forward/moba(), then the layout, shape, backward and kconv cases. */
async function problemCases(ctx: PropertyContext, s: Scope, p: Problem): Promise<Case[]> {
  const b = ctx.backend;
  const caps = b.caps;
  const d = await uploadProblem(s, p);
  const cfg = p.cfg;
  const lay = p.layout;
  const route = (c: MobaConfig, layout: Layout = lay, q: DeviceTensor = d.q, k: DeviceTensor = d.k): Promise<Routing> => b.route(q, k, layout, c).then((r) => s.own(r));
  const r = await route(cfg);
  const fwd = (c: MobaConfig, layout: Layout = lay, q = d.q, k = d.k, v = d.v, rr = r): Promise<unknown> => b.forward(q, k, v, rr, layout, c);
  const one = (c: MobaConfig, layout: Layout = lay): Promise<unknown> => moba(b, { q: p.q, k: p.k, v: p.v, cuSeqlens: layout.cuSeqlens }, c).then((res) => res.ctx.dispose());
  const cases: Case[] = [];
  for (const topk of [0, 1.5, NaN, -1]) {
    cases.push(
      { what: `route() with topk = ${topk}`, codes: RANGE, fn: () => route({ ...cfg, topk }) },
      { what: `forward() with topk = ${topk}`, codes: RANGE, fn: () => fwd({ ...cfg, topk }) },
      { what: `moba() with topk = ${topk}`, codes: RANGE, fn: () => one({ ...cfg, topk }) },
    );
  }
  for (const blockSize of [0, 2.5]) {
    cases.push(
      { what: `route() with blockSize = ${blockSize}`, codes: RANGE, fn: () => route({ ...cfg, blockSize }) },
      { what: `moba() with blockSize = ${blockSize}`, codes: RANGE, fn: () => one({ ...cfg, blockSize }) },
    );
  }
  cases.push({ what: 'route() with scale = NaN', codes: RANGE, fn: () => route({ ...cfg, scale: NaN }) });
  // valid per SPEC but beyond this backend's caps: E_UNSUPPORTED (E_RANGE is for values SPEC §7 forbids)
  if (caps.maxTopk < 2 ** 20) cases.push({ what: `route() with topk = maxTopk + 1 = ${caps.maxTopk + 1}`, codes: UNSUPPORTED, fn: () => route({ ...cfg, topk: caps.maxTopk + 1 }) });
  if (caps.maxBlockSize < 2 ** 20) cases.push({ what: `route() with blockSize = maxBlockSize + 1 = ${caps.maxBlockSize + 1}`, codes: UNSUPPORTED, fn: () => route({ ...cfg, blockSize: caps.maxBlockSize + 1 }) });
  cases.push(...(await layoutAndShapeCases(ctx, s, p, d, r)));
  cases.push(...(await backwardCases(ctx, s, p, d, r)));
  return cases;
}

/** cuSeqlens, q/k/v shape, dtype, head-dim and causal errors of route/forward/moba(). */
async function layoutAndShapeCases(ctx: PropertyContext, s: Scope, p: Problem, d: Awaited<ReturnType<typeof uploadProblem>>, r: Routing): Promise<Case[]> {
  const b = ctx.backend;
  const caps = b.caps;
  const { T, Hq, Hkv, D, dtype } = p.shape;
  const cfg = p.cfg;
  const lay = p.layout;
  const route = (c: MobaConfig, layout: Layout = lay, q: DeviceTensor = d.q, k: DeviceTensor = d.k): Promise<Routing> => b.route(q, k, layout, c).then((x) => s.own(x));
  const fwd = (c: MobaConfig, layout: Layout = lay, q = d.q, k = d.k, v = d.v): Promise<unknown> => b.forward(q, k, v, r, layout, c);
  const one = (c: MobaConfig, layout: Layout): Promise<unknown> => moba(b, { q: p.q, k: p.k, v: p.v, cuSeqlens: layout.cuSeqlens }, c).then((res) => res.ctx.dispose());
  const zeros = (shape: number[], dt: DType = dtype): Promise<DeviceTensor> => s.up(hostTensor(dt, shape));
  const cases: Case[] = [];
  const cus: [string, unknown, readonly string[]][] = [
    ['cuSeqlens = [1, 10, 17] (bad start)', Int32Array.from([1, 10, T]), RANGE],
    ['cuSeqlens = [0, 12, 10, 17] (decreasing)', Int32Array.from([0, 12, 10, T]), RANGE],
    [`cuSeqlens = [0, 10, ${T - 1}] (wrong end)`, Int32Array.from([0, 10, T - 1]), RANGE],
    [`cuSeqlens = [0, 10, ${T + 1}] (wrong end)`, Int32Array.from([0, 10, T + 1]), RANGE],
    ['cuSeqlens as a plain Array', [0, 10, T], SHAPE],
    ['cuSeqlens as a Uint32Array', Uint32Array.from([0, 10, T]), SHAPE],
  ];
  for (const [what, cu, codes] of cus) {
    const layout = { cuSeqlens: cu as Int32Array };
    cases.push(
      { what: `route() with ${what}`, codes, fn: () => route(cfg, layout) },
      { what: `forward() with ${what}`, codes, fn: () => fwd(cfg, layout) },
      { what: `moba() with ${what}`, codes, fn: () => one(cfg, layout) },
    );
  }
  cases.push(
    { what: `route() with k of ${T - 1} tokens (q has ${T})`, codes: SHAPE, fn: async () => route(cfg, lay, d.q, await zeros([T - 1, Hkv, D])) },
    { what: 'forward() with v of another head dim', codes: SHAPE, fn: async () => fwd(cfg, lay, d.q, d.k, await zeros([T, Hkv, D + 1])) },
    { what: 'forward() with v of another head count than k', codes: SHAPE, fn: async () => fwd(cfg, lay, d.q, d.k, await zeros([T, Hkv + 1, D])) },
    { what: 'route() with a 2-D q', codes: SHAPE, fn: async () => route(cfg, lay, await zeros([T, Hq * D])) },
    { what: 'route() with Hq = 3, Hkv = 2 (Hq % Hkv != 0)', codes: SHAPE, fn: async () => route(cfg, lay, await zeros([T, 3, D]), await zeros([T, 2, D])) },
  );
  const other = caps.dtypes.find((x) => x !== dtype);
  if (other) cases.push({ what: `route() with q ${dtype} and k ${other}`, codes: ['E_DTYPE'], fn: async () => route(cfg, lay, d.q, await zeros([T, Hkv, D], other)) });
  else ctx.notCovered('validation: q/k/v dtype mismatch (only one dtype in caps)');
  const missing = DTYPES.find((x) => !caps.dtypes.includes(x));
  if (missing) cases.push({ what: `upload + route() in undeclared dtype ${missing}`, codes: ['E_UNSUPPORTED'], fn: async () => route(cfg, lay, await zeros([T, Hq, D], missing), await zeros([T, Hkv, D], missing)) });
  else ctx.notCovered('validation: undeclared dtype (the backend declares all three)');
  const badD = unsupportedHeadDim(b);
  if (badD !== null) cases.push({ what: `upload + route() with undeclared head dim D = ${badD}`, codes: ['E_UNSUPPORTED'], fn: async () => route(cfg, lay, await zeros([T, Hq, badD]), await zeros([T, Hkv, badD])) });
  else ctx.notCovered('validation: undeclared head dim (maxHeadDim too large to build one)');
  if (!caps.nonCausal) cases.push({ what: 'route() with causal = false (caps.nonCausal is false)', codes: ['E_UNSUPPORTED'], fn: () => route({ ...cfg, causal: false }) });
  return cases;
}

/** A head dim the backend does not declare, small enough to build (null if none). */
function unsupportedHeadDim(b: Backend): number | null {
  const caps = b.caps;
  if (caps.headDims) {
    for (let D = 1; D <= 1024; D++) if (!caps.headDims.includes(D)) return D;
    return null;
  }
  return caps.maxHeadDim < 4096 ? caps.maxHeadDim + 1 : null;
}

/** Routing-index and backward-tensor errors. */
async function backwardCases(ctx: PropertyContext, s: Scope, p: Problem, d: Awaited<ReturnType<typeof uploadProblem>>, r: Routing): Promise<Case[]> {
  const b = ctx.backend;
  const { T, Hq, D, dtype } = p.shape;
  const K = p.rcfg.topk;
  const lay = p.layout;
  const cfg = p.cfg;
  const valid = randomRouting(p, new Rng(ctx.seed));
  const shape = { T, Hq };
  // token 5 lies in block 1 of sequence 0 (10 tokens, blockSize 4): it has a past and a future block
  const t = 5;
  const cb = Math.floor(t / p.rcfg.blockSize);
  const nb = p.seqs.seqs[0]!.nBlocks;
  const withRow = (row: number[]): Int32Array => {
    const ix = valid.slice();
    const base = t * Hq * K;
    for (let i = 0; i < K; i++) ix[base + i] = row[i] ?? -1;
    return ix;
  };
  const fromIx = (ix: unknown): Promise<unknown> => b.routingFromIndices(ix as Int32Array, shape, lay, cfg).then((x) => s.own(x));
  const cases: Case[] = [
    { what: `routing index ${nb} out of range (sequence 0 has ${nb} blocks)`, codes: RANGE, fn: () => fromIx(withRow([nb])) },
    { what: 'routing index -2', codes: RANGE, fn: () => fromIx(withRow([-2])) },
    { what: 'routing length T·Hq·topk - 1', codes: SHAPE, fn: () => fromIx(valid.subarray(1).slice()) },
    { what: 'routing indices as a plain Array', codes: SHAPE, fn: () => fromIx(Array.from(valid)) },
  ];
  if (cb + 1 < nb) cases.push({ what: `routing selects future block ${cb + 1} for t = ${t} (current block ${cb})`, codes: RANGE, fn: () => fromIx(withRow([cb + 1])) });
  if (K >= 2 && cb >= 1) {
    cases.push(
      { what: `unsorted routing row [${cb}, 0]`, codes: RANGE, fn: () => fromIx(withRow([cb, 0])) },
      { what: `duplicate routing row [${cb}, ${cb}]`, codes: RANGE, fn: () => fromIx(withRow([cb, cb])) },
      { what: `routing row [-1, ${cb}] (-1 before a block)`, codes: RANGE, fn: () => fromIx(withRow([-1, cb])) },
    );
  } else {
    ctx.notCovered('validation: unsorted/duplicate/mis-padded routing rows (needs topk >= 2 and blockSize <= 4)');
  }
  const fwd = await b.forward(d.q, d.k, d.v, r, lay, cfg);
  s.own(fwd.out);
  s.own(fwd.lse);
  const bwd = (dOut: DeviceTensor, lse = fwd.lse): Promise<unknown> => b.backward(d.q, d.k, d.v, fwd.out, lse, dOut, r, lay, cfg);
  if (K + 1 <= b.caps.maxTopk) cases.push({ what: `forward() with a routing made for topk ${K} and config topk ${K + 1}`, codes: RANGE, fn: () => b.forward(d.q, d.k, d.v, r, lay, { ...cfg, topk: K + 1 }) });
  cases.push(
    { what: `backward() with dOut [${T}, ${Hq}, ${D + 1}]`, codes: SHAPE, fn: async () => bwd(await s.up(hostTensor(dtype, [T, Hq, D + 1]))) },
    { what: `backward() with dOut [${T - 1}, ${Hq}, ${D}]`, codes: SHAPE, fn: async () => bwd(await s.up(hostTensor(dtype, [T - 1, Hq, D]))) },
    { what: 'backward() with lse of shape [T, Hq, D]', codes: ['E_SHAPE', 'E_DTYPE'], fn: async () => bwd(d.dOut, fwd.out) },
  );
  const other = b.caps.dtypes.find((x) => x !== dtype);
  if (other) cases.push({ what: `backward() with dOut in ${other}`, codes: ['E_DTYPE'], fn: async () => bwd(await s.up(hostTensor(other, [T, Hq, D]))) });
  const ctxRes = await moba(b, { q: p.q, k: p.k, v: p.v, cuSeqlens: lay.cuSeqlens }, cfg);
  cases.push({
    what: 'mobaBackward() with dOut of the wrong shape', codes: SHAPE,
    fn: () => mobaBackward(b, ctxRes.ctx, hostTensor(dtype, [T, Hq, D + 1])).finally(() => ctxRes.ctx.dispose()),
  });
  cases.push(...(await kconvCases(ctx, s, p, d)));
  return cases;
}


/**
 * The smallest problem (Hq = Hkv = 1, smallest D and dtype, blockSize 1, largest topk) whose planned
 * workspace exceeds `caps.memoryBytes`, or null when its inputs would exceed `maxInputBytes`.
 */
export function memoryProblem(b: Backend, maxInputBytes = 256 * 2 ** 20): { T: number; D: number; dtype: DType; cfg: MobaConfig } | null {
  const caps = b.caps;
  const D = caps.headDims ? Math.min(...caps.headDims) : 1;
  const dtype: DType = caps.dtypes.find((x) => x !== 'f32') ?? 'f32';
  const cfg = { blockSize: 1, topk: Math.min(caps.maxTopk, 4096), causal: true };
  const rc = resolveConfig(cfg, D);
  const ws = (T: number): number => plan({ T, Hq: 1, Hkv: 1, D, dtype }, { cuSeqlens: Int32Array.from([0, T]) }, rc).workspaceBytes;
  const perToken = ws(2) - ws(1);
  let T = Math.max(1, Math.ceil((caps.memoryBytes - ws(1)) / perToken));
  while (ws(T) <= caps.memoryBytes) T++;
  const inputBytes = 3 * T * D * (dtype === 'f32' ? 4 : 2);
  return inputBytes <= maxInputBytes ? { T, D, dtype, cfg } : null;
}

export const validationProperties: Property[] = [
  {
    group: 'validation',
    name: 'every SPEC §7 bad input throws MobaError with the right code (route, forward, backward, kconv, moba)',
    async run(ctx) {
      const spec = baseSpec(ctx);
      const p = makeProblem(spec);
      await scoped(ctx.backend, async (s) => {
        const cases = await problemCases(ctx, s, p);
        const lines: string[] = [];
        for (const c of cases) {
          const why = await expectMobaError(c.what, c.codes, c.fn);
          if (why !== null) lines.push(why);
        }
        if (lines.length > 0) throw failure(spec, [`${lines.length} of ${cases.length} bad inputs were not rejected correctly:`, ...lines]);
      });
    },
  },
  {
    group: 'validation',
    name: 'a workspace larger than caps.memoryBytes throws E_MEMORY before allocating',
    async run(ctx) {
      const b = ctx.backend;
      const m = memoryProblem(b);
      if (m === null) {
        ctx.notCovered(`E_MEMORY (the smallest problem over caps.memoryBytes = ${b.caps.memoryBytes} needs more than 256 MiB of inputs)`);
        throw new Skip('caps.memoryBytes is too large to build a problem that exceeds it');
      }
      const q = hostTensor(m.dtype, [m.T, 1, m.D]);
      const k = hostTensor(m.dtype, [m.T, 1, m.D]);
      const cu = Int32Array.from([0, m.T]);
      const what = `T=${m.T} Hq=Hkv=1 D=${m.D} ${m.dtype} blockSize=1 topk=${m.cfg.topk}, caps.memoryBytes=${b.caps.memoryBytes}`;
      const lines: string[] = [];
      const viaRoute = await expectMobaError(`route() on ${what}`, ['E_MEMORY'], () => scoped(b, async (s) => s.own(await b.route(await s.up(q), await s.up(k), { cuSeqlens: cu }, m.cfg))));
      const viaMoba = await expectMobaError(`moba() on ${what}`, ['E_MEMORY'], () => moba(b, { q, k, v: k, cuSeqlens: cu }, m.cfg).then((r) => r.ctx.dispose()));
      for (const x of [viaRoute, viaMoba]) if (x !== null) lines.push(x);
      if (lines.length > 0) throw failure(what, lines);
    },
  },
  {
    group: 'validation',
    name: 'disposed tensors and routings are refused with a MobaError',
    async run(ctx) {
      const b = ctx.backend;
      const spec = baseSpec(ctx);
      const p = makeProblem(spec);
      const any = ['E_SHAPE', 'E_RANGE', 'E_DTYPE', 'E_UNSUPPORTED', 'E_MEMORY', 'E_DEVICE'];
      const lines: string[] = [];
      await scoped(b, async (s) => {
        const d = await uploadProblem(s, p);
        const q2 = await b.upload(p.q);
        b.dispose(q2);
        b.dispose(q2); // idempotent
        const r2 = await b.route(d.q, d.k, p.layout, p.cfg);
        b.dispose(r2);
        for (const [what, fn] of [
          ['route() with a disposed q', () => b.route(q2, d.k, p.layout, p.cfg)],
          ['download() of a disposed tensor', () => b.download(q2)],
          ['forward() with a disposed routing', () => b.forward(d.q, d.k, d.v, r2, p.layout, p.cfg)],
          ['routingIndices() of a disposed routing', () => b.routingIndices(r2)],
        ] as const) {
          const why = await expectMobaError(what, any, fn);
          if (why !== null) lines.push(why);
        }
      });
      if (lines.length > 0) throw failure(spec, lines);
    },
  },
  {
    group: 'validation',
    name: 'a destroyed backend refuses every call with a MobaError',
    async run(ctx) {
      if (!ctx.factory) {
        ctx.notCovered('use after destroy (runConformance needs opts.factory to make a throwaway backend)');
        throw new Skip('no factory given to create a throwaway backend');
      }
      const fresh = await ctx.factory();
      const p = makeProblem(baseSpec(ctx));
      const q = await fresh.upload(p.q);
      const k = await fresh.upload(p.k);
      await fresh.destroy();
      const any = ['E_SHAPE', 'E_RANGE', 'E_DTYPE', 'E_UNSUPPORTED', 'E_MEMORY', 'E_DEVICE'];
      const lines: string[] = [];
      for (const [what, fn] of [
        ['upload() after destroy()', () => fresh.upload(p.q)],
        ['route() after destroy()', () => fresh.route(q, k, p.layout, p.cfg)],
        ['download() after destroy()', () => fresh.download(q)],
        ['sync() after destroy()', () => fresh.sync()],
      ] as const) {
        const why = await expectMobaError(what, any, fn);
        if (why !== null) lines.push(why);
      }
      if (lines.length > 0) throw failure(baseSpec(ctx), lines);
    },
  },
];
