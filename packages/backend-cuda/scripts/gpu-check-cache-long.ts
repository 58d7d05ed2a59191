/**
 * Long-context part of the `cache` step of gpu-check.ts: attends whose router is split over many CTAs (16K–64K
 * tokens, batch 1 and 3 sequences of different lengths, B 64 and 128, GQA 32/8 and 16/16, topk up to 64,
 * non-causal) and dense attends (topk 10^6: every block). bf16, no kconv: the keys are the appended ones, so the
 * float64 reference (block means, exact top-k with near-ties skipped, softmax over the selected keys) needs no
 * read(). Also bitwise: the planned split against MOBA_CUDA_ROUTE_SPLIT=1 (unsplit) and = 3, and each sequence
 * alone against the batch (another split count).
 */
import { type KVCache, createCache, dtypeEps, hostTensor } from '@moba/core';
import type { CudaBackend } from '../src/index.js';

export interface LongCase { name: string; Hq: number; Hkv: number; B: number; topk: number; causal: boolean; lens: number[]; nq: number[] }

export const LONG_CASES: LongCase[] = [
  { name: 'split: 32/8 B128 top8 64K x1', Hq: 32, Hkv: 8, B: 128, topk: 8, causal: true, lens: [65536], nq: [1] },
  { name: 'split: 16/16 B64 top64 lens 12K 24K 17K', Hq: 16, Hkv: 16, B: 64, topk: 64, causal: true, lens: [12288, 24000, 17001], nq: [1, 3, 1] },
  { name: 'split: 16/16 B128 top5 non-causal lens 12K 20K 9K', Hq: 16, Hkv: 16, B: 128, topk: 5, causal: false, lens: [12000, 20001, 9000], nq: [2, 1, 1] },
  { name: 'dense: 16/16 B128 topk 1e6 lens 8K 5K', Hq: 16, Hkv: 16, B: 128, topk: 1e6, causal: true, lens: [8192, 5000], nq: [1, 2] },
  { name: 'dense: 32/8 B64 topk 1e6 32K x1', Hq: 32, Hkv: 8, B: 64, topk: 1e6, causal: true, lens: [32768], nq: [2] },
];

const D = 128;

/** Random bf16 bits (xorshift32): magnitudes in [0.25, 1), random signs. */
export function bits(n: number, seed: number): Uint16Array {
  const out = new Uint16Array(n);
  let x = (seed * 2654435761) | 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13; x ^= x >>> 17; x ^= x << 5;
    out[i] = (x & 0x8000) | (0x3f00 + ((x >>> 16) & 0xff)) - ((x >>> 24) & 1) * 0x80;
  }
  return out;
}

/** bf16 bits → value (a 64K-entry table: the keys and values stay bits). */
const BF16 = new Float32Array(new Uint32Array(65536).map((_, b) => b << 16).buffer);
const values = (b: Uint16Array): Float32Array => Float32Array.from(b, (x) => BF16[x]!);
const bitsEqual = (a: ArrayLike<number>, b: ArrayLike<number>): boolean => a.length === b.length && Array.from(a).every((x, i) => Object.is(x, b[i]));

interface Seq { id: number; L: number; k: Uint16Array; v: Uint16Array }

async function attend(b: CudaBackend, cache: KVCache, seqs: Seq[], nq: number[], q: Uint16Array, c: LongCase, split: string | null): Promise<{ out: Uint16Array; lse: Float32Array }> {
  const cu = Int32Array.from([0, ...nq.map((_, i) => nq.slice(0, i + 1).reduce((a, x) => a + x, 0))]);
  const Tq = cu[cu.length - 1]!;
  const before = process.env.MOBA_CUDA_ROUTE_SPLIT;
  if (split === null) delete process.env.MOBA_CUDA_ROUTE_SPLIT;
  else process.env.MOBA_CUDA_ROUTE_SPLIT = split;
  try {
    const qd = await b.upload(hostTensor('bf16', [Tq, c.Hq, D], q));
    const o = await cache.attend(seqs.map((s) => s.id), qd, cu, { topk: c.topk, causal: c.causal });
    const r = { out: (await b.download(o.out)).data as Uint16Array, lse: (await b.download(o.lse)).data as Float32Array };
    b.dispose(qd, o.out, o.lse);
    return r;
  } finally {
    if (before === undefined) delete process.env.MOBA_CUDA_ROUTE_SPLIT;
    else process.env.MOBA_CUDA_ROUTE_SPLIT = before;
  }
}

/** Float64 reference of one (row at position t of s, head h): out [D], lse; null when the k-th score is a near-tie. */
function reference(c: LongCase, s: Seq, cent: Float64Array, q: Float32Array, t: number, h: number): { out: Float64Array; lse: number } | null {
  const C = c.Hkv * D, kvh = Math.floor(h / (c.Hq / c.Hkv)), cb = Math.floor(t / c.B);
  const nb = c.causal ? cb : Math.ceil(s.L / c.B);
  const sc: { s: number; j: number }[] = [];
  for (let j = 0; j < nb; j++) {
    let x = 0;
    for (let d = 0; d < D; d++) x += q[d]! * cent[j * C + kvh * D + d]!;
    sc.push({ s: x, j });
  }
  sc.sort((a, x) => x.s - a.s || x.j - a.j);
  const K = c.causal ? c.topk - 1 : c.topk;
  const mag = Math.max(1, ...sc.map((x) => Math.abs(x.s)));
  if (K > 0 && sc.length > K && sc[K - 1]!.s - sc[K]!.s < 1e-4 * mag) return null;
  const blocks = sc.slice(0, K).map((x) => x.j);
  if (c.causal) blocks.push(cb);
  const scale = 1 / Math.sqrt(D);
  const logits: number[] = [], rows: number[] = [];
  for (const j of blocks.sort((a, x) => a - x)) {
    for (let p = j * c.B; p < Math.min((j + 1) * c.B, s.L) && (!c.causal || p <= t); p++) {
      let x = 0;
      for (let d = 0; d < D; d++) x += q[d]! * BF16[s.k[p * C + kvh * D + d]!]!;
      logits.push(x * scale);
      rows.push(p);
    }
  }
  const m = Math.max(...logits);
  let l = 0;
  const out = new Float64Array(D);
  logits.forEach((x, i) => {
    const w = Math.exp(x - m);
    l += w;
    for (let d = 0; d < D; d++) out[d]! += w * BF16[s.v[rows[i]! * C + kvh * D + d]!]!;
  });
  for (let d = 0; d < D; d++) out[d]! /= l;
  return { out, lse: m + Math.log(l) };
}

