/**
 * The WebGPU paged KV cache (SPEC §9): core's CacheShell does the ids, the page pool, refcounts, validation and
 * E_MEMORY; this file owns the device storage, all allocated at creation:
 *   key pages and value pages `[pages, B, RS]` in the cache's dtype (keys after kconv; cache-plan.ts), each pool
 *   spread over buffers within the binding limit, bound MAX_POOL_BUFFERS at most per dispatch (cache-pool.wgsl.ts),
 *   meta `[pages, 2, C]` f32 (each page's sum and, once it is full, its centroid sum / B),
 *   kst: the f32 kconv weight `[C, W]` then the state `[maxSequences, W − 1, C]` (the last raw keys).
 * append = 2 launches per group of pool buffers (cache-append.wgsl.ts), attend = 2 + one per group (3 for one
 * buffer) whatever the batch (routing over the centroids with the exact top-k in one launch: cache-route.wgsl.ts;
 * attention split per selected block: cache-attend.wgsl.ts; merge: cache-merge.wgsl.ts), fork = buffer copies,
 * read = one download of the sequence's pages.
 */
/// <reference types="@webgpu/types" />
import {
  type AppendPlan, type AttendPlan, type CacheContents, type CacheHost, type KVCache, type KVCacheOptions, type PageCopy,
  type ResolvedCacheOptions, CacheShell, MobaError, hostTensor, resolveCacheOptions, toFloat32,
} from '@moba/core';
import { cacheAppendWgsl } from './cache-append.wgsl.js';
import { MAX_D, attendVec4, cacheAttendWgsl } from './cache-attend.wgsl.js';
import { ROUTE_HEADS, cacheRouteWgsl, routeList } from './cache-route.wgsl.js';
import { cacheMergeWgsl } from './cache-merge.wgsl.js';
import { type PageGeometry, type PoolLayout, appendTable, attendTable, cachePageBytes, decodeContents, pageGeometry, poolLayout } from './cache-plan.js';
import type { GpuContext } from './device.js';
import { Launch, shaderVariant } from './launch.js';
import { storageBytes } from './storage.wgsl.js';

const WG = 64;

/**
 * Tests only: MOBA_WEBGPU_CACHE_POOL_BUFFERS spreads even a small pool over that many buffers (the multi-buffer
 * path), MOBA_WEBGPU_CACHE_GROUP_BUFFERS binds at most that many per dispatch (groups); MOBA_WEBGPU_CACHE_ATTEND_WORDS = 1
 * (read at each attend) makes the attend read key pages in 4-byte words even where vec4 loads apply;
 * MOBA_WEBGPU_CACHE_ATTEND_LATE_V=1 reads each chunk's values after its scores (the bench's comparison).
 */
function testSetting(name: string): number | undefined {
  const v = (globalThis as { process?: { env?: Record<string, string | undefined> } }).process?.env?.[name];
  return v ? Number(v) : undefined;
}

/** Opens a cache on the backend's device: options checked (core), storage sized and allocated. */
export async function openCache(ctx: GpuContext, host: CacheHost<GPUBuffer>, opts: KVCacheOptions): Promise<KVCache> {
  const o = resolveCacheOptions(host.caps, opts, cachePageBytes);
  if (o.D > MAX_D) throw new MobaError('E_UNSUPPORTED', `head dim D = ${o.D} is not supported by the WebGPU KV cache: allowed 1..${MAX_D}`, 'D');
  let w: Float32Array | null = null;
  if (opts.kconvWeight !== undefined) {
    const t = opts.kconvWeight;
    const buf = host.tensor('kconvWeight', t);
    const n = t.shape[0]! * t.shape[1]!;
    const raw = await ctx.buffers.read(buf, t.dtype === 'f32' ? 4 * n : 2 * n);
    w = toFloat32(hostTensor(t.dtype, t.shape, t.dtype === 'f32' ? new Float32Array(raw) : new Uint16Array(raw)));
  }
  return new WebGpuCache(ctx, host, o, w);
}

