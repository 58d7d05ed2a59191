/**
 * Hostile shapes and values (FlashMoBA, tfjs edge-case tests): T not a multiple of B, T < B, odd D,
 * blockSize 1, GQA and MQA, several sequences of different lengths (length 1 and 0 included), rows
 * with no keys (out = 0, lse = -Infinity, finite gradients), and a NaN in one query row (NaN in that
 * row's outputs only, never a hang).
 */
import { type Capabilities, Rng } from '@moba/core';
import { attentionChecks, expectWithin, failure, referencePair, runAttention, scoped, uploadProblem, withTimeout } from '../checks.js';
import { routingErrors } from '../routing-checks.js';
import { type ProblemSpec, describeSpec, makeProblem, nearestHeadDim, preferredDtype, randomRouting, supportsHeadDim } from '../problem.js';
import type { Property, PropertyContext } from '../types.js';
import { nonFiniteProperties } from './nonfinite.js';

interface HostileCase {
  readonly label: string;
  readonly spec: Omit<ProblemSpec, 'dtype' | 'seed'>;
}

/** The fixed hostile cases this backend's caps allow (the rest are reported as not covered). */
function hostileCases(ctx: PropertyContext): HostileCase[] {
  const caps: Capabilities = ctx.backend.caps;
  const D = (want: number): number => nearestHeadDim(caps, want);
  const B = (want: number): number => Math.min(want, caps.maxBlockSize);
  const k = (want: number): number => Math.min(want, caps.maxTopk);
  const cases: HostileCase[] = [
    { label: 'T not a multiple of blockSize', spec: { seqlens: [37], Hq: 2, Hkv: 2, D: D(8), blockSize: B(8), topk: k(3), causal: true } },
    { label: 'T < blockSize', spec: { seqlens: [5], Hq: 1, Hkv: 1, D: D(8), blockSize: B(16), topk: k(2), causal: true } },
    { label: 'blockSize 1', spec: { seqlens: [9], Hq: 1, Hkv: 1, D: D(4), blockSize: 1, topk: k(3), causal: true } },
    { label: 'GQA 6/2', spec: { seqlens: [30], Hq: 6, Hkv: 2, D: D(8), blockSize: B(4), topk: k(3), causal: true } },
    { label: 'MQA 4/1, two sequences', spec: { seqlens: [25, 14], Hq: 4, Hkv: 1, D: D(8), blockSize: B(4), topk: k(2), causal: true } },
    { label: 'sequences of lengths 1, 13, 1, 0, 30, 2', spec: { seqlens: [1, 13, 1, 0, 30, 2], Hq: 2, Hkv: 1, D: D(6), blockSize: B(4), topk: k(2), causal: true } },
  ];
  for (const odd of [59, 1]) {
    if (supportsHeadDim(caps, odd)) cases.push({ label: `odd head dim D = ${odd}`, spec: { seqlens: [21, 9], Hq: 2, Hkv: 1, D: odd, blockSize: B(4), topk: k(3), causal: true } });
    else ctx.notCovered(`hostile shape: head dim D = ${odd} (not in caps)`);
  }
  if (caps.nonCausal) cases.push({ label: 'non-causal, lengths 11, 1, 20', spec: { seqlens: [11, 1, 20], Hq: 2, Hkv: 2, D: D(8), blockSize: B(4), topk: k(2), causal: false } });
  else ctx.notCovered('non-causal routing (caps.nonCausal is false)');
  return cases;
}

