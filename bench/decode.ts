/**
 * The decode bench (`pnpm bench -- --decode`): decode steps and a chunked prefill on a backend's paged KV cache,
 * against dense decode on the same cache and the device's copy bandwidth, measured in the same run. Byte and FLOP
 * counts come from `planCacheAttend` (docs/benchmarks.md, "Decode"). Every timing waits for the device (`sync`).
 */
import { type Backend, type DeviceTensor, type KVCache, MobaError, Rng, hostTensor, planCacheAttend } from 'moba-ts';
import type { DecodeFlags } from './decode-args.js';
import { measureCopyBandwidth, measureReadBandwidth } from './decode-bandwidth.js';
import type { DecodeCase, DecodeResult, DenseDecode, PrefillCase } from './decode-report.js';
import { median } from './measure.js';

const log = (s: string): void => void process.stderr.write(`bench: ${s}\n`);

/** A decode configuration's geometry. */
export interface Geometry {
  readonly Hq: number;
  readonly Hkv: number;
  readonly D: number;
  readonly B: number;
  readonly dtype: 'f32' | 'f16' | 'bf16';
}

/** A seeded random `[rows, H, D]` tensor on `b`. */
async function randomTensor(b: Backend, rng: Rng, g: Geometry, rows: number, H: number): Promise<DeviceTensor> {
  const x = rng.fastNormals(rows * H * g.D, g.dtype);
  return b.upload(g.dtype === 'f32' ? hostTensor('f32', [rows, H, g.D], x as Float32Array) : hostTensor(g.dtype, [rows, H, g.D], x as Uint16Array));
}

/** Times `f` from an idle device to the completion of its work (ms); `waits` gets the ms of the final sync alone. */
async function timed(b: Backend, f: () => Promise<void>, waits?: number[]): Promise<number> {
  await b.sync();
  const t0 = performance.now();
  await f();
  const t1 = performance.now();
  await b.sync();
  const t2 = performance.now();
  waits?.push(t2 - t1);
  return t2 - t0;
}

/** Fills sequence `seq` with `n` tokens, appending `chunk`-token pieces of the same random keys and values. */
async function fill(b: Backend, cache: KVCache, seq: number, n: number, pieces: Map<number, [DeviceTensor, DeviceTensor]>, rng: Rng, g: Geometry, chunk: number): Promise<void> {
  for (let pos = 0; pos < n; pos += chunk) {
    const rows = Math.min(chunk, n - pos);
    let kv = pieces.get(rows);
    if (!kv) {
      kv = [await randomTensor(b, rng, g, rows, g.Hkv), await randomTensor(b, rng, g, rows, g.Hkv)];
      pieces.set(rows, kv);
    }
    await cache.append([seq], kv[0], kv[1], Int32Array.of(0, rows));
  }
}

function poolTokens(batch: number, n: number, extra: number, B: number): number {
  return batch * (Math.ceil((n + extra) / B) + 1) * B;
}

/** Tokens per fill piece. */
const CHUNK = 8192;
const isMemory = (e: unknown): boolean => e instanceof MobaError && e.code === 'E_MEMORY';
const gib = (x: number): string => (x / 2 ** 30).toFixed(1);

/**
 * Why a cache of `tokens` for `seqs` sequences (`chunk`-token fill pieces) would not fit `budget` bytes, or null
 * (pure). Needed: the pool (pages of K, V and the f32 key sums and centroids), the fill pieces and the step's
 * q, k, v, plus a slack of 256 MiB and 1% of the pool for the attends' scratch.
 */
export function memorySkip(g: Geometry, tokens: number, seqs: number, chunk: number, budget: { bytes: number; source: string }): string | null {
  const eb = g.dtype === 'f32' ? 4 : 2;
  const C = g.Hkv * g.D;
  const pages = Math.ceil(tokens / g.B);
  const pool = pages * (2 * g.B * C * eb + 2 * C * 4);
  const work = (2 * chunk * C + seqs * (g.Hq * g.D + 2 * C)) * eb;
  const need = pool + work + 2 ** 28 + pool / 100;
  if (need <= budget.bytes) return null;
  return `memory: needs ${gib(need)} GiB (a pool of ${pages} pages, ${gib(pool)} GiB, + working set and slack) > ${gib(budget.bytes)} GiB (${budget.source})`;
}

/** The memory a cache may use: the backend's caps.memoryBytes, or --memory-gb when that is smaller. */
function budgetOf(b: Backend, f: DecodeFlags): { bytes: number; source: string } {
  const caps = b.caps.memoryBytes;
  return f.memoryBytes !== undefined && f.memoryBytes < caps ? { bytes: f.memoryBytes, source: '--memory-gb' } : { bytes: caps, source: `the ${b.name} backend's caps.memoryBytes` };
}