export class WebGpuCache extends CacheShell<GPUBuffer> {
  readonly #ctx: GpuContext;
  readonly #g: PageGeometry;
  readonly #pool: PoolLayout;
  /** Key and value page buffers: page p in buffer floor(p / ppb). */
  readonly #k: GPUBuffer[];
  readonly #v: GPUBuffer[];
  readonly #meta: GPUBuffer;
  readonly #kst: GPUBuffer;
  /** Word offset of the state in kst (after the weight). */
  readonly #stateOff: number;

  constructor(ctx: GpuContext, host: CacheHost<GPUBuffer>, o: ResolvedCacheOptions, w: Float32Array | null) {
    super(host, o);
    this.#ctx = ctx;
    const g = (this.#g = pageGeometry(o));
    const W = o.W;
    this.#stateOff = W * g.C;
    const kstBytes = 4 * (W * g.C + o.maxSequences * Math.max(0, W - 1) * g.C);
    const pool = (this.#pool = poolLayout(ctx.limits, g.kvBytes, o.pages, testSetting('MOBA_WEBGPU_CACHE_POOL_BUFFERS'), testSetting('MOBA_WEBGPU_CACHE_GROUP_BUFFERS')));
    ctx.checkSizes({ 'cache sums and centroids': o.pages * g.metaBytes, 'cache kconv state': kstBytes });
    const made: GPUBuffer[] = [];
    try {
      const buf = (label: string, bytes: number): GPUBuffer => {
        const b = ctx.buffers.buffer(label, bytes);
        made.push(b);
        return b;
      };
      const pages = (i: number): number => Math.min(pool.ppb, o.pages - i * pool.ppb) * g.kvBytes;
      this.#k = Array.from({ length: pool.n }, (_, i) => buf(`cache key pages ${i}`, pages(i)));
      this.#v = Array.from({ length: pool.n }, (_, i) => buf(`cache value pages ${i}`, pages(i)));
      this.#meta = buf('cache sums and centroids', o.pages * g.metaBytes);
      this.#kst = buf('cache kconv weight and state', kstBytes);
    } catch (e) {
      ctx.buffers.free(...made);
      throw e;
    }
    if (w) ctx.device.queue.writeBuffer(this.#kst, 0, w.buffer, w.byteOffset, w.byteLength);
  }

  protected async doAppend(plan: AppendPlan, k: GPUBuffer, v: GPUBuffer): Promise<void> {
    const g = this.#g;
    const { words, tasks } = appendTable(plan, g, this.#stateOff, this.#pool.ppb);
    const l = new Launch(this.#ctx);
    const tab = l.tempData('cache append table', words);
    const base = { T: plan.T, Hkv: g.Hkv, D: g.D, blockSize: g.B, width: this.kconvWidth };
    const writes = plan.T * Math.ceil(g.C / 2);
    const finish = (tasks + plan.entries.length) * g.C;
    for (const pass of ['write', 'finish'] as const) {
      for (const { first, n } of this.#groups()) { // all writes before the sums read them
        const pools = Array<'rw'>(2 * n).fill('rw');
        const shader = shaderVariant(`moba.cache.append.${g.dtype}.${n}`, ['uniform', 'read', 'read', 'read', 'rw', 'rw', ...pools], () => cacheAppendWgsl(g.dtype, n));
        const bufs = [tab, k, v, this.#meta, this.#kst, ...this.#k.slice(first, first + n), ...this.#v.slice(first, first + n)];
        const items = pass === 'write' ? writes : finish;
        l.add(shader, pass, { WG }, { ...base, nItems: items, mode: first }, bufs, Math.ceil(items / WG));
      }
    }
    await l.submit('cache append');
  }

  protected async doAttend(plan: AttendPlan, q: GPUBuffer): Promise<{ out: GPUBuffer; lse: GPUBuffer }> {
    const t0 = performance.now();
    const g = this.#g;
    const { Tq, Hq, topk } = plan;
    const chunks = Math.ceil(Hq / g.Hkv / ROUTE_HEADS);
    const bytes = {
      'cache attend selection': 4 * Tq * Hq * topk, 'cache attend partials': 4 * Tq * Hq * topk * (g.D + 2),
      out: storageBytes(Tq * Hq * g.D, g.dtype), lse: 4 * Tq * Hq,
    };
    this.#ctx.checkSizes(bytes);
    const l = new Launch(this.#ctx);
    const tab = l.tempData('cache attend table', attendTable(plan, g, chunks, this.#pool.ppb));
    const sel = l.temp('cache attend selection', bytes['cache attend selection']);
    const part = l.temp('cache attend partials', bytes['cache attend partials']);
    const out = l.temp('out', bytes.out);
    const lse = l.temp('lse', bytes.lse);
    const merge = shaderVariant(`moba.cache.merge.${g.dtype}`, ['uniform', 'read', 'rw', 'rw'], () => cacheMergeWgsl(g.dtype));
    const f = { T: Tq, Hq, Hkv: g.Hkv, D: g.D, blockSize: g.B, topk, causal: plan.causal, scale: plan.scale };
    const K = routeList(plan.causal ? topk - 1 : topk);
    const route = shaderVariant(`moba.cache.route.${g.dtype}.d${g.D}.k${K}`, ['uniform', 'read', 'read', 'read', 'rw'], () => cacheRouteWgsl(g.dtype, g.D, K));
    const routes = Tq * g.Hkv * chunks;
    l.add(route, 'route', {}, { ...f, nItems: routes }, [tab, q, this.#meta, sel], routes);
    const slots = Tq * Hq * topk;
    for (const { first, n } of this.#groups()) { // the slots of each group's pages
      const pools = Array<'read'>(2 * n).fill('read');
      const v4 = attendVec4(g.dtype, g.RS, g.D) && !testSetting('MOBA_WEBGPU_CACHE_ATTEND_WORDS');
      const early = testSetting('MOBA_WEBGPU_CACHE_ATTEND_LATE_V') !== 1;
      const name = `moba.cache.attend.${g.dtype}.d${g.D}.${n}${v4 ? '.v4' : ''}${early ? '.ev' : ''}`;
      const attend = shaderVariant(name, ['uniform', 'read', 'read', 'read', 'rw', 'rw', ...pools], () => cacheAttendWgsl(g.dtype, n, g.D, v4, early));
      const bufs = [tab, q, this.#meta, sel, part, ...this.#k.slice(first, first + n), ...this.#v.slice(first, first + n)];
      l.add(attend, 'attend', {}, { ...f, nItems: slots, mode: first }, bufs, slots);
    }
    const elems = Tq * Hq * g.D;
    l.add(merge, 'merge', { WG }, { ...f, nItems: elems }, [part, out, lse], Math.ceil(elems / WG));
    l.keep(out, lse);
    this.#ctx.addHost('cache attend prepare', performance.now() - t0);
    try {
      await l.submit('cache attend');
    } catch (e) {
      l.discard(out, lse);
      throw e;
    }
    return { out, lse };
  }

  protected async doFork(src: number, dst: number, copy: PageCopy | null): Promise<void> {
    const g = this.#g;
    const S = Math.max(0, this.kconvWidth - 1) * g.C * 4;
    const so = 4 * this.#stateOff;
    // [from buffer, offset, to buffer, offset, bytes]: all through a staging buffer (WebGPU refuses a copy within one)
    const moves: [GPUBuffer, number, GPUBuffer, number, number][] = [];
    if (S > 0) moves.push([this.#kst, so + src * S, this.#kst, so + dst * S, S]);
    if (copy) {
      const n = copy.tokens * (g.kvBytes / g.B);
      for (const pool of [this.#k, this.#v]) moves.push([...this.#page(pool, copy.src), ...this.#page(pool, copy.dst), n]);
      moves.push([this.#meta, copy.src * g.metaBytes, this.#meta, copy.dst * g.metaBytes, g.C * 4]); // the open page's sum
    }
    const total = moves.reduce((a, m) => a + m[4], 0);
    if (total === 0) return;
    const tmp = this.#ctx.buffers.buffer('cache fork staging', total);
    try {
      const enc = this.#ctx.device.createCommandEncoder({ label: 'cache fork' });
      let at = 0;
      for (const [b, from, , , n] of moves) { enc.copyBufferToBuffer(b, from, tmp, at, n); at += n; }
      at = 0;
      for (const [, , b, to, n] of moves) { enc.copyBufferToBuffer(tmp, at, b, to, n); at += n; }
      await this.#submit('cache fork', enc);
    } finally {
      this.#ctx.buffers.free(tmp);
    }
  }

  protected async doRead(slot: number, length: number, pages: Int32Array): Promise<CacheContents> {
    const g = this.#g;
    const n = pages.length;
    const S = Math.max(0, this.kconvWidth - 1) * g.C * 4;
    const total = 2 * n * g.kvBytes + n * g.metaBytes + S;
    this.#ctx.checkSizes({ 'cache read staging': total });
    const tmp = this.#ctx.buffers.buffer('cache read staging', total);
    try {
      const enc = this.#ctx.device.createCommandEncoder({ label: 'cache read' });
      pages.forEach((p, i) => {
        enc.copyBufferToBuffer(...this.#page(this.#k, p), tmp, i * g.kvBytes, g.kvBytes);
        enc.copyBufferToBuffer(...this.#page(this.#v, p), tmp, (n + i) * g.kvBytes, g.kvBytes);
        enc.copyBufferToBuffer(this.#meta, p * g.metaBytes, tmp, 2 * n * g.kvBytes + i * g.metaBytes, g.metaBytes);
      });
      if (S > 0) enc.copyBufferToBuffer(this.#kst, 4 * this.#stateOff + slot * S, tmp, total - S, S);
      await this.#submit('cache read', enc);
      const raw = await this.#ctx.buffers.read(tmp, Math.max(4, total));
      return decodeContents(raw, g, length, pages, this.kconvWidth);
    } finally {
      this.#ctx.buffers.free(tmp);
    }
  }

  protected async doDestroy(): Promise<void> {
    this.#ctx.buffers.free(...this.#k, ...this.#v, this.#meta, this.#kst);
  }

  protected metaBytes(): number {
    return this.#kst.size; // the kconv weight and state; sums and centroids are counted in pageBytes
  }

  /** The groups of pool buffers a dispatch binds: the first buffer and the count. */
  #groups(): { first: number; n: number }[] {
    const { n, per } = this.#pool;
    return Array.from({ length: Math.ceil(n / per) }, (_, i) => ({ first: i * per, n: Math.min(per, n - i * per) }));
  }

  /** The buffer of page p in a pool and the page's byte offset there. */
  #page(pool: readonly GPUBuffer[], p: number): [GPUBuffer, number] {
    const b = Math.floor(p / this.#pool.ppb);
    return [pool[b]!, (p - b * this.#pool.ppb) * this.#g.kvBytes];
  }

  /** Submits copies inside error scopes (validation errors become E_DEVICE). */
  async #submit(label: string, enc: GPUCommandEncoder): Promise<void> {
    const dev = this.#ctx.device;
    this.#ctx.checkAlive();
    dev.pushErrorScope('validation');
    dev.queue.submit([enc.finish()]);
    const err = await dev.popErrorScope();
    if (err) throw new MobaError('E_DEVICE', `WebGPU error in ${label}: ${err.message}`, 'device');
  }
}
