/**
 * The CUDA backend's paged KV cache (SPEC §9; kernels in cache.cu). Storage, all allocated at creation: key
 * pages (after kconv) and value pages `[pages, B, Hkv·D]` in the cache dtype, an f32 sum and an f32 centroid
 * per page `[pages, Hkv·D]`, the kconv state `[maxSequences, W−1, Hkv·D]` f32 and the weight `[Hkv·D, W]` f32.
 * append: 2 launches (cache_append_kv, cache_append_sum); attend: 2 launches whatever the batch (cache_route;
 * cache_attend, whose last CTA per (row, head) merges the slots), or 1 for short sequences (cache_fused; cacheFused()
 * chooses, MOBA_CUDA_CACHE_FUSED=0/1 forces); fork: device copies; read: downloads. CacheShell (core) does the ids, the page
 * pool, reference counts, validation and E_MEMORY; every stage synchronises before it returns.
 */
import {
  type AppendPlan, type AttendPlan, type CacheContents, type CacheHost, CacheShell, type DType, type KVCacheOptions, MobaError,
  type PageCopy, type ResolvedCacheOptions, bf16ToF32, dtypeBytes, f16ToF32, hostTensor, resolveCacheOptions,
} from '@moba/core';
import type { Buf } from './allocator.js';
import {
  type AttendTables, appendTables, attendBytes, attendTables, cacheAppendLaunch, cacheAttendLaunch, cacheFused, cacheFusedLaunch, cachePageBytes, cacheRouteLaunch,
  cacheStateBytes, routeWarpsPerHead,
} from './cache-tables.js';
import { DT } from './kernels.js';
import { f32, i32, i64, ptr } from './params.js';
import type { Cuda } from './shared.js';

interface Storage {
  readonly k: Buf;
  readonly v: Buf;
  readonly sums: Buf;
  readonly cents: Buf;
  readonly state: Buf;
  readonly weight: Buf;
}

/** Checks the options, allocates the storage and returns the cache (E_MEMORY before allocating when it does not fit). */
export function createCudaCache(c: Cuda, host: CacheHost<Buf>, opts: KVCacheOptions): CudaCache {
  const o = resolveCacheOptions(host.caps, opts, cachePageBytes);
  const C = o.Hkv * o.D;
  const eb = dtypeBytes(o.dtype);
  const { state, weight } = cacheStateBytes(o.maxSequences, o.W, C);
  const w = o.W > 0 ? weightF32(c, host.tensor('kconvWeight', opts.kconvWeight), opts.kconvWeight!.dtype, C * o.W) : null;
  c.mem.fits('createCache()', o.pages * o.pageBytes + state + weight);
  const bufs: Buf[] = [];
  const alloc = (bytes: number): Buf => {
    const b = c.mem.alloc(Math.max(bytes, 16));
    bufs.push(b);
    return b;
  };
  try {
    const s: Storage = {
      k: alloc(o.pages * o.blockSize * C * eb), v: alloc(o.pages * o.blockSize * C * eb), sums: alloc(o.pages * C * 4), cents: alloc(o.pages * C * 4),
      state: alloc(state), weight: alloc(weight),
    };
    c.drv.memsetD8(s.state.ptr, 0, state);
    if (w) c.drv.copyHtoD(s.weight.ptr, w);
    c.drv.synchronize();
    return new CudaCache(host, o, c, s);
  } catch (e) {
    for (const b of bufs) c.mem.release(b);
    throw e;
  }
}

/** The kconv weight's values in f32 (any storage dtype: its values are exact in f32). */
function weightF32(c: Cuda, b: Buf, dtype: DType, n: number): Float32Array {
  if (dtype === 'f32') {
    const out = new Float32Array(n);
    c.drv.copyDtoH(out, b.ptr, n * 4);
    return out;
  }
  const bits = new Uint16Array(n);
  c.drv.copyDtoH(bits, b.ptr, n * 2);
  return Float32Array.from(bits, (x) => (dtype === 'bf16' ? bf16ToF32(x) : f16ToF32(x)));
}