async function openCache(b: Backend, g: Geometry, tokens: number, seqs: number, f: DecodeFlags): Promise<KVCache | string> {
  if (typeof b.createCache !== 'function' || !b.caps.kvCache) return `the ${b.name} backend has no KV cache (caps.kvCache is false)`;
  const skip = memorySkip(g, tokens, seqs, Math.min(tokens, CHUNK), budgetOf(b, f));
  if (skip !== null) return skip;
  try {
    return await b.createCache({ Hkv: g.Hkv, D: g.D, dtype: g.dtype, blockSize: g.B, capacityTokens: tokens, maxSequences: seqs + 2 });
  } catch (e) {
    if (isMemory(e)) return `memory: ${(e as Error).message}`;
    throw e;
  }
}

/** One (heads, N, batch) point: attend alone, append + attend, dense attend. */
async function decodeCase(b: Backend, g: Geometry, N: number, batch: number, f: DecodeFlags, rng: Rng): Promise<DecodeCase> {
  const base = { Hq: g.Hq, Hkv: g.Hkv, N, batch };
  const steps = 2 + 2 * (f.reps + 2);
  const cache = await openCache(b, g, poolTokens(batch, N, steps, g.B), batch, f);
  if (typeof cache === 'string') return { ...base, skipped: cache };
  const owned: DeviceTensor[] = [];
  const pieces = new Map<number, [DeviceTensor, DeviceTensor]>();
  try {
    const seqs = Array.from({ length: batch }, () => cache.newSequence());
    for (const s of seqs) await fill(b, cache, s, N, pieces, rng, g, Math.min(N, CHUNK));
    const q = await randomTensor(b, rng, g, batch, g.Hq);
    const k = await randomTensor(b, rng, g, batch, g.Hkv);
    const v = await randomTensor(b, rng, g, batch, g.Hkv);
    owned.push(q, k, v);
    const cu = Int32Array.from({ length: batch + 1 }, (_, i) => i);
    const cfg = { topk: f.topk };
    const attend = async (topk: number): Promise<void> => {
      const r = await cache.attend(seqs, q, cu, { topk });
      b.dispose(r.out, r.lse);
    };
    const attendMs: number[] = [];
    const stepMs: number[] = [];
    const waits: number[] = [];
    const prof = b as Partial<{ timings(): Map<string, number>; hostTimings(): Map<string, number>; clearTimings(): void }>;
    prof.clearTimings?.();
    for (let i = 0; i < f.reps + 2; i++) {
      await cache.append(seqs, k, v, cu); // the new token, untimed
      const a = await timed(b, () => attend(cfg.topk), i >= 2 ? waits : undefined);
      const s = await timed(b, async () => {
        await cache.append(seqs, k, v, cu);
        await attend(cfg.topk);
      });
      if (i >= 2) {
        attendMs.push(a);
        stepMs.push(s);
      }
    }
    // every loop pass appends twice and attends twice: kernel ms per (attend + append)
    const kernels = [...(prof.timings?.() ?? [])].map(([k, ms]) => [k, ms / (2 * (f.reps + 2))] as const);
    const host = [...(prof.hostTimings?.() ?? [])].map(([k, ms]) => [k, ms / (2 * (f.reps + 2))] as const);
    const len = cache.length(seqs[0]!);
    const p = planCacheAttend(seqs.map(() => ({ length: len, nq: 1 })), { Hq: g.Hq, Hkv: g.Hkv, D: g.D, dtype: g.dtype, blockSize: g.B, topk: f.topk });
    let dense: DenseDecode = null;
    if (f.dense) {
      const all = Math.ceil(len / g.B) + 1;
      const cap = b.caps.maxCacheTopk ?? b.caps.maxTopk;
      if (all > cap && !b.caps.cacheDense) dense = { skipped: `topk ${all} > caps.maxCacheTopk ${cap} (no caps.cacheDense)` };
      else {
        try {
          await attend(all);
          const ms: number[] = [];
          for (let i = 0; i < f.reps; i++) ms.push(await timed(b, () => attend(all)));
          dense = { attendMs: median(ms), reps: ms };
        } catch (e) {
          if (!isMemory(e)) throw e;
          dense = { skipped: `memory: ${(e as Error).message}` };
        }
      }
    }
    const kernelMs = { ...(kernels.length ? { kernelMs: Object.fromEntries(kernels) } : {}), ...(host.length ? { hostMs: Object.fromEntries(host) } : {}) };
    if (kernels.length) log(`  GPU ms per attend + append: ${kernels.map(([k, ms]) => `${k} ${ms.toFixed(3)}`).join(', ')}`);
    if (host.length) log(`  host ms per attend + append: ${host.map(([k, ms]) => `${k} ${ms.toFixed(3)}`).join(', ')}; sync wait after an attend (median) ${median(waits).toFixed(3)}`);
    return { ...base, length: len, attendMs: median(attendMs), stepMs: median(stepMs), reps: { attend: attendMs, step: stepMs }, plan: p, dense, ...kernelMs };
  } catch (e) {
    if (isMemory(e)) return { ...base, skipped: `memory: ${(e as Error).message}` };
    throw e;
  } finally {
    for (const [kk, vv] of pieces.values()) owned.push(kk, vv);
    b.dispose(...owned);
    await cache.destroy();
  }
}

