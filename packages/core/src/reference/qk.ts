/**
 * Fewer queries than keys (SPEC §8) for the reference: a layout with separate query and key boundaries,
 * bottom-right aligned. Query `a` of sequence `i` sits at key position `nk_i − nq_i + a`.
 */
import type { Layout, SeqInfo } from '../config.js';
import { sequences } from '../config.js';
import { MobaError } from '../errors.js';

/** Query boundaries (`q`, `out`, `lse`, `dq`, indices) apart from key boundaries (`k`, `v`, `dk`, `dv`). */
export interface QKLayout {
  readonly cuSeqlensQ: Int32Array;
  readonly cuSeqlensK: Int32Array;
}

/** What the reference accepts: one `cuSeqlens` (self-attention, SPEC §1) or a `QKLayout` (SPEC §8). */
export type ReferenceLayout = Layout | QKLayout;

export function isQKLayout(layout: ReferenceLayout): layout is QKLayout {
  return (layout as QKLayout).cuSeqlensQ !== undefined || (layout as QKLayout).cuSeqlensK !== undefined;
}

function checkCu(name: string, cu: unknown, end: number, endName: string): Int32Array {
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
  const cq = checkCu('cuSeqlensQ', layout?.cuSeqlensQ, Tq, 'Tq (the token count of q)');
  const ck = checkCu('cuSeqlensK', layout.cuSeqlensK, Tk, 'Tk (the token count of k)');
  if (cq.length !== ck.length) {
    throw new MobaError('E_SHAPE', `cuSeqlensQ has length ${cq.length} but cuSeqlensK has ${ck.length}: both must be batch + 1`, 'cuSeqlensQ');
  }
  for (let b = 0; b + 1 < cq.length; b++) {
    const nq = cq[b + 1]! - cq[b]!;
    const nk = ck[b + 1]! - ck[b]!;
    if (nq > nk) throw new MobaError('E_RANGE', `sequence ${b} has ${nq} queries (cuSeqlensQ) but ${nk} keys (cuSeqlensK): must be nq <= nk`, 'cuSeqlensQ');
  }
}

export interface QueryMap {
  readonly Tq: number;
  readonly Tk: number;
  /** The key layout: blocks, centroids and kconv live on it. */
  readonly keyLayout: Layout;
  /** For each query row, its key sequence. */
  readonly seqOfQ: readonly SeqInfo[];
  /** For each query row, its global key position (bottom-right aligned; the row itself for one `cuSeqlens`). */
  readonly pos: Int32Array;
}

/** Maps query rows to key positions (assumes a valid layout). */
export function queryMap(layout: ReferenceLayout, blockSize: number): QueryMap {
  if (!isQKLayout(layout)) {
    const s = sequences(layout, blockSize);
    const T = s.seqOf.length;
    return { Tq: T, Tk: T, keyLayout: layout, seqOfQ: Array.from(s.seqOf, (b) => s.seqs[b]!), pos: Int32Array.from({ length: T }, (_, t) => t) };
  }
  const cq = layout.cuSeqlensQ;
  const keyLayout = { cuSeqlens: layout.cuSeqlensK };
  const ks = sequences(keyLayout, blockSize);
  const Tq = cq[cq.length - 1]!;
  const seqOfQ: SeqInfo[] = [];
  const pos = new Int32Array(Tq);
  for (let b = 0; b + 1 < cq.length; b++) {
    const s = ks.seqs[b]!;
    const nq = cq[b + 1]! - cq[b]!;
    for (let a = 0; a < nq; a++) {
      seqOfQ.push(s);
      pos[cq[b]! + a] = s.start + s.len - nq + a;
    }
  }
  return { Tq, Tk: ks.seqOf.length, keyLayout, seqOfQ, pos };
}
