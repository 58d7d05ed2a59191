/**
 * One fixed problem run end to end on a CPU backend, the same in Node and in a page (this module is
 * Node-free): two sequences, GQA, kconv → route → forward → backward → kconv backward, plus the dense
 * baseline, in f32 and bf16. Every result comes back as raw bits (f32 as uint32, f16/bf16 as uint16,
 * routing indices as int32), so results can be compared bitwise across thread counts and runtimes.
 */
import { type DType, type HostTensor, Rng, fromFloat, moba, mobaBackward } from '@moba/core';
import type { CpuBackend } from '../../src/index.js';

export type Bits = Record<string, number[]>;

const SEQLENS = [300, 460] as const;
const HQ = 4;
const HKV = 2;
const D = 32;
const W = 3;
const CFG = { blockSize: 32, topk: 3 } as const;

function bits(t: HostTensor): number[] {
  const d = t.data;
  return Array.from(d instanceof Float32Array ? new Uint32Array(d.buffer, d.byteOffset, d.length) : d);
}

async function runDtype(b: CpuBackend, dtype: DType, out: Bits): Promise<void> {
  const rng = new Rng(dtype === 'f32' ? 11 : 12);
  const T = SEQLENS.reduce((a, n) => a + n, 0);
  const cuSeqlens = Int32Array.of(0, SEQLENS[0], T);
  const t = (shape: number[], std = 1): HostTensor => fromFloat(rng.normals(shape.reduce((a, n) => a * n, 1), std), dtype, shape);
  const q = t([T, HQ, D]);
  const k = t([T, HKV, D]);
  const v = t([T, HKV, D]);
  const dOut = t([T, HQ, D]);
  const w = t([HKV * D, W], 0.2);
  const res = await moba(b, { q, k, v, cuSeqlens, kconvWeight: w }, CFG);
  const g = await mobaBackward(b, res.ctx, dOut);
  const get = async (name: string, x: Parameters<CpuBackend['download']>[0]): Promise<void> => {
    out[`${dtype} ${name}`] = bits(await b.download(x));
  };
  out[`${dtype} routing`] = Array.from(await b.routingIndices(res.routing));
  await get('out', res.out);
  await get('lse', res.lse);
  await get('dq', g.dq);
  await get('dk', g.dk);
  await get('dv', g.dv);
  await get('dKconvWeight', g.dKconvWeight!);
  const [qd, kd, vd, dOutD] = [await b.upload(q), await b.upload(k), await b.upload(v), await b.upload(dOut)];
  const dense = await b.denseForward(qd, kd, vd, { cuSeqlens });
  const dg = await b.denseBackward(qd, kd, vd, dense.out, dense.lse, dOutD, { cuSeqlens });
  await get('dense out', dense.out);
  await get('dense lse', dense.lse);
  await get('dense dq', dg.dq);
  await get('dense dk', dg.dk);
  await get('dense dv', dg.dv);
  res.ctx.dispose();
}

/** Runs the problem on `b` (not destroyed) and returns every result as raw bits. */
export async function runProblem(b: CpuBackend): Promise<Bits> {
  const out: Bits = {};
  for (const dtype of ['f32', 'bf16'] as const) await runDtype(b, dtype, out);
  return out;
}

/** Names of the results that differ bitwise between `a` and `b`, with the first differing index. */
export function bitDiffs(a: Bits, b: Bits): string[] {
  const names = [...new Set([...Object.keys(a), ...Object.keys(b)])].sort();
  const diffs: string[] = [];
  for (const n of names) {
    const x = a[n];
    const y = b[n];
    if (!x || !y) diffs.push(`${n}: missing on one side`);
    else if (x.length !== y.length) diffs.push(`${n}: length ${x.length} vs ${y.length}`);
    else {
      const i = x.findIndex((v, j) => v !== y[j]);
      if (i >= 0) diffs.push(`${n}: first difference at ${i} (${x[i]} vs ${y[i]})`);
    }
  }
  return diffs;
}