/** A `chunk`-token prefill step (append + attend of all its queries) on a `context`-token sequence, forked per rep. */
async function prefillCase(b: Backend, g: Geometry, f: DecodeFlags, rng: Rng): Promise<PrefillCase> {
  const { prefillContext: N, prefillChunk: C } = f;
  const base = { Hq: g.Hq, Hkv: g.Hkv, context: N, chunk: C };
  const cache = await openCache(b, g, poolTokens(1, N, 2 * C, g.B) + 2 * g.B, 1, f);
  if (typeof cache === 'string') return { ...base, skipped: cache };
  const owned: DeviceTensor[] = [];
  const pieces = new Map<number, [DeviceTensor, DeviceTensor]>();
  try {
    const seq = cache.newSequence();
    await fill(b, cache, seq, N, pieces, rng, g, Math.min(N, CHUNK));
    const q = await randomTensor(b, rng, g, C, g.Hq);
    const k = await randomTensor(b, rng, g, C, g.Hkv);
    const v = await randomTensor(b, rng, g, C, g.Hkv);
    owned.push(q, k, v);
    const cu = Int32Array.of(0, C);
    const ms: number[] = [];
    for (let i = 0; i < f.reps + 1; i++) {
      const s = await cache.fork(seq); // shares the full pages: each rep starts from the same N tokens
      const t = await timed(b, async () => {
        await cache.append([s], k, v, cu);
        const r = await cache.attend([s], q, cu, { topk: f.topk });
        b.dispose(r.out, r.lse);
      });
      cache.free(s);
      if (i >= 1) ms.push(t);
    }
    const p = planCacheAttend([{ length: N + C, nq: C }], { Hq: g.Hq, Hkv: g.Hkv, D: g.D, dtype: g.dtype, blockSize: g.B, topk: f.topk });
    return { ...base, stepMs: median(ms), reps: ms, plan: p };
  } catch (e) {
    if (isMemory(e)) return { ...base, skipped: `memory: ${(e as Error).message}` };
    throw e;
  } finally {
    for (const [kk, vv] of pieces.values()) owned.push(kk, vv);
    b.dispose(...owned);
    await cache.destroy();
  }
}

/** Runs every configuration of `f` on `b`. */
export async function measureDecode(b: Backend, f: DecodeFlags): Promise<Omit<DecodeResult, 'machine' | 'date' | 'command' | 'gitCommit' | 'torch'>> {
  const rng = new Rng(f.seed);
  const copy = await measureCopyBandwidth(b);
  const readBandwidth = await measureReadBandwidth(b);
  for (const [what, m] of [['copy', copy], ['read', readBandwidth]] as const) {
    log(`${what} bandwidth: ${m.bytesPerSecond ? `${(m.bytesPerSecond / 1e9).toFixed(1)} GB/s (${m.how})` : m.how.startsWith('not measured') ? m.how : `not measured: ${m.how}`}`);
  }
  const cases: DecodeCase[] = [];
  for (const [Hq, Hkv] of f.heads) {
    const g: Geometry = { Hq, Hkv, D: f.D, B: f.B, dtype: f.dtype };
    for (const N of f.contexts) {
      for (const batch of f.batch) {
        const c = await decodeCase(b, g, N, batch, f, rng);
        log(`${Hq}/${Hkv} N=${N} batch=${batch}: ${'skipped' in c ? `skipped (${c.skipped})` : `attend ${c.attendMs.toFixed(3)} ms, step ${c.stepMs.toFixed(3)} ms`}`);
        cases.push(c);
      }
    }
  }
  const prefill: PrefillCase[] = [];
  if (f.prefillContext > 0) {
    for (const [Hq, Hkv] of f.heads) {
      const c = await prefillCase(b, { Hq, Hkv, D: f.D, B: f.B, dtype: f.dtype }, f, rng);
      log(`prefill ${Hq}/${Hkv} ${f.prefillChunk} on ${f.prefillContext}: ${'skipped' in c ? `skipped (${c.skipped})` : `${c.stepMs.toFixed(2)} ms`}`);
      prefill.push(c);
    }
  }
  return {
    backend: { name: b.name },
    problem: { D: f.D, blockSize: f.B, topk: f.topk, dtype: f.dtype, reps: f.reps },
    copy, readBandwidth, cases, prefill,
  };
}