export const hostileProperties: Property[] = [
  {
    group: 'hostile',
    name: 'odd shapes: T % B != 0, T < B, B = 1, odd D, GQA/MQA, varlen with length-1 and empty sequences',
    async run(ctx) {
      const b = ctx.backend;
      const failures: string[] = [];
      const cases = hostileCases(ctx);
      for (let i = 0; i < cases.length; i++) {
        const c = cases[i]!;
        for (const dtype of b.caps.dtypes) {
          const spec: ProblemSpec = { ...c.spec, dtype, seed: ctx.seed + i };
          const p = makeProblem(spec);
          try {
            await scoped(b, async (s) => {
              const d = await uploadProblem(s, p);
              const r = s.own(await b.route(d.q, d.k, p.layout, p.cfg));
              const idx = await b.routingIndices(r);
              const errs = routingErrors(idx, p.q64, p.k64, p.shape, p.seqs, p.layout, p.rcfg);
              if (errs.length > 0) throw failure(spec, errs);
              const got = await runAttention(s, p, d, r, { backward: true });
              expectWithin(spec, attentionChecks(c.label, p.shape, got, referencePair(p, idx)));
            });
          } catch (e) {
            failures.push(`${c.label} (${dtype}): ${e instanceof Error ? e.message : String(e)}`);
          }
        }
      }
      if (failures.length > 0) throw new Error(`seed=${ctx.seed}\n${failures.join('\n')}`);
    },
  },
  {
    group: 'hostile',
    name: 'rows with no keys (external routing all -1): out = 0, lse = -Infinity, finite gradients',
    async run(ctx) {
      const b = ctx.backend;
      const spec = smallSpec(ctx, [20, 7], 3);
      const p = makeProblem(spec);
      const idx = randomRouting(p, new Rng(ctx.seed));
      const K = spec.topk;
      const empty = (row: number): boolean => row % 3 === 1;
      for (let row = 0; row < p.shape.T * spec.Hq; row++) if (empty(row)) idx.fill(-1, row * K, (row + 1) * K);
      await scoped(b, async (s) => {
        const d = await uploadProblem(s, p);
        const r = s.own(await b.routingFromIndices(idx.slice(), { T: p.shape.T, Hq: spec.Hq }, p.layout, p.cfg));
        const got = await runAttention(s, p, d, r, { backward: true });
        const lines: string[] = [];
        for (let row = 0; row < p.shape.T * spec.Hq; row++) {
          if (!idx.subarray(row * K, (row + 1) * K).every((j) => j === -1)) continue;
          const o = got.out.subarray(row * spec.D, (row + 1) * spec.D);
          if (o.some((x) => x !== 0)) lines.push(`row ${row} (t=${Math.floor(row / spec.Hq)}, h=${row % spec.Hq}) has no keys but out = [${Array.from(o.subarray(0, 4)).join(', ')}…], expected 0`);
          if (got.lse[row] !== -Infinity) lines.push(`row ${row} has no keys but lse = ${got.lse[row]}, expected -Infinity`);
          if (lines.length >= 6) break;
        }
        for (const [name, g] of [['dq', got.dq], ['dk', got.dk], ['dv', got.dv]] as const) {
          const bad = g!.findIndex((x) => !Number.isFinite(x));
          if (bad >= 0) lines.push(`${name}[${bad}] = ${g![bad]}: gradients must be finite`);
        }
        if (lines.length > 0) throw failure(spec, lines);
        expectWithin(spec, attentionChecks('empty rows', p.shape, got, referencePair(p, idx)));
      });
    },
  },
  {
    group: 'hostile',
    name: 'a NaN in one query row gives NaN in that row only, and never hangs',
    async run(ctx) {
      const b = ctx.backend;
      const spec = smallSpec(ctx, [24, 9], 2);
      const clean = makeProblem(spec);
      const t0 = 13;
      const h0 = 1;
      const q64 = clean.q64.slice();
      q64[(t0 * spec.Hq + h0) * spec.D] = NaN;
      const qData = clean.q.data.slice();
      qData[(t0 * spec.Hq + h0) * spec.D] = spec.dtype === 'f32' ? NaN : 0x7fc0; // a quiet NaN in every 16-bit format
      const p = { ...clean, q64, q: { ...clean.q, data: qData } };
      const idx = randomRouting(p, new Rng(ctx.seed));
      const row0 = (t0 * spec.Hq + h0) * spec.topk;
      idx.fill(-1, row0, row0 + spec.topk);
      idx[row0] = Math.floor(t0 / spec.blockSize); // t0 lies in sequence 0: the NaN row attends its own block
      await scoped(b, async (s) => {
        const d = await uploadProblem(s, p);
        const r = s.own(await withTimeout(b.route(d.q, d.k, p.layout, p.cfg), 60_000, 'route() with a NaN input'));
        const errs = routingErrors(await b.routingIndices(r), p.q64, p.k64, p.shape, p.seqs, p.layout, p.rcfg);
        if (errs.length > 0) throw failure(spec, [`with q[${t0}, ${h0}, 0] = NaN:`, ...errs]);
        const given = s.own(await b.routingFromIndices(idx.slice(), { T: p.shape.T, Hq: spec.Hq }, p.layout, p.cfg));
        const got = await withTimeout(runAttention(s, p, d, given, { backward: true }), 60_000, 'forward/backward with a NaN input');
        expectWithin(`${describeSpec(spec)}; ${describeNan(t0, h0)}`, attentionChecks('NaN row', p.shape, got, referencePair(p, idx)));
      });
    },
  },
  ...nonFiniteProperties, // NaN, ±Inf in every input (nonfinite.ts)
];

/** A small causal GQA spec (Hq 2, Hkv 1, D near 8, blockSize ≤ 4) in the backend's preferred dtype, data seed = run seed. */
function smallSpec(ctx: PropertyContext, seqlens: readonly number[], topk: number): ProblemSpec {
  const caps = ctx.backend.caps;
  return {
    seqlens, Hq: 2, Hkv: 1, D: nearestHeadDim(caps, 8), dtype: preferredDtype(caps), blockSize: Math.min(4, caps.maxBlockSize),
    topk: Math.min(topk, caps.maxTopk), causal: true, seed: ctx.seed,
  };
}

function describeNan(t: number, h: number): string {
  return `q[${t}, ${h}, 0] = NaN (only row (${t}, ${h}) and the keys it attends may be NaN)`;
}
