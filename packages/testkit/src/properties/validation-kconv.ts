/**
 * Kconv argument errors of the validation property (SPEC §6, §7): weight shape, width, and dtype by caps; and
 * moba()'s own argument errors (null tensors, a non-tensor kconvWeight, unknown config keys, null config values).
 */
import { type HostTensor, type MobaConfig, type MobaInputs, fromFloat, hostTensor, moba } from '@moba/core';
import type { Scope, uploadProblem } from '../checks.js';
import type { Problem } from '../problem.js';
import type { PropertyContext } from '../types.js';
import type { Case } from './validation.js';

const SHAPE = ['E_SHAPE'];

/** Kconv weight errors (only when the backend declares kconv). */
export async function kconvCases(ctx: PropertyContext, s: Scope, p: Problem, d: Awaited<ReturnType<typeof uploadProblem>>): Promise<Case[]> {
  const b = ctx.backend;
  const { T, Hkv, D, dtype } = p.shape;
  const lay = p.layout;
  const cfg = p.cfg;
  const one = (inputs: Partial<Record<keyof MobaInputs, unknown>>, c: unknown = cfg): Promise<unknown> =>
    moba(b, { q: p.q, k: p.k, v: p.v, cuSeqlens: lay.cuSeqlens, ...inputs } as MobaInputs, c as MobaConfig).then((x) => x.ctx.dispose());
  const cases: Case[] = [
    { what: 'moba() with q = null', codes: SHAPE, fn: () => one({ q: null }) },
    { what: 'moba() with kconvWeight = 0 (not a tensor; only undefined means no kconv)', codes: ['E_SHAPE', 'E_RANGE'], fn: () => one({ kconvWeight: 0 }) },
    { what: "moba() with config key 'casual'", codes: ['E_RANGE'], fn: () => one({}, { ...cfg, casual: false }) },
    { what: 'route() with scale = null', codes: ['E_RANGE'], fn: async () => b.route(d.q, d.k, lay, { ...cfg, scale: null } as unknown as MobaConfig).then((x) => s.own(x)) },
    { what: 'route() with causal = null', codes: ['E_RANGE'], fn: async () => b.route(d.q, d.k, lay, { ...cfg, causal: null } as unknown as MobaConfig).then((x) => s.own(x)) },
  ];
  if (b.caps.kconv) {
    const C = Hkv * D;
    const w = (shape: number[]): HostTensor => fromFloat(new Float32Array(shape.reduce((a, c) => a * c, 1)), dtype, shape);
    cases.push(
      { what: `kconv() with weight [${C + 1}, 3]`, codes: SHAPE, fn: async () => b.kconv(d.k, await s.up(w([C + 1, 3])), lay).then((x) => s.own(x)) },
      { what: `kconv() with a 1-D weight [${C}]`, codes: SHAPE, fn: async () => b.kconv(d.k, await s.up(w([C])), lay).then((x) => s.own(x)) },
      { what: `kconvBackward() with weight [${C}, 3] and dkOut of another shape`, codes: SHAPE, fn: async () => b.kconvBackward(d.k, await s.up(w([C, 3])), await s.up(hostTensor(dtype, [T, Hkv, D + 1])), lay) },
      { what: `moba() with kconvWeight [${C + 1}, 3]`, codes: SHAPE, fn: () => moba(b, { q: p.q, k: p.k, v: p.v, cuSeqlens: lay.cuSeqlens, kconvWeight: w([C + 1, 3]) }, cfg).then((x) => x.ctx.dispose()) },
    );
    const other = b.caps.dtypes.find((x) => x !== dtype);
    if ((b.caps.kconvWeightDtype ?? 'k') === 'k' && other) {
      const wo = fromFloat(new Float32Array(C * 3), other, [C, 3]);
      cases.push(
        { what: `kconv() with a ${other} weight for ${dtype} keys (caps.kconvWeightDtype 'k')`, codes: ['E_DTYPE'], fn: async () => b.kconv(d.k, await s.up(wo), lay).then((x) => s.own(x)) },
        { what: `kconvBackward() with a ${other} weight for ${dtype} keys`, codes: ['E_DTYPE'], fn: async () => b.kconvBackward(d.k, await s.up(wo), d.k, lay) },
      );
    }
    const maxW = b.caps.maxKconvWidth;
    if (maxW < 1024) cases.push({ what: `kconv() with width maxKconvWidth + 1 = ${maxW + 1}`, codes: ['E_UNSUPPORTED'], fn: async () => b.kconv(d.k, await s.up(w([C, maxW + 1])), lay).then((x) => s.own(x)) });
  }
  return cases;
}