/** Block means in f64 `[nb, C]` (the open block's mean too). */
function centroids(s: Seq, C: number, B: number): Float64Array {
  const nb = Math.ceil(s.L / B);
  const cent = new Float64Array(nb * C);
  for (let j = 0; j < nb; j++) {
    const n = Math.min(B, s.L - j * B);
    for (let p = j * B; p < j * B + n; p++) for (let x = 0; x < C; x++) cent[j * C + x]! += BF16[s.k[p * C + x]!]!;
    for (let x = 0; x < C; x++) cent[j * C + x]! /= n;
  }
  return cent;
}

/** One long case: fill, attend (planned split, unsplit, split 3, each alone), check. Returns the failures. */
export async function longCase(b: CudaBackend, c: LongCase, seed: number): Promise<{ failures: string[]; stats: Record<string, number> }> {
  const fail: string[] = [];
  const C = c.Hkv * D, chunk = 8192;
  const total = c.lens.reduce((a, x) => a + x, 0);
  const cache = await createCache(b, { Hkv: c.Hkv, D, dtype: 'bf16', blockSize: c.B, capacityTokens: total + c.lens.length * 2 * c.B, maxSequences: c.lens.length });
  let checked = 0, nearTies = 0, bad = 0;
  try {
    const seqs: Seq[] = [];
    for (const [i, L] of c.lens.entries()) {
      const kb = bits(L * C, seed + 2 * i), vb = bits(L * C, seed + 2 * i + 1);
      const id = cache.newSequence();
      for (let p = 0; p < L; p += chunk) {
        const n = Math.min(chunk, L - p);
        const kd = await b.upload(hostTensor('bf16', [n, c.Hkv, D], kb.slice(p * C, (p + n) * C)));
        const vd = await b.upload(hostTensor('bf16', [n, c.Hkv, D], vb.slice(p * C, (p + n) * C)));
        await cache.append([id], kd, vd, Int32Array.from([0, n]));
        b.dispose(kd, vd);
      }
      seqs.push({ id, L, k: kb, v: vb });
    }
    const Tq = c.nq.reduce((a, x) => a + x, 0), E = c.Hq * D;
    const qb = bits(Tq * E, seed + 99);
    const qv = values(qb);
    const main = await attend(b, cache, seqs, c.nq, qb, c, null);
    for (const split of ['1', '3']) {
      const o = await attend(b, cache, seqs, c.nq, qb, c, split);
      if (!bitsEqual(o.out, main.out) || !bitsEqual(o.lse, main.lse)) fail.push(`MOBA_CUDA_ROUTE_SPLIT=${split} differs bitwise from the planned split`);
    }
    let r0 = 0;
    for (const [i, s] of seqs.entries()) {
      const nq = c.nq[i]!;
      const one = await attend(b, cache, [s], [nq], qb.slice(r0 * E, (r0 + nq) * E), c, null);
      if (!bitsEqual(one.out, main.out.subarray(r0 * E, (r0 + nq) * E)) || !bitsEqual(one.lse, main.lse.subarray(r0 * c.Hq, (r0 + nq) * c.Hq))) fail.push(`batch invariance: sequence ${i} alone differs from batched`);
      const cent = centroids(s, C, c.B);
      const outV = values(main.out.subarray(r0 * E, (r0 + nq) * E));
      for (let a = 0; a < nq; a++) {
        const t = s.L - nq + a, row = r0 + a;
        for (let h = 0; h < c.Hq; h++) {
          const ref = reference(c, s, cent, qv.subarray((row * c.Hq + h) * D, (row * c.Hq + h + 1) * D), t, h);
          if (!ref) { nearTies++; continue; }
          checked++;
          let maxRef = 0, maxDiff = 0;
          for (let d = 0; d < D; d++) {
            maxRef = Math.max(maxRef, Math.abs(ref.out[d]!));
            maxDiff = Math.max(maxDiff, Math.abs(ref.out[d]! - outV[(a * c.Hq + h) * D + d]!));
          }
          const got = main.lse[row * c.Hq + h]!;
          if (!(maxDiff <= 4 * dtypeEps('bf16') * (maxRef + 0.05)) || !(Math.abs(got - ref.lse) <= 1e-3 * Math.max(1, Math.abs(ref.lse)))) {
            if (bad++ < 5) fail.push(`seq ${i} (L ${s.L}) row ${t} head ${h}: out max diff ${maxDiff.toExponential(2)} (ref max ${maxRef.toFixed(3)}), lse ${got} vs ${ref.lse}`);
          }
        }
      }
      r0 += nq;
    }
  } finally {
    await cache.destroy();
  }
  if (bad > 5) fail.push(`… ${bad} row-heads off the reference in all`);
  return { failures: fail, stats: { rowHeadsChecked: checked, nearTies, rowHeadsBad: bad } };
}
