/**
 * What every backend's KV cache shares (SPEC §9): option and call validation (SPEC §7 codes), the page pool
 * (free list, reference counts: a full page is immutable and may be shared by forks), the sequences' page tables
 * and lengths, E_MEMORY before anything is written, and one call at a time. A backend extends `CacheShell` and
 * implements the stages, which receive checked plans.
 */
import type { Capabilities, DeviceTensor, ForwardResult } from './backend.js';
import type {
  AppendEntry, AppendPlan, AttendEntry, AttendPlan, CacheAttendConfig, CacheContents, CacheStats, KVCache, PageCopy,
} from './cache.js';
import { type ResolvedCacheOptions, attendTopk } from './cache-options.js';
import { resolveConfig } from './config.js';
import type { DType } from './dtype.js';
import { MobaError, checkKeys, shapeStr } from './errors.js';
import { checkCuSeqlens } from './layout.js';

/** What the owning backend lends its cache: its name, caps and tensor handles. */
export interface CacheHost<TData> {
  readonly name: string;
  readonly caps: Capabilities;
  /** The data of one of the backend's live tensors (refuses others, checks the backend is alive). */
  tensor(param: string, t: unknown): TData;
  /** A new tensor handle of the backend. */
  wrap(dtype: DType, shape: readonly number[], data: TData): DeviceTensor;
}

interface Seq {
  readonly slot: number;
  length: number;
  pages: number[];
  /** `pages` as an Int32Array, made when a stage needs it and dropped when `pages` changes (never mutated). */
  table: Int32Array | null;
}

export abstract class CacheShell<TData> implements KVCache {
  readonly backend: string;
  readonly Hkv: number;
  readonly D: number;
  readonly dtype: DType;
  readonly blockSize: number;
  readonly kconvWidth: number;
  readonly maxSequences: number;
  protected readonly host: CacheHost<TData>;
  protected readonly opts: ResolvedCacheOptions;
  readonly #refs: Int32Array;
  readonly #free: number[];
  readonly #slots: number[];
  readonly #seqs = new Map<number, Seq>();
  #nextId = 0;
  #queue: Promise<unknown> = Promise.resolve();
  #destroyed = false;

  constructor(host: CacheHost<TData>, opts: ResolvedCacheOptions) {
    this.host = host;
    this.opts = opts;
    this.backend = host.name;
    ({ Hkv: this.Hkv, D: this.D, dtype: this.dtype, blockSize: this.blockSize, W: this.kconvWidth, maxSequences: this.maxSequences } = opts);
    this.#refs = new Int32Array(opts.pages);
    this.#free = Array.from({ length: opts.pages }, (_, i) => opts.pages - 1 - i); // pops page 0 first
    this.#slots = Array.from({ length: opts.maxSequences }, (_, i) => opts.maxSequences - 1 - i);
  }

  // ---------------------------------------------------------------- stages

  /** Writes the convolved keys, values, page sums and centroids of the new tokens (plan checked, pages allocated). */
  protected abstract doAppend(plan: AppendPlan, k: TData, v: TData): Promise<void>;
  protected abstract doAttend(plan: AttendPlan, q: TData): Promise<{ out: TData; lse: TData }>;
  /** Copies the kconv state of slot `src` to `dst` and, when the sequence has an open page, that page. */
  protected abstract doFork(src: number, dst: number, copy: PageCopy | null): Promise<void>;
  protected abstract doRead(slot: number, length: number, pages: Int32Array): Promise<CacheContents>;
  protected abstract doDestroy(): Promise<void>;
  /** Bytes besides the pool (centroids, sums, state). */
  protected abstract metaBytes(): number;

  // ---------------------------------------------------------------- the contract

  newSequence(): number {
    this.#alive();
    const slot = this.#slots.pop();
    if (slot === undefined) throw new MobaError('E_MEMORY', `all ${this.maxSequences} sequences are in use (maxSequences): free one first`, 'maxSequences');
    const id = this.#nextId++;
    this.#seqs.set(id, { slot, length: 0, pages: [], table: null });
    return id;
  }

  length(seq: number): number {
    return this.#seq('seq', seq).length;
  }