export class CudaCache extends CacheShell<Buf> {
  readonly #c: Cuda;
  readonly #s: Storage;
  readonly #C: number;
  readonly #eb: number;
  #cnt: Buf | null = null;
  /** The last attend's concatenated page tables on the device, and the shell's table objects they came from. */
  #pt: { key: readonly Int32Array[]; buf: Buf } | null = null;
  #freed = false;

  constructor(host: CacheHost<Buf>, o: ResolvedCacheOptions, c: Cuda, s: Storage) {
    super(host, o);
    this.#c = c;
    this.#s = s;
    this.#C = o.Hkv * o.D;
    this.#eb = dtypeBytes(o.dtype);
  }

  /** Bytes of one page row (a token's keys or values). */
  get #rowBytes(): number {
    return this.#C * this.#eb;
  }

  protected async doAppend(plan: AppendPlan, k: Buf, v: Buf): Promise<void> {
    const c = this.#c;
    const B = this.blockSize, C = this.#C, W = this.kconvWidth;
    const tb = appendTables(plan, B);
    c.mem.fits('cache append()', (tb.cu.length + tb.ent.length + tb.ptab.length + tb.work.length) * 4);
    const sfx = DT[this.dtype].suffix;
    const cu = ptr(c.mem.small('cacheCu', tb.cu));
    const ent = ptr(c.mem.small('cacheEnt', tb.ent));
    const s = this.#s;
    c.prog.launch('cache.cu', `cache_append_kv_${sfx}`, cacheAppendLaunch('cache_append_kv', plan.T * C), {
      k: ptr(k.ptr), v: ptr(v.ptr), w: ptr(s.weight.ptr), state: ptr(s.state.ptr), kpool: ptr(s.k.ptr), vpool: ptr(s.v.ptr), cu, ent,
      ptab: ptr(c.mem.small('cachePtab', tb.ptab)), nent: i32(tb.nent), T_: i64(plan.T), C: i32(C), W: i32(W), B: i32(B),
    });
    const nstate = W > 1 ? tb.nent : 0;
    c.prog.launch('cache.cu', `cache_append_sum_${sfx}`, cacheAppendLaunch('cache_append_sum', (tb.nwork + nstate) * C), {
      k: ptr(k.ptr), kpool: ptr(s.k.ptr), sums: ptr(s.sums.ptr), cents: ptr(s.cents.ptr), state: ptr(s.state.ptr), cu, ent,
      work: ptr(c.mem.small('cacheWork', tb.work)), nwork: i32(tb.nwork), nstate: i32(nstate), C: i32(C), W: i32(W), B: i32(B),
    });
    c.drv.synchronize();
  }

  protected async doAttend(plan: AttendPlan, q: Buf): Promise<{ out: Buf; lse: Buf }> {
    const c = this.#c;
    const { Tq, Hq, topk } = plan;
    const D = this.D, B = this.blockSize, Hkv = this.Hkv;
    const tb = attendTables(plan, B);
    const route = cacheRouteLaunch(Tq, Hq, Hkv, D, topk, tb.maxBlocks, c.sms, routeSplitOverride());
    const at = cacheAttendLaunch(Tq, Hq, D, topk, this.dtype, B);
    const cntBytes = (route.counters + Tq * Hq) * 4; // the router's, then cache_attend's (per (row, head))
    const grow = this.#cnt !== null && this.#cnt.bytes >= cntBytes ? 0 : cntBytes;
    c.mem.fits('cache attend()', attendBytes(Tq, Hq, D, topk, this.dtype, tb.rows.length + tb.pageInts, route.plistBytes, at.nsub) + grow);
    const sfx = DT[this.dtype].suffix;
    const rows = ptr(c.mem.small('cacheAttendRows', tb.rows));
    const ptab = ptr(this.#pageTables(plan.entries, tb));
    const sel = ptr(c.mem.slot('cacheSel', Tq * Hq * topk * 4).ptr);
    const part = ptr(c.mem.slot('cachePart', Tq * Hq * topk * at.nsub * (D + 2) * 4).ptr);
    const plist = route.plistBytes > 0 ? ptr(c.mem.slot('cachePlist', route.plistBytes).ptr) : sel;
    const cnt = this.#counters(cntBytes);
    const out = c.mem.alloc(Tq * Hq * D * this.#eb);
    const lse = c.mem.alloc(Tq * Hq * 4);
    const s = this.#s;
    const shape = { Hq: i32(Hq), Hkv: i32(Hkv), D: i32(D), B: i32(B), topk: i32(topk), causal: i32(plan.causal ? 1 : 0) };
    try {
      if (cacheFused(Tq, Hq, D, topk, tb.maxBlocks, at.nsub, process.env.MOBA_CUDA_CACHE_FUSED ?? null)) { // one launch (cache-fused.cuh)
        c.prog.launch('cache.cu', `cache_fused_${sfx}`, cacheFusedLaunch(at), {
          q: ptr(q.ptr), cents: ptr(s.cents.ptr), sums: ptr(s.sums.ptr), kpool: ptr(s.k.ptr), vpool: ptr(s.v.ptr), rows, ptab, part,
          cnt: ptr(cnt + BigInt(route.counters * 4)), out: ptr(out.ptr), lse: ptr(lse.ptr), ...shape, scale: f32(plan.scale), vec: i32(at.vec),
          sb: i32(at.sb), nsub: i32(at.nsub), wph: i32(routeWarpsPerHead(Hq / Hkv)),
        });
        c.drv.synchronize();
        return { out, lse };
      }
      c.prog.launch('cache.cu', `cache_route_${sfx}`, route, {
        q: ptr(q.ptr), cents: ptr(s.cents.ptr), sums: ptr(s.sums.ptr), rows, ptab, sel, plist, cnt: ptr(cnt), ...shape,
        hpc: i32(route.hpc), tps: i32(route.tps), nbuf: i32(route.nbuf),
      });
      c.prog.launch('cache.cu', `cache_attend_${sfx}`, at, {
        q: ptr(q.ptr), kpool: ptr(s.k.ptr), vpool: ptr(s.v.ptr), rows, ptab, sel, part, cnt: ptr(cnt + BigInt(route.counters * 4)),
        out: ptr(out.ptr), lse: ptr(lse.ptr), ...shape, scale: f32(plan.scale), vec: i32(at.vec), sb: i32(at.sb), nsub: i32(at.nsub),
      });
      c.drv.synchronize();
    } catch (e) {
      c.mem.release(out);
      c.mem.release(lse);
      throw e;
    }
    return { out, lse };
  }

  /**
   * The entries' page tables on the device: uploaded only when they differ from the last attend's (the shell keeps a
   * sequence's table object until its pages change, so decode steps mostly reuse them: 256 KiB at 512K × 16).
   */
  #pageTables(entries: readonly { readonly pages: Int32Array }[], tb: AttendTables): bigint {
    const c = this.#c, pt = this.#pt;
    if (pt && pt.key.length === entries.length && entries.every((e, i) => e.pages === pt.key[i])) return pt.buf.ptr;
    const host = tb.pages();
    let buf = pt?.buf ?? null;
    this.#pt = null;
    if (buf === null || buf.bytes < host.byteLength) {
      if (buf) c.mem.release(buf);
      buf = c.mem.alloc(Math.max(1024, 2 * host.byteLength)); // room to grow by pages without a new buffer
    }
    c.drv.copyHtoD(buf.ptr, host);
    this.#pt = { key: entries.map((e) => e.pages), buf };
    return buf.ptr;
  }

  /** The router's arrival counters (zeroed once; every launch leaves them zero), grown to `bytes`. */
  #counters(bytes: number): bigint {
    if (this.#cnt === null || this.#cnt.bytes < bytes) {
      if (this.#cnt) this.#c.mem.release(this.#cnt);
      this.#cnt = null;
      const b = this.#c.mem.alloc(Math.max(bytes, 256));
      this.#c.drv.memsetD8(b.ptr, 0, b.bytes);
      this.#cnt = b;
    }
    return this.#cnt.ptr;
  }

  protected async doFork(src: number, dst: number, copy: PageCopy | null): Promise<void> {
    const c = this.#c, s = this.#s, C = this.#C;
    if (copy) {
      const rb = this.#rowBytes, pb = this.blockSize * rb;
      c.drv.copyDtoD(s.k.ptr + BigInt(copy.dst * pb), s.k.ptr + BigInt(copy.src * pb), copy.tokens * rb);
      c.drv.copyDtoD(s.v.ptr + BigInt(copy.dst * pb), s.v.ptr + BigInt(copy.src * pb), copy.tokens * rb);
      c.drv.copyDtoD(s.sums.ptr + BigInt(copy.dst * C * 4), s.sums.ptr + BigInt(copy.src * C * 4), C * 4);
    }
    const sb = Math.max(0, this.kconvWidth - 1) * C * 4;
    if (sb > 0) c.drv.copyDtoD(s.state.ptr + BigInt(dst * sb), s.state.ptr + BigInt(src * sb), sb);
    c.drv.synchronize();
  }

  protected async doRead(slot: number, length: number, pages: Int32Array): Promise<CacheContents> {
    const c = this.#c, s = this.#s, C = this.#C, B = this.blockSize, W = this.kconvWidth;
    const rb = this.#rowBytes;
    const n = length * C;
    const k = this.dtype === 'f32' ? new Float32Array(n) : new Uint16Array(n);
    const v = this.dtype === 'f32' ? new Float32Array(n) : new Uint16Array(n);
    const full = Math.floor(length / B);
    const centroids = new Float32Array(full * C);
    for (let j = 0; j < pages.length; j++) {
      const tokens = Math.min(B, length - j * B);
      const off = BigInt(pages[j]! * B * rb);
      c.drv.copyDtoH(view(k, j * B * C, tokens * C), s.k.ptr + off, tokens * rb);
      c.drv.copyDtoH(view(v, j * B * C, tokens * C), s.v.ptr + off, tokens * rb);
      if (j < full) c.drv.copyDtoH(centroids.subarray(j * C, (j + 1) * C), s.cents.ptr + BigInt(pages[j]! * C * 4), C * 4);
    }
    const openCount = length % B;
    const openSum = new Float32Array(C);
    if (openCount > 0) c.drv.copyDtoH(openSum, s.sums.ptr + BigInt(pages[pages.length - 1]! * C * 4), C * 4);
    const R = Math.max(0, W - 1);
    const state = new Float32Array(R * C);
    if (R > 0) {
      c.drv.copyDtoH(state, s.state.ptr + BigInt(slot * R * C * 4), R * C * 4);
      for (let i = 0; i < R; i++) if (length - R + i < 0) state.fill(0, i * C, (i + 1) * C); // before the sequence start
    }
    const shape = [length, this.Hkv, this.D];
    return {
      length, k: hostTensor(this.dtype, shape, k), v: hostTensor(this.dtype, shape, v), centroids: hostTensor('f32', [full, this.Hkv, this.D], centroids),
      openSum: hostTensor('f32', [this.Hkv, this.D], openSum), openCount, kconvState: hostTensor('f32', [R, this.Hkv, this.D], state), pages,
    };
  }

  protected async doDestroy(): Promise<void> {
    if (this.#freed) return;
    this.#freed = true;
    for (const b of Object.values(this.#s)) this.#c.mem.release(b);
    if (this.#cnt) this.#c.mem.release(this.#cnt);
    this.#cnt = null;
    if (this.#pt) this.#c.mem.release(this.#pt.buf);
    this.#pt = null;
  }

  protected metaBytes(): number {
    const { state, weight } = cacheStateBytes(this.maxSequences, this.kconvWidth, this.#C);
    return Math.max(state, 16) + Math.max(weight, 16);
  }
}

/** MOBA_CUDA_ROUTE_SPLIT=<n>: the router's split count (1 = unsplit; for testing); null plans it. */
function routeSplitOverride(): number | null {
  const v = process.env.MOBA_CUDA_ROUTE_SPLIT;
  if (v === undefined || v === '') return null;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw new MobaError('E_RANGE', `MOBA_CUDA_ROUTE_SPLIT = ${v} is invalid: must be an integer >= 1`, 'MOBA_CUDA_ROUTE_SPLIT');
  return n;
}

function view(a: Float32Array | Uint16Array, start: number, len: number): Float32Array | Uint16Array {
  return a.subarray(start, start + len);
}
