/**
 * Fewer queries than keys (SPEC §8): a layout with query boundaries apart from key boundaries, bottom-right
 * aligned (query `a` of sequence `i` sits at key position `nk_i − nq_i + a`). One `cuSeqlens` (SPEC §1) means
 * both are it. `resolveLayout` turns either form into the key layout and a map of the query rows.
 */
import type { Layout } from './config.js';
import { MobaError } from './errors.js';

/** Query boundaries (`q`, `dOut`, `out`, `lse`, `dq`, routing rows) apart from key boundaries (`k`, `v`, `dk`, `dv`). */
export interface QKLayout {
  readonly cuSeqlensQ: Int32Array;
  readonly cuSeqlensK: Int32Array;
}

/** What route/forward/backward accept: one `cuSeqlens` (self-attention) or a `QKLayout` (SPEC §8). */
export type AttentionLayout = Layout | QKLayout;

export function isQKLayout(layout: AttentionLayout): layout is QKLayout {
  return layout !== null && typeof layout === 'object' && ((layout as QKLayout).cuSeqlensQ !== undefined || (layout as QKLayout).cuSeqlensK !== undefined);
}

/** The query rows of a problem, on top of its key layout. */
export interface QueryRows {
  /** Query rows in all (`q.shape[0]`). */
  readonly Tq: number;
  /** Query boundaries: sequence `b`'s queries are rows `[cuSeqlensQ[b], cuSeqlensQ[b+1])`. */
  readonly cuSeqlensQ: Int32Array;
  /** For each query row, its sequence. */
  readonly seqOf: Int32Array;
  /** For each query row, its global key row (bottom-right aligned): `cuSeqlensK[b] + nk_b − nq_b + a`. */
  readonly pos: Int32Array;
  /** True when every sequence has as many queries as keys (then `pos[t] = t`: plain self-attention). */
  readonly selfAttention: boolean;
}

/** A validated layout: the keys' `cuSeqlens` and the query rows. */
export interface ResolvedLayout {
  readonly keys: Layout;
  readonly queries: QueryRows;
}

export function checkCuSeqlens(name: string, cu: unknown, end: number, endName: string): Int32Array {
  if (!(cu instanceof Int32Array)) throw new MobaError('E_SHAPE', `${name} must be an Int32Array of length batch + 1`, name);
  if (cu.length < 2) throw new MobaError('E_SHAPE', `${name} has length ${cu.length}: must be batch + 1 >= 2`, name);
  if (cu[0] !== 0) throw new MobaError('E_RANGE', `${name}[0] = ${cu[0]} is invalid: must be 0`, name);
  for (let i = 1; i < cu.length; i++) {
    if (cu[i]! < cu[i - 1]!) throw new MobaError('E_RANGE', `${name}[${i}] = ${cu[i]} < ${name}[${i - 1}] = ${cu[i - 1]}: must be non-decreasing`, name);
  }
  if (cu[cu.length - 1] !== end) {
    throw new MobaError('E_RANGE', `${name}[${cu.length - 1}] = ${cu[cu.length - 1]} is invalid: must equal ${endName} = ${end}`, name);
  }
  return cu;
}

/** Checks a `QKLayout` against `Tq` query rows and `Tk` key rows (SPEC §1, §8). */
export function validateQKLayout(layout: QKLayout, Tq: number, Tk: number): void {
  const cq = checkCuSeqlens('cuSeqlensQ', layout?.cuSeqlensQ, Tq, 'Tq (the token count of q)');
  const ck = checkCuSeqlens('cuSeqlensK', layout.cuSeqlensK, Tk, 'Tk (the token count of k)');
  if (cq.length !== ck.length) {
    throw new MobaError('E_SHAPE', `cuSeqlensQ has length ${cq.length} but cuSeqlensK has ${ck.length}: both must be batch + 1`, 'cuSeqlensQ');
  }
  for (let b = 0; b + 1 < cq.length; b++) {
    const nq = cq[b + 1]! - cq[b]!;
    const nk = ck[b + 1]! - ck[b]!;
    if (nq > nk) throw new MobaError('E_RANGE', `sequence ${b} has ${nq} queries (cuSeqlensQ) but ${nk} keys (cuSeqlensK): must be nq <= nk`, 'cuSeqlensQ');
  }
}

/** The query rows of a valid layout (no checks). */
export function queryRows(layout: AttentionLayout): QueryRows {
  const ck = isQKLayout(layout) ? layout.cuSeqlensK : layout.cuSeqlens;
  const cq = isQKLayout(layout) ? layout.cuSeqlensQ : layout.cuSeqlens;
  const Tq = cq[cq.length - 1]!;
  const seqOf = new Int32Array(Tq);
  const pos = new Int32Array(Tq);
  let self = cq.length === ck.length;
  for (let b = 0; b + 1 < cq.length; b++) {
    const nq = cq[b + 1]! - cq[b]!;
    const nk = ck[b + 1]! - ck[b]!;
    if (nq !== nk || cq[b] !== ck[b]) self = false;
    for (let a = 0; a < nq; a++) {
      seqOf[cq[b]! + a] = b;
      pos[cq[b]! + a] = ck[b]! + nk - nq + a;
    }
  }
  return { Tq, cuSeqlensQ: cq, seqOf, pos, selfAttention: self };
}

/**
 * Validates either layout form against `Tq` query rows and `Tk` key rows. A `QKLayout` whose query and key
 * boundaries are equal is self-attention. With one `cuSeqlens`, `Tq` must equal `Tk` (checked by the caller's
 * shape validation, which names q, k).
 */
export function resolveLayout(layout: AttentionLayout, Tq: number, Tk: number): ResolvedLayout {
  if (layout === null || typeof layout !== 'object') {
    throw new MobaError('E_SHAPE', 'layout must be { cuSeqlens } or { cuSeqlensQ, cuSeqlensK } (Int32Arrays of length batch + 1)', 'cuSeqlens');
  }
  if (isQKLayout(layout)) {
    validateQKLayout(layout, Tq, Tk);
    return { keys: { cuSeqlens: layout.cuSeqlensK }, queries: queryRows(layout) };
  }
  checkCuSeqlens('cuSeqlens', layout.cuSeqlens, Tq, 'T (the token count of q)');
  return { keys: layout, queries: queryRows(layout) };
}

/** The same layout, as a `QKLayout` (copies). */
export function toQKLayout(layout: AttentionLayout): QKLayout {
  return isQKLayout(layout)
    ? { cuSeqlensQ: Int32Array.from(layout.cuSeqlensQ), cuSeqlensK: Int32Array.from(layout.cuSeqlensK) }
    : { cuSeqlensQ: Int32Array.from(layout.cuSeqlens), cuSeqlensK: Int32Array.from(layout.cuSeqlens) };
}