  sequenceIds(): number[] {
    this.#alive();
    return [...this.#seqs.keys()].sort((a, b) => a - b);
  }

  append(seqs: readonly number[], k: DeviceTensor, v: DeviceTensor, cuSeqlens: Int32Array): Promise<void> {
    return this.#serial(async () => {
      const list = this.#seqList(seqs);
      const kd = this.host.tensor('k', k);
      const vd = this.host.tensor('v', v);
      const T = this.#checkKv('k', k);
      if (this.#checkKv('v', v) !== T) throw new MobaError('E_SHAPE', `v.shape = ${shapeStr(v.shape)} must equal k.shape = ${shapeStr(k.shape)}`, 'v.shape');
      const cu = checkCuSeqlens('cuSeqlens', cuSeqlens, T, 'T (the rows of k)');
      if (cu.length !== list.length + 1) throw new MobaError('E_SHAPE', `cuSeqlens has length ${cu.length}: must be seqs.length + 1 = ${list.length + 1}`, 'cuSeqlens');
      const B = this.blockSize;
      let need = 0;
      for (let b = 0; b < list.length; b++) {
        const s = list[b]!;
        need += Math.ceil((s.length + cu[b + 1]! - cu[b]!) / B) - s.pages.length;
      }
      if (need > this.#free.length) {
        throw new MobaError('E_MEMORY', `append needs ${need} new pages of ${B} tokens but ${this.#free.length} of ${this.opts.pages} are free: free or shorten sequences, or create a larger cache`, 'capacity');
      }
      const before = list.map((s) => ({ length: s.length, pages: s.pages.length }));
      const entries: AppendEntry[] = list.map((s, b) => {
        const count = cu[b + 1]! - cu[b]!;
        while (s.pages.length * B < s.length + count) {
          s.pages.push(this.#take());
          s.table = null;
        }
        return { slot: s.slot, row: cu[b]!, count, pos0: s.length, pages: pageTable(s) };
      });
      try {
        await this.doAppend({ T, entries }, kd, vd);
      } catch (e) {
        list.forEach((s, b) => { // the stage failed (device lost?): give the new pages back
          for (const p of s.pages.splice(before[b]!.pages)) this.#release(p);
          s.table = null;
          s.length = before[b]!.length;
        });
        throw e;
      }
      list.forEach((s, b) => (s.length += cu[b + 1]! - cu[b]!));
    });
  }

  attend(seqs: readonly number[], q: DeviceTensor, cuSeqlensQ: Int32Array, cfg: CacheAttendConfig): Promise<ForwardResult> {
    return this.#serial(async () => {
      const list = this.#seqList(seqs);
      const qd = this.host.tensor('q', q);
      if (!q || !Array.isArray(q.shape) || q.shape.length !== 3 || q.shape[2] !== this.D || !(q.shape[0]! >= 1) || !(q.shape[1]! >= 1)) {
        throw new MobaError('E_SHAPE', `q.shape = ${q && Array.isArray(q.shape) ? shapeStr(q.shape) : String(q)} is invalid: must be [Tq, Hq, D = ${this.D}]`, 'q.shape');
      }
      const [Tq, Hq] = q.shape as [number, number, number];
      if (Hq % this.Hkv !== 0) throw new MobaError('E_SHAPE', `Hq = ${Hq} is not a multiple of the cache's Hkv = ${this.Hkv}`, 'q.shape');
      if (q.dtype !== this.dtype) throw new MobaError('E_DTYPE', `q.dtype = ${q.dtype} is invalid: must be the cache's dtype ${this.dtype}`, 'q.dtype');
      const cu = checkCuSeqlens('cuSeqlensQ', cuSeqlensQ, Tq, 'Tq (the rows of q)');
      if (cu.length !== list.length + 1) throw new MobaError('E_SHAPE', `cuSeqlensQ has length ${cu.length}: must be seqs.length + 1 = ${list.length + 1}`, 'cuSeqlensQ');
      if (cfg === null || typeof cfg !== 'object') throw new MobaError('E_RANGE', 'config must be an object { topk, causal?, scale? }', 'config');
      checkKeys(cfg, ['topk', 'causal', 'scale', 'blockSize'], 'config key');
      if (cfg.blockSize !== undefined && cfg.blockSize !== this.blockSize) {
        throw new MobaError('E_RANGE', `blockSize = ${String(cfg.blockSize)} is invalid: the cache's pages hold ${this.blockSize} tokens`, 'blockSize');
      }
      const caps = this.host.caps;
      const capTopk = caps.maxCacheTopk ?? caps.maxTopk;
      const rc = resolveConfig({ ...cfg, blockSize: this.blockSize }, this.D, { maxTopk: caps.cacheDense ? undefined : capTopk, maxBlockSize: caps.maxBlockSize });
      if (!rc.causal && !caps.nonCausal) throw new MobaError('E_UNSUPPORTED', 'causal = false is not supported by this backend (caps.nonCausal is false)', 'causal');
      const entries: AttendEntry[] = list.map((s, b) => {
        const nq = cu[b + 1]! - cu[b]!;
        if (nq > s.length) throw new MobaError('E_RANGE', `sequence ${seqs[b]} holds ${s.length} tokens but has ${nq} queries (cuSeqlensQ): append them first (nq <= length)`, 'cuSeqlensQ');
        return { slot: s.slot, length: s.length, qRow: cu[b]!, nq, pages: pageTable(s) };
      });
      const topk = attendTopk(rc.topk, entries, this.blockSize, capTopk);
      const res = await this.doAttend({ Tq, Hq, topk, causal: rc.causal, scale: rc.scale, entries }, qd);
      return { out: this.host.wrap(this.dtype, [Tq, Hq, this.D], res.out), lse: this.host.wrap('f32', [Tq, Hq], res.lse) };
    });
  }

  fork(seq: number): Promise<number> {
    return this.#serial(async () => {
      const s = this.#seq('seq', seq);
      const open = s.length % this.blockSize !== 0;
      if (open && this.#free.length === 0) throw new MobaError('E_MEMORY', `fork needs one free page for the open block but the pool's ${this.opts.pages} pages are in use`, 'capacity');
      const id = this.newSequence();
      const t = this.#seqs.get(id)!;
      const shared = open ? s.pages.slice(0, -1) : s.pages.slice();
      const copy = open ? { src: s.pages[s.pages.length - 1]!, dst: this.#take(), tokens: s.length % this.blockSize } : null;
      for (const p of shared) this.#refs[p]!++;
      t.pages = copy ? [...shared, copy.dst] : shared;
      t.table = null;
      try {
        await this.doFork(s.slot, t.slot, copy);
      } catch (e) {
        this.free(id);
        throw e;
      }
      t.length = s.length;
      return id;
    });
  }

  free(seq: number): void {
    const s = this.#seq('seq', seq);
    for (const p of s.pages) this.#release(p);
    this.#seqs.delete(seq);
    this.#slots.push(s.slot);
  }

  read(seq: number): Promise<CacheContents> {
    return this.#serial(async () => {
      const s = this.#seq('seq', seq);
      return this.doRead(s.slot, s.length, pageTable(s));
    });
  }

  memoryStats(): CacheStats {
    const pages = this.#destroyed ? 0 : this.opts.pages;
    let used = 0;
    let shared = 0;
    for (let p = 0; p < pages; p++) {
      if (this.#refs[p]! > 0) used++;
      if (this.#refs[p]! > 1) shared++;
    }
    let tokens = 0;
    for (const s of this.#seqs.values()) tokens += s.length;
    return {
      pages, pageBytes: this.opts.pageBytes, poolBytes: pages * this.opts.pageBytes, usedPages: used, sharedPages: shared,
      freePages: pages - used, sequences: this.#seqs.size, tokens, metaBytes: this.#destroyed ? 0 : this.metaBytes(),
    };
  }

  async destroy(): Promise<void> {
    if (this.#destroyed) return;
    this.#destroyed = true;
    await this.#queue.catch(() => {});
    this.#seqs.clear();
    await this.doDestroy();
  }

  // ---------------------------------------------------------------- bookkeeping

  #alive(): void {
    if (this.#destroyed) throw new MobaError('E_DEVICE', 'the KV cache was destroyed: create a new one', 'cache');
  }

  /** One call at a time: each waits for the previous one (failed or not). */
  #serial<R>(f: () => Promise<R>): Promise<R> {
    const run = this.#queue.catch(() => {}).then(() => {
      this.#alive();
      return f();
    });
    this.#queue = run;
    return run;
  }

  #seq(param: string, id: unknown): Seq {
    this.#alive();
    const s = typeof id === 'number' ? this.#seqs.get(id) : undefined;
    if (!s) throw new MobaError('E_RANGE', `${param} = ${String(id)} is not a live sequence of this cache (live: ${this.#idList()})`, param);
    return s;
  }

  #idList(): string {
    const ids = [...this.#seqs.keys()];
    return ids.length === 0 ? 'none; create one with newSequence()' : ids.length > 8 ? `${ids.slice(0, 8).join(', ')}, …` : ids.join(', ');
  }

  #seqList(seqs: readonly number[]): Seq[] {
    if (!Array.isArray(seqs) || seqs.length === 0) throw new MobaError('E_SHAPE', 'seqs must be a non-empty array of sequence ids', 'seqs');
    const seen = new Set<number>();
    return seqs.map((id, i) => {
      if (seen.has(id)) throw new MobaError('E_RANGE', `seqs[${i}] = ${id} appears twice: each sequence at most once per call`, 'seqs');
      seen.add(id);
      return this.#seq(`seqs[${i}]`, id);
    });
  }

  #checkKv(param: string, t: DeviceTensor): number {
    const s = t.shape;
    if (s.length !== 3 || s[1] !== this.Hkv || s[2] !== this.D || !(s[0]! >= 1)) {
      throw new MobaError('E_SHAPE', `${param}.shape = ${shapeStr(s)} is invalid: must be [T, Hkv = ${this.Hkv}, D = ${this.D}]`, `${param}.shape`);
    }
    if (t.dtype !== this.dtype) throw new MobaError('E_DTYPE', `${param}.dtype = ${t.dtype} is invalid: must be the cache's dtype ${this.dtype}`, `${param}.dtype`);
    return s[0]!;
  }

  #take(): number {
    const p = this.#free.pop()!;
    this.#refs[p] = 1;
    return p;
  }

  #release(p: number): void {
    if (--this.#refs[p]! === 0) this.#free.push(p);
  }
}

/**
 * A sequence's page table as an Int32Array, kept until its pages change: a decode step at 512K × 16 sequences
 * would otherwise copy 65 536 page ids per append and per attend (~0.2 ms of host time).
 */
function pageTable(s: Seq): Int32Array {
  return (s.table ??= Int32Array.from(s.pages));
}
