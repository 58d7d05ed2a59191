/**
 * GPU_CHECK_ONLY=collect: the two-launch collect (MOBA_CUDA_COLLECT=chunked, opt-in until this check passes on the H200) against the legacy five-launch path
 * (MOBA_CUDA_COLLECT=legacy, read at every collect): offsets, rows and slotOf bitwise, on real routings
 * (backend.route on random q/k) and synthetic indices (routingFromIndices: varlen, nq < nk, non-causal,
 * topk >= blocks, -1 padding, one block chosen by > 8192 rows of a head, chunk boundaries inside sequences,
 * a sequence of 20000 blocks: the global-memory fallback), each also against core's collectRouting; then
 * the median GPU ms (profiled collect kernels) of both paths at T = 16K and 256K rows, Hq 16, topk 8, B 128.
 */
import { type AttentionLayout, type Layout, Rng, collectRouting, hostTensor, queryRows, sequences } from '@moba/core';
import type { CudaBackend } from '../src/index.js';

type Lists = { offsets: Int32Array; rows: Int32Array; slotOf: Int32Array };
type Dbg = CudaBackend & { debugRoutingLists(r: unknown, lists: number): Lists };
interface Case { name: string; kl: number[]; ql: number[]; Hq: number; topk: number; B: number; causal: boolean; hot?: boolean }

const firstDiff = (a: Int32Array, b: Int32Array): string | null => {
  if (a.length !== b.length) return `length ${a.length} vs ${b.length}`;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return `[${i}] ${a[i]} vs ${b[i]}`;
  return null;
};
const prefix = (xs: number[]): Int32Array => Int32Array.from([0, ...xs.map((_, i) => xs.slice(0, i + 1).reduce((a, x) => a + x, 0))]);
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

/** Valid random indices (ascending, -1 padded; causal: no future block). `hot`: every row of head 0 picks block 0. */
function synth(c: Case, rng: Rng): Int32Array {
  const cu = prefix(c.kl), cuq = prefix(c.ql), T = cuq[cuq.length - 1]!;
  const ix = new Int32Array(T * c.Hq * c.topk).fill(-1);
  for (let s = 0; s < c.kl.length; s++) {
    const nb = Math.ceil(c.kl[s]! / c.B);
    for (let t = cuq[s]!; t < cuq[s + 1]!; t++) {
      const pos = cu[s + 1]! - c.ql[s]! + (t - cuq[s]!) - cu[s]!; // key position (bottom-right aligned)
      const lim = c.causal ? Math.floor(pos / c.B) : nb - 1;
      for (let h = 0; h < c.Hq; h++) {
        const set = new Set<number>(c.hot && h === 0 ? [0] : []);
        const want = rng.int(0, c.topk);
        for (let k = 0; k < 3 * c.topk && set.size < want; k++) set.add(rng.int(0, lim));
        [...set].sort((a, b) => a - b).forEach((j, i) => (ix[(t * c.Hq + h) * c.topk + i] = j));
      }
    }
  }
  return ix;
}

async function lists(b: Dbg, mode: string, run: () => Promise<unknown>, n: number): Promise<Lists> {
  process.env.MOBA_CUDA_COLLECT = mode;
  const r = await run();
  const l = b.debugRoutingLists(r, n);
  b.dispose(r as never);
  return l;
}

export async function collectStep(b: CudaBackend, log: (s: string) => void): Promise<{ ok: boolean; results: Record<string, unknown>[] }> {
  const d = b as Dbg, rng = new Rng(1313), results: Record<string, unknown>[] = [];
  let ok = true;
  const cases: Case[] = [
    { name: 'varlen causal 3 seqs', kl: [5000, 77, 3100], ql: [5000, 77, 3100], Hq: 3, topk: 8, B: 64, causal: true },
    { name: 'nq < nk, empty query seq', kl: [4000, 900, 2500], ql: [1000, 0, 2500], Hq: 2, topk: 4, B: 128, causal: true },
    { name: 'non-causal, topk >= blocks', kl: [700, 300], ql: [700, 300], Hq: 4, topk: 16, B: 128, causal: false },
    { name: 'hot block (> 8192 rows of head 0)', kl: [20000], ql: [20000], Hq: 2, topk: 8, B: 128, causal: true, hot: true },
    { name: 'many short seqs (chunks split them)', kl: Array.from({ length: 200 }, (_, i) => 37 + 13 * i), ql: Array.from({ length: 200 }, (_, i) => 37 + 13 * i), Hq: 2, topk: 3, B: 16, causal: true },
    { name: '20000-block sequence (global fallback)', kl: [20000 * 16], ql: [3000], Hq: 1, topk: 8, B: 16, causal: false },
  ];
  const check = (name: string, a: Lists, l: Lists, ref: { offsets: Int32Array; rows: Int32Array } | null): void => {
    const diff = firstDiff(a.offsets, l.offsets) ?? firstDiff(a.rows, l.rows) ?? firstDiff(a.slotOf, l.slotOf) ?? (ref ? firstDiff(a.offsets, ref.offsets) ?? firstDiff(a.rows, ref.rows) : null);
    ok &&= diff === null;
    results.push({ name, nnz: a.rows.length, ok: diff === null, firstMismatch: diff });
    log(`  ${diff === null ? '✓' : '✗'} ${name}: nnz ${a.rows.length}${diff ? `; first mismatch ${diff}` : ''}`);
  };
  for (const c of cases) {
    const layout: AttentionLayout = { cuSeqlensK: prefix(c.kl), cuSeqlensQ: prefix(c.ql) };
    const cfg = { blockSize: c.B, topk: c.topk, causal: c.causal };
    const ix = synth(c, rng), T = ix.length / c.Hq / c.topk, seqs = sequences({ cuSeqlens: prefix(c.kl) }, c.B);
    const n = c.Hq * seqs.totalBlocks + 1, run = async (): Promise<unknown> => b.routingFromIndices(ix, { T, Hq: c.Hq }, layout, cfg);
    const [a, l] = [await lists(d, 'chunked', run, n), await lists(d, 'legacy', run, n)];
    check(c.name, a, l, collectRouting(ix, T, c.Hq, c.topk, seqs, queryRows(layout)));
  }
  for (const [N, D] of [[3000, 64], [9000, 128]] as const) { // real routings
    const layout: Layout = { cuSeqlens: Int32Array.from([0, N, 2 * N + 7]) }, T = 2 * N + 7, H = 4;
    const q = await b.upload(hostTensor('f32', [T, H, D], rng.normals(T * H * D))), k = await b.upload(hostTensor('f32', [T, H, D], rng.normals(T * H * D)));
    const n = H * sequences(layout, 128).totalBlocks + 1, run = async (): Promise<unknown> => b.route(q, k, layout, { blockSize: 128, topk: 8 });
    check(`route T=${T} D=${D}`, await lists(d, 'chunked', run, n), await lists(d, 'legacy', run, n), null);
    b.dispose(q, k);
  }
  for (const T of [16384, 262144]) { // timings: two sequences, Hq 16, topk 8, B 128
    const Hq = 16, c: Case = { name: 't', kl: [T / 2, T / 2], ql: [T / 2, T / 2], Hq, topk: 8, B: 128, causal: true };
    const ix = synth(c, rng), layout: Layout = { cuSeqlens: prefix(c.kl) }, ms: Record<string, number> = {};
    for (const mode of ['chunked', 'legacy']) {
      process.env.MOBA_CUDA_COLLECT = mode;
      const xs: number[] = [];
      for (let i = 0; i < 6; i++) {
        b.profiling = true; b.takeProfile();
        const r = await b.routingFromIndices(ix, { T, Hq }, layout, { blockSize: 128, topk: 8 });
        const p = b.takeProfile(); b.profiling = false; b.dispose(r);
        if (i > 0) xs.push(Object.entries(p).filter(([k]) => k.startsWith('collect_')).reduce((x, [, v]) => x + v, 0));
      }
      ms[mode === 'chunked' ? 'twoLaunch' : mode] = +median(xs).toFixed(3);
    }
    results.push({ name: `timing T=${T}`, ms });
    log(`  collect T=${T / 1024}K Hq 16 topk 8 B 128: two-launch ${ms.twoLaunch} ms, legacy ${ms.legacy} ms (median of 5, profiled kernels)`);
  }
  delete process.env.MOBA_CUDA_COLLECT;
  return { ok, results };
}
