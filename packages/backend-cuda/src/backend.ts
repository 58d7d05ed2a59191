/**
 * The CUDA backend object: device tensors are device allocations (f16/bf16 kept as 16-bit), routings
 * hold `indices [T, Hq, topk]` and the collected form (offsets, rows) on the device, and every op is
 * validated through core, checked against free device memory, then run as NVRTC-compiled kernels on the
 * null stream and synchronised before it returns (so a fault is reported by the op that caused it).
 */
import {
  type Backend, type BackwardResult, type Capabilities, type DType, type DeviceTensor, type ForwardResult, type HostTensor, type Layout,
  type MobaConfig, type ProblemShape, type ResolvedConfig, type Routing, type Sequences, type TensorLike,
  HandleTable, MobaError, checkBackwardTensors, checkCaps, checkProblem, checkRouting, checkRoutingLayout, checkTensor, dtypeBytes, expectShape,
  hostTensor, numel, resolveConfig, sequences, validateKconvWeight, validateLayout, validateRoutingIndices,
} from '@moba/core';
import { archOf, compileCached, compileOptions, kernelSource } from './compile.js';
import { CU_ATTR, CudaDriver, Nvrtc, cudaIncludeDir } from './driver.js';
import * as geo from './geometry.js';
import { type CudaProblem, checkFits, checkIndexLimits, opBytes, reserveBytes, slotAction } from './memory.js';
import { type KernelArg, MAX_ARGS, SLOT_BYTES, f32, i32, i64, packParams, ptr, writeSlotPointers } from './params.js';

export interface CudaBackendOptions {
  /** Device ordinal (default 0). */
  ordinal?: number;
  /** Folder for compiled cubins (default `$XDG_CACHE_HOME/moba-ts/cuda`); `null` disables the disk cache. */
  cacheDir?: string | null;
  /**
   * Use the tensor-core forward/backward for f16/bf16 with D 64/128 (default true; `MOBA_CUDA_FAST=0`
   * turns it off). false runs the generic CUDA-core kernels everywhere (a cross-check for the fast path).
   */
  fastPaths?: boolean;
}

/** The CUDA backend: the Backend contract plus device facts and an explicit synchronise for timing. */
export interface CudaBackend extends Backend {
  readonly device: { readonly name: string; readonly ordinal: number; readonly arch: string; readonly sms: number; readonly totalBytes: number; readonly driverVersion: number; readonly nvrtcVersion: string };
  /** Waits for all queued work (every op already does before it returns). */
  synchronize(): void;
  /** Free and total device memory now. */
  memoryInfo(): { free: number; total: number };
  /**
   * This backend's own device allocations (tensors, routings, workspace slots): bytes live now and the
   * peak since creation or the last `resetPeakMemory()`, counting the requested sizes; `cachedBytes`:
   * released buffers kept for reuse (at most 16 GiB; given back when an allocation would not fit
   * otherwise, and by destroy()).
   */
  memoryStats(): { liveBytes: number; peakBytes: number; cachedBytes: number };
  /** Starts a new peak: `peakBytes` becomes the bytes live now. */
  resetPeakMemory(): void;
  /**
   * Testing: kv heads per launch of the partial-writing kernels (forward_kv, dkdv_tc) instead of the planned
   * number (geometry.kvPerLaunch); null (default) plans it. Results do not depend on it (bitwise).
   */
  kvHeadsPerLaunch: number | null;
  /**
   * Profiling: while `profiling` is true every kernel launch is synchronised and its wall time added to
   * a per-kernel total (ms); `takeProfile()` returns the totals since the last call and clears them.
   */
  profiling: boolean;
  takeProfile(): Record<string, number>;
  /** Whether the tensor-core kernels serve this dtype and head dim on this device. */
  usesTensorCores(dtype: DType, D: number): boolean;
}

interface Buf {
  ptr: bigint;
  readonly bytes: number;
  freed: boolean;
}

interface RoutingStore {
  readonly indices: Buf; // [T, Hq, topk] int32
  readonly offsets: Buf; // [Hq·NB + 1] int32
  readonly rows: Buf; // [nnz] int32
  readonly slots: Buf; // [nnz] int32: routing slot of each entry (collect_slots)
  readonly cuSeqlens: Int32Array;
}

const NAME = 'cuda';
/** Most bytes of released buffers the backend keeps for reuse. */
const POOL_CAP = 16 * 2 ** 30;
const DT: Record<DType, { code: number; suffix: string }> = { f32: { code: 0, suffix: 'f32' }, f16: { code: 1, suffix: 'f16' }, bf16: { code: 2, suffix: 'bf16' } };
const KERNEL_FILES = ['kconv.cu', 'route.cu', 'collect.cu', 'forward.cu', 'backward.cu'] as const;
type KernelFile = (typeof KERNEL_FILES)[number];

export class CudaBackendImpl implements CudaBackend {
  readonly name = NAME;
  readonly caps: Capabilities;
  readonly device: CudaBackend['device'];
  readonly #drv: CudaDriver;
  readonly #nvrtc: Nvrtc;
  readonly #dev: number;
  readonly #ctx: bigint;
  readonly #cacheDir: string | null | undefined;
  readonly #modules = new Map<KernelFile, { mod: bigint; fns: Map<string, bigint> }>();
  readonly #params: { ptr: bigint; values: DataView; free: () => void };
  readonly #tensors = new HandleTable<Buf>('CUDA');
  readonly #routings = new HandleTable<RoutingStore>('CUDA', 'routing', this.#tensors);
  readonly #live = new Set<Buf>();
  readonly #workspace = new Map<string, Buf>();
  readonly #reserve: number;
  /** Frees the memory of tensors and routings that were garbage-collected without dispose(). */
  readonly #gc = new FinalizationRegistry<Buf>((b) => {
    if (this.#destroyed || b.freed) return;
    this.#live.delete(b);
    this.#freeQuietly(b);
  });
  #destroyed = false;
  readonly #fast: boolean;
  readonly #sharedOptIn: number;
  readonly #sharedSet = new Map<bigint, number>();
  #profile = new Map<string, number>();
  profiling = false;
  #liveBytes = 0;
  #peakBytes = 0;
  kvHeadsPerLaunch: number | null = null;
  /** Released device buffers kept for reuse, by size (cuMemAlloc/cuMemFree cost more than small ops at 8K). */
  readonly #pool = new Map<number, bigint[]>();
  #pooledBytes = 0;

  constructor(opts: CudaBackendOptions = {}) {
    const ordinal = opts.ordinal ?? 0;
    if (!Number.isInteger(ordinal) || ordinal < 0) throw new MobaError('E_RANGE', `ordinal = ${String(ordinal)} is invalid: must be an integer >= 0`, 'ordinal');
    this.#drv = new CudaDriver();
    this.#drv.init();
    const count = this.#drv.deviceCount();
    if (ordinal >= count) throw new MobaError('E_DEVICE', `CUDA device ${ordinal} does not exist: ${count} device(s) found`, 'ordinal');
    this.#nvrtc = new Nvrtc();
    this.#dev = this.#drv.device(ordinal);
    this.#ctx = this.#drv.primaryCtxRetain(this.#dev);
    this.#drv.setCurrent(this.#ctx);
    this.#cacheDir = opts.cacheDir;
    this.#fast = opts.fastPaths ?? process.env.MOBA_CUDA_FAST !== '0';
    this.#sharedOptIn = this.#drv.attribute(this.#dev, CU_ATTR.MAX_SHARED_MEMORY_PER_BLOCK_OPTIN);
    const block = this.#drv.allocHost(MAX_ARGS * SLOT_BYTES * 2);
    writeSlotPointers(block.ptr, new DataView(block.view, MAX_ARGS * SLOT_BYTES));
    this.#params = { ptr: block.ptr + BigInt(MAX_ARGS * SLOT_BYTES), values: new DataView(block.view, 0, MAX_ARGS * SLOT_BYTES), free: block.free };
    const mem = this.#drv.memInfo();
    this.#reserve = reserveBytes(mem.total);
    const arch = archOf(this.#drv.attribute(this.#dev, CU_ATTR.COMPUTE_CAPABILITY_MAJOR), this.#drv.attribute(this.#dev, CU_ATTR.COMPUTE_CAPABILITY_MINOR));
    this.device = Object.freeze({
      name: this.#drv.deviceName(this.#dev), ordinal, arch, sms: this.#drv.attribute(this.#dev, CU_ATTR.MULTIPROCESSOR_COUNT),
      totalBytes: mem.total, driverVersion: this.#drv.driverVersion(), nvrtcVersion: this.#nvrtc.version(),
    });
    this.caps = Object.freeze({
      dtypes: Object.freeze(['f32', 'f16', 'bf16'] as DType[]),
      maxHeadDim: geo.K.maxHeadDim, maxTopk: geo.K.maxTopk, maxBlockSize: 1 << 20,
      nonCausal: true, kconv: true, maxKconvWidth: 8,
      memoryBytes: Math.max(0, mem.free - this.#reserve),
      deterministic: true,
    });
  }

  // ---------------------------------------------------------------- tensors

  async upload(t: HostTensor): Promise<DeviceTensor> {
    this.#alive();
    checkTensor('tensor', t);
    if (!this.caps.dtypes.includes(t.dtype)) throw new MobaError('E_UNSUPPORTED', `dtype ${t.dtype} is not supported by backend ${NAME}`, 'dtype');
    const bytes = t.data.byteLength;
    this.#fits('upload', bytes);
    const b = this.#alloc(bytes);
    this.#drv.copyHtoD(b.ptr, t.data, bytes);
    return this.#wrap(t.dtype, t.shape, b);
  }

  async download(t: DeviceTensor): Promise<HostTensor> {
    const b = this.#buf('tensor', t);
    const n = numel(t.shape);
    const data = t.dtype === 'f32' ? new Float32Array(n) : new Uint16Array(n);
    this.#drv.copyDtoH(data, b.ptr, data.byteLength);
    return hostTensor(t.dtype, t.shape, data);
  }

  dispose(...items: (DeviceTensor | Routing)[]): void {
    for (const it of items) {
      if (it === null || typeof it !== 'object' || this.#destroyed) continue;
      const b = this.#tensors.free(it);
      if (b) {
        this.#gc.unregister(it);
        this.#release(b);
      }
      const r = this.#routings.free(it);
      if (r) {
        this.#gc.unregister(it);
        for (const x of [r.indices, r.offsets, r.rows, r.slots]) this.#release(x);
      }
    }
  }

  async destroy(): Promise<void> {
    if (this.#destroyed) return;
    this.#destroyed = true;
    try {
      this.#drv.setCurrent(this.#ctx);
      this.#drv.synchronize();
    } catch {
      /* a faulted context still gets its memory back below */
    }
    for (const b of this.#live) this.#freeQuietly(b);
    this.#live.clear();
    try { this.#trimPool(); } catch { /* the context may be gone */ }
    this.#workspace.clear();
    for (const { mod } of this.#modules.values()) {
      try { this.#drv.moduleUnload(mod); } catch { /* best effort */ }
    }
    this.#modules.clear();
    this.#params.free();
    try { this.#drv.primaryCtxRelease(this.#dev); } catch { /* best effort */ }
  }

  async sync(): Promise<void> {
    this.synchronize();
  }

  synchronize(): void {
    this.#alive();
    this.#drv.synchronize();
  }

  memoryInfo(): { free: number; total: number } {
    this.#alive();
    return this.#drv.memInfo();
  }

  memoryStats(): { liveBytes: number; peakBytes: number; cachedBytes: number } {
    return { liveBytes: this.#liveBytes, peakBytes: this.#peakBytes, cachedBytes: this.#pooledBytes };
  }

  resetPeakMemory(): void {
    this.#peakBytes = this.#liveBytes;
  }

  takeProfile(): Record<string, number> {
    const out = Object.fromEntries(this.#profile);
    this.#profile = new Map();
    return out;
  }

  usesTensorCores(dtype: DType, D: number): boolean {
    return this.#fast && geo.tcEligible(dtype, D, this.#sharedOptIn);
  }

  // ---------------------------------------------------------------- routing

  async route(q: DeviceTensor, k: DeviceTensor, layout: Layout, cfg: MobaConfig): Promise<Routing> {
    this.#alive();
    const { shape, cfg: rc, seqs } = checkProblem(this.caps, q, k, k, layout, cfg);
    const p = this.#problem(shape, rc, seqs, layout);
    this.#fits('route()', opBytes(p).route);
    const { T, Hq, Hkv, D } = shape;
    const qb = this.#buf('q', q);
    const kb = this.#buf('k', k);
    const lay = this.#layout(layout, rc.blockSize);
    const cent = this.#slot('centroids', Math.max(4, seqs.totalBlocks * Hkv * D * 4));
    this.#launch('route.cu', 'centroids', geo.centroidsLaunch(seqs.totalBlocks, Hkv * D), [
      ptr(kb.ptr), i32(DT[shape.dtype].code), ptr(cent.ptr), ptr(lay.cu), ptr(lay.blockBase), i32(lay.nseq), i32(rc.blockSize), i32(Hkv * D), i32(seqs.totalBlocks),
    ]);
    const indices = this.#alloc(T * Hq * rc.topk * 4);
    try {
      const sfx = DT[shape.dtype].suffix;
      const tcTiles = geo.routeTileBase(layout.cuSeqlens, geo.K.routeTcRows);
      const tc = this.#fast ? geo.routeTcLaunch(tcTiles[tcTiles.length - 1]!, Hq, shape.dtype, D, rc.topk, rc.causal, this.#sharedOptIn) : null;
      if (tc) {
        // tensor cores: each f32 centroid as a 16-bit hi + lo pair (route.cu, centroid_split), then the fused router
        const n = seqs.totalBlocks * Hkv * D;
        const split = this.#slot('centroidSplit', Math.max(4, n * 4));
        const lo = split.ptr + BigInt(n * 2);
        this.#launch('route.cu', `centroid_split_${sfx}`, geo.elementwiseLaunch('centroid_split', n), [ptr(cent.ptr), ptr(split.ptr), ptr(lo), i64(n)]);
        this.#launch('route.cu', `${tc.kernel}_d${D}_${sfx}`, tc, [
          ptr(qb.ptr), ptr(split.ptr), ptr(lo), ptr(indices.ptr), ptr(lay.cu), ptr(lay.blockBase), ptr(this.#small('tcTileBase', tcTiles)),
          i32(lay.nseq), i32(Hq), i32(Hkv), i32(rc.blockSize), i32(rc.topk), i32(rc.causal ? 1 : 0),
        ]);
      } else {
        const L = geo.routeLaunch(lay.nTiles, Hq, D, rc.topk);
        this.#launch('route.cu', `route_${sfx}`, L, [
          ptr(qb.ptr), ptr(cent.ptr), ptr(indices.ptr), ptr(lay.cu), ptr(lay.blockBase), ptr(lay.tileBase),
          i32(lay.nseq), i32(Hq), i32(Hkv), i32(D), i32(rc.blockSize), i32(rc.topk), i32(rc.causal ? 1 : 0), i32(L.ct),
        ]);
      }
      return this.#collect(indices, T, Hq, rc, seqs, layout, lay);
    } catch (e) {
      this.#release(indices);
      throw e;
    }
  }

  async routingFromIndices(indices: Int32Array, shape: { T: number; Hq: number }, layout: Layout, cfg: MobaConfig): Promise<Routing> {
    this.#alive();
    if (!shape || typeof shape !== 'object') throw new MobaError('E_SHAPE', 'shape must be { T, Hq }', 'shape');
    const T = positiveInt('T', shape.T);
    const Hq = positiveInt('Hq', shape.Hq);
    validateLayout(layout, T);
    const rc = resolveConfig(cfg, 1, this.caps); // the scale is not used by a routing
    if (!rc.causal && !this.caps.nonCausal) throw new MobaError('E_UNSUPPORTED', 'causal = false is not supported', 'causal');
    const seqs = sequences(layout, rc.blockSize);
    validateRoutingIndices(indices, T, Hq, seqs, rc);
    const p: CudaProblem = { T, Hq, Hkv: 1, D: 1, dtype: 'f32', topk: rc.topk, totalBlocks: seqs.totalBlocks, nseq: layout.cuSeqlens.length - 1 };
    checkIndexLimits(p);
    this.#fits('routingFromIndices()', opBytes(p).route);
    const lay = this.#layout(layout, rc.blockSize);
    const ib = this.#alloc(indices.byteLength);
    try {
      this.#drv.copyHtoD(ib.ptr, indices);
      return this.#collect(ib, T, Hq, rc, seqs, layout, lay);
    } catch (e) {
      this.#release(ib);
      throw e;
    }
  }

  async routingIndices(r: Routing): Promise<Int32Array> {
    const s = this.#routing(r);
    const out = new Int32Array(r.T * r.Hq * r.topk);
    this.#drv.copyDtoH(out, s.indices.ptr, out.byteLength);
    return out;
  }

  /** indices → collected form: count → scan → scatter (collect.cu); takes ownership of `indices`. */
  #collect(indices: Buf, T: number, Hq: number, rc: ResolvedConfig, seqs: Sequences, layout: Layout, lay: DeviceLayout): Routing {
    const NB = seqs.totalBlocks;
    const n = Hq * NB + 1;
    const offsets = this.#alloc(n * 4);
    let rows: Buf | null = null;
    let slots: Buf | null = null;
    try {
      this.#drv.memsetD8(offsets.ptr, 0, n * 4);
      this.#launch('collect.cu', 'collect_count', geo.elementwiseLaunch('collect_count', T * Hq * rc.topk), [
        ptr(indices.ptr), ptr(offsets.ptr), ptr(lay.cu), ptr(lay.blockBase), i32(lay.nseq), i64(T), i32(Hq), i32(rc.topk), i32(NB),
      ]);
      this.#launch('collect.cu', 'collect_scan', geo.scanLaunch(), [ptr(offsets.ptr), i32(n)]);
      const total = new Int32Array(1);
      this.#drv.copyDtoH(total, offsets.ptr + BigInt((n - 1) * 4), 4);
      rows = this.#alloc(Math.max(1, total[0]!) * 4);
      const cursor = this.#slot('cursor', Math.max(4, Hq * NB * 4));
      this.#drv.memsetD8(cursor.ptr, 0, Hq * NB * 4);
      this.#launch('collect.cu', 'collect_fill', geo.elementwiseLaunch('collect_fill', T * Hq * rc.topk), [
        ptr(indices.ptr), ptr(offsets.ptr), ptr(cursor.ptr), ptr(rows.ptr), ptr(lay.cu), ptr(lay.blockBase), i32(lay.nseq), i64(T), i32(Hq), i32(rc.topk), i32(NB),
      ]);
      this.#launch('collect.cu', 'collect_sort', geo.sortLaunch(Hq * NB), [
        ptr(indices.ptr), ptr(offsets.ptr), ptr(rows.ptr), ptr(lay.cu), ptr(lay.blockBase), i32(lay.nseq), i32(Hq), i32(rc.topk), i32(NB),
        i32(rc.blockSize), i32(rc.causal ? 1 : 0),
      ]);
      slots = this.#alloc(rows.bytes);
      this.#launch('collect.cu', 'collect_slots', geo.sortLaunch(Hq * NB), [
        ptr(indices.ptr), ptr(offsets.ptr), ptr(rows.ptr), ptr(slots.ptr), ptr(lay.blockBase), i32(lay.nseq), i32(Hq), i32(rc.topk), i32(NB),
      ]);
      this.#drv.synchronize();
    } catch (e) {
      this.#release(offsets);
      if (rows) this.#release(rows);
      if (slots) this.#release(slots);
      throw e;
    }
    const r: Routing = Object.freeze({ backend: NAME, T, Hq, topk: rc.topk, blockSize: rc.blockSize, causal: rc.causal });
    const store: RoutingStore = { indices, offsets, rows, slots, cuSeqlens: Int32Array.from(layout.cuSeqlens) };
    this.#routings.add(r, store);
    for (const b of [indices, offsets, rows, slots]) this.#gc.register(r, b, r);
    return r;
  }

  // ---------------------------------------------------------------- attention

  async forward(q: DeviceTensor, k: DeviceTensor, v: DeviceTensor, r: Routing, layout: Layout, cfg: MobaConfig): Promise<ForwardResult> {
    this.#alive();
    const { shape, cfg: rc, seqs } = checkProblem(this.caps, q, k, v, layout, cfg);
    checkRouting(r, NAME, shape, rc);
    const rs = this.#routingFor(r, layout);
    const p = this.#problem(shape, rc, seqs, layout);
    const { T, Hq, Hkv, D } = shape;
    const fast = this.usesTensorCores(shape.dtype, D);
    const kvL = fast ? geo.forwardKvLaunch(seqs.totalBlocks, rc.blockSize, Hkv, D, this.#sharedOptIn) : null;
    const plan = geo.fwdPartPlan(T, Hq, Hkv, D, rc.topk, seqs.totalBlocks, this.device.sms, this.kvHeadsPerLaunch);
    this.#fits('forward()', opBytes(p).forward + (kvL ? plan.bytes : fast ? T * Hq * D * 4 : 0));
    const [qb, kb, vb] = [this.#buf('q', q), this.#buf('k', k), this.#buf('v', v)];
    const lay = this.#layout(layout, rc.blockSize);
    const out = this.#alloc(T * Hq * D * dtypeBytes(shape.dtype));
    const lse = this.#alloc(T * Hq * 4);
    const scratch: Buf[] = []; // released (to the buffer cache) when the op ends: not live during other ops
    try {
      if (kvL) {
        // key-major: per key block, partial O, m, l of every row that selected it (forward_kv), then a fixed-order
        // merge per row (forward_reduce); kv heads in groups so that the partials fit their budget
        const part = this.#scratch(scratch, plan.bytes);
        const ml = part.ptr + BigInt(plan.mlOffset);
        const G = Hq / Hkv, sfx = DT[shape.dtype].suffix;
        for (let kv0 = 0; kv0 < Hkv; kv0 += plan.kvPerLaunch) {
          const m = Math.min(plan.kvPerLaunch, Hkv - kv0);
          this.#launch('forward.cu', `forward_kv_d${D}_${sfx}`, { ...kvL, grid: [kvL.grid[0], m, 1] }, [
            ptr(qb.ptr), ptr(kb.ptr), ptr(vb.ptr), ptr(rs.slots.ptr), ptr(rs.offsets.ptr), ptr(rs.rows.ptr), ptr(part.ptr), ptr(ml), ptr(lay.cu), ptr(lay.blockBase),
            i32(lay.nseq), i32(Hq), i32(Hkv), i32(rc.blockSize), i32(seqs.totalBlocks), i32(rc.topk), i32(rc.causal ? 1 : 0), f32(rc.scale), i32(kv0),
          ]);
          this.#launch('forward.cu', `forward_reduce_${sfx}`, geo.elementwiseLaunch('forward_reduce', T * m * G * (D / 4)), [
            ptr(part.ptr), ptr(ml), ptr(rs.indices.ptr), ptr(out.ptr), ptr(lse.ptr), i64(T), i32(Hq), i32(kv0 * G), i32(m * G), i32(D), i32(rc.topk),
          ]);
        }
      } else if (fast) {
        const w = this.#windows(layout, rc.topk, Hq);
        const acc = this.#scratch(scratch, T * Hq * D * 4);
        this.#launch('forward.cu', `forward_tc_d${D}_${DT[shape.dtype].suffix}`, geo.windowLaunch('forward_tc', w.count, Hq, geo.forwardTcShared(D, w.rows), this.#sharedOptIn), [
          ptr(qb.ptr), ptr(kb.ptr), ptr(vb.ptr), ptr(rs.indices.ptr), ptr(out.ptr), ptr(lse.ptr), ptr(acc.ptr), ptr(lay.cu), ptr(w.base), i32(lay.nseq),
          i32(Hq), i32(Hkv), i32(rc.blockSize), i32(rc.topk), i32(rc.causal ? 1 : 0), f32(rc.scale), i32(w.rows),
        ]);
      } else {
        this.#launch('forward.cu', `forward_${DT[shape.dtype].suffix}`, geo.forwardLaunch(T, Hq, D), [
          ptr(qb.ptr), ptr(kb.ptr), ptr(vb.ptr), ptr(rs.indices.ptr), ptr(out.ptr), ptr(lse.ptr), ptr(lay.cu), i32(lay.nseq),
          i32(T), i32(Hq), i32(Hkv), i32(D), i32(rc.blockSize), i32(rc.topk), i32(rc.causal ? 1 : 0), f32(rc.scale),
        ]);
      }
      this.#drv.synchronize();
    } catch (e) {
      this.#release(out);
      this.#release(lse);
      throw e;
    } finally {
      for (const b of scratch) this.#release(b);
    }
    return { out: this.#wrap(shape.dtype, [T, Hq, D], out), lse: this.#wrap('f32', [T, Hq], lse) };
  }

  async backward(
    q: DeviceTensor, k: DeviceTensor, v: DeviceTensor, out: DeviceTensor, lse: DeviceTensor, dOut: DeviceTensor,
    r: Routing, layout: Layout, cfg: MobaConfig,
  ): Promise<BackwardResult> {
    this.#alive();
    const { shape, cfg: rc, seqs } = checkProblem(this.caps, q, k, v, layout, cfg);
    checkBackwardTensors(shape, out, lse, dOut);
    checkRouting(r, NAME, shape, rc);
    const rs = this.#routingFor(r, layout);
    const p = this.#problem(shape, rc, seqs, layout);
    const { T, Hq, Hkv, D } = shape;
    const fast = this.usesTensorCores(shape.dtype, D);
    const tcL = fast ? geo.dkdvTcLaunch(seqs.totalBlocks, rc.blockSize, Hkv, D, this.#sharedOptIn) : null;
    const plan = tcL ? geo.dqPartPlan(T, Hq, Hkv, D, rc.topk, tcL.nsub, seqs.totalBlocks, this.device.sms, this.kvHeadsPerLaunch) : { kvPerLaunch: Hkv, bytes: 0 };
    const metaBytes = tcL ? rs.rows.bytes * 4 : 0; // dkdv_meta: 16 bytes per list entry
    this.#fits('backward()', opBytes(p).backward + plan.bytes + metaBytes);
    const [qb, kb, vb] = [this.#buf('q', q), this.#buf('k', k), this.#buf('v', v)];
    const [ob, lb, gb] = [this.#buf('out', out), this.#buf('lse', lse), this.#buf('dOut', dOut)];
    const lay = this.#layout(layout, rc.blockSize);
    const eb = dtypeBytes(shape.dtype);
    const delta = this.#slot('delta', T * Hq * 4);
    const sfx = DT[shape.dtype].suffix;
    const dq = this.#alloc(T * Hq * D * eb);
    const dk = this.#alloc(T * Hkv * D * eb);
    const dv = this.#alloc(T * Hkv * D * eb);
    const scratch: Buf[] = []; // released (to the buffer cache) when the op ends
    try {
      this.#launch('backward.cu', `delta_${sfx}`, geo.deltaLaunch(T, Hq), [ptr(ob.ptr), ptr(gb.ptr), ptr(delta.ptr), i64(T * Hq), i32(D)]);
      if (tcL) {
        // the list entries' rows, slots, lse and Δ gathered once (dkdv_meta); dK, dV and per-(row, slot, key
        // tile) dQ partials per key block (dkdv_tc), then a fixed-order sum per row (dq_reduce); kv heads in
        // groups so that the partials fit their budget (geometry.dqPartPlan)
        const L = tcL;
        const meta = this.#scratch(scratch, metaBytes);
        this.#launch('backward.cu', 'dkdv_meta', geo.sortLaunch(Hq * seqs.totalBlocks), [
          ptr(rs.offsets.ptr), ptr(rs.rows.ptr), ptr(rs.slots.ptr), ptr(lb.ptr), ptr(delta.ptr), i32(Hq), i32(seqs.totalBlocks), ptr(meta.ptr),
        ]);
        const part = this.#scratch(scratch, plan.bytes);
        const G = Hq / Hkv;
        for (let kv0 = 0; kv0 < Hkv; kv0 += plan.kvPerLaunch) {
          const m = Math.min(plan.kvPerLaunch, Hkv - kv0);
          this.#launch('backward.cu', `${L.kernel}_d${D}_${sfx}`, { ...L, grid: [L.grid[0], m, 1] }, [
            ptr(qb.ptr), ptr(kb.ptr), ptr(vb.ptr), ptr(gb.ptr), ptr(meta.ptr), ptr(rs.offsets.ptr), ptr(dk.ptr), ptr(dv.ptr), ptr(part.ptr),
            ptr(lay.cu), ptr(lay.blockBase), i32(lay.nseq), i32(Hq), i32(Hkv), i32(rc.blockSize), i32(seqs.totalBlocks), i32(rc.topk),
            i32(rc.causal ? 1 : 0), f32(rc.scale), i32(L.nsub), i32(kv0),
          ]);
          this.#launch('backward.cu', `dq_reduce_${sfx}`, geo.elementwiseLaunch('dq_reduce', T * m * G * (D / 4)), [
            ptr(part.ptr), ptr(rs.indices.ptr), ptr(dq.ptr), ptr(lay.cu), i32(lay.nseq), i64(T), i32(Hq), i32(kv0 * G), i32(m * G), i32(D),
            i32(rc.blockSize), i32(rc.topk), i32(L.nsub), i32(L.kvTile), f32(rc.scale),
          ]);
        }
        this.#drv.synchronize();
        return { dq: this.#wrap(shape.dtype, [T, Hq, D], dq), dk: this.#wrap(shape.dtype, [T, Hkv, D], dk), dv: this.#wrap(shape.dtype, [T, Hkv, D], dv) };
      }
      const L = geo.dkdvLaunch(Hkv, seqs.totalBlocks, rc.blockSize, D);
      this.#launch('backward.cu', `dkdv_${sfx}`, L, [
        ptr(qb.ptr), ptr(kb.ptr), ptr(vb.ptr), ptr(gb.ptr), ptr(lb.ptr), ptr(delta.ptr), ptr(rs.offsets.ptr), ptr(rs.rows.ptr), ptr(dk.ptr), ptr(dv.ptr),
        ptr(lay.cu), ptr(lay.blockBase), i32(lay.nseq), i32(Hq), i32(Hkv), i32(D), i32(rc.blockSize), i32(seqs.totalBlocks), i32(rc.causal ? 1 : 0), f32(rc.scale), i32(L.kc),
      ]);
      this.#launch('backward.cu', `dq_${sfx}`, geo.dqLaunch(T, Hq, D), [
        ptr(qb.ptr), ptr(kb.ptr), ptr(vb.ptr), ptr(gb.ptr), ptr(lb.ptr), ptr(delta.ptr), ptr(rs.indices.ptr), ptr(dq.ptr), ptr(lay.cu), i32(lay.nseq),
        i32(T), i32(Hq), i32(Hkv), i32(D), i32(rc.blockSize), i32(rc.topk), i32(rc.causal ? 1 : 0), f32(rc.scale),
      ]);
      this.#drv.synchronize();
    } catch (e) {
      for (const b of [dq, dk, dv]) this.#release(b);
      throw e;
    } finally {
      for (const b of scratch) this.#release(b);
    }
    return { dq: this.#wrap(shape.dtype, [T, Hq, D], dq), dk: this.#wrap(shape.dtype, [T, Hkv, D], dk), dv: this.#wrap(shape.dtype, [T, Hkv, D], dv) };
  }

  // ---------------------------------------------------------------- kconv

  async kconv(k: DeviceTensor, w: DeviceTensor, layout: Layout): Promise<DeviceTensor> {
    const a = this.#kconvArgs(k, w, layout);
    this.#fits('kconv()', a.T * a.C * dtypeBytes(k.dtype) + a.small);
    const out = this.#alloc(a.T * a.C * dtypeBytes(k.dtype));
    try {
      this.#launch('kconv.cu', `kconv_forward_${DT[k.dtype].suffix}`, geo.elementwiseLaunch('kconv_forward', a.T * a.C), [
        ptr(a.kb.ptr), ptr(a.wb.ptr), ptr(out.ptr), ptr(a.cu), i32(a.nseq), i64(a.T), i32(a.C), i32(a.W),
      ]);
      this.#drv.synchronize();
    } catch (e) {
      this.#release(out);
      throw e;
    }
    return this.#wrap(k.dtype, k.shape, out);
  }

  async kconvBackward(k: DeviceTensor, w: DeviceTensor, dkOut: DeviceTensor, layout: Layout): Promise<{ dk: DeviceTensor; dw: DeviceTensor }> {
    const a = this.#kconvArgs(k, w, layout);
    expectShape('dkOut', dkOut, k.shape, k.dtype);
    const gb = this.#buf('dkOut', dkOut);
    const eb = dtypeBytes(k.dtype);
    this.#fits('kconvBackward()', a.T * a.C * (4 + eb) + a.C * a.W * eb + a.small);
    const dz = this.#slot('kconv_dz', a.T * a.C * 4);
    const dk = this.#alloc(a.T * a.C * eb);
    const dw = this.#alloc(a.C * a.W * eb);
    const sfx = DT[k.dtype].suffix;
    const n = a.T * a.C;
    try {
      this.#launch('kconv.cu', `kconv_dz_${sfx}`, geo.elementwiseLaunch('kconv_dz', n), [ptr(a.kb.ptr), ptr(a.wb.ptr), ptr(gb.ptr), ptr(dz.ptr), ptr(a.cu), i32(a.nseq), i64(a.T), i32(a.C), i32(a.W)]);
      this.#launch('kconv.cu', `kconv_dk_${sfx}`, geo.elementwiseLaunch('kconv_dk', n), [ptr(a.wb.ptr), ptr(gb.ptr), ptr(dz.ptr), ptr(dk.ptr), ptr(a.cu), i32(a.nseq), i64(a.T), i32(a.C), i32(a.W)]);
      this.#launch('kconv.cu', `kconv_dw_${sfx}`, geo.kconvDwLaunch(a.C), [ptr(a.kb.ptr), ptr(dz.ptr), ptr(dw.ptr), ptr(a.cu), i32(a.nseq), i64(a.T), i32(a.C), i32(a.W)]);
      this.#drv.synchronize();
    } catch (e) {
      this.#release(dk);
      this.#release(dw);
      throw e;
    }
    return { dk: this.#wrap(k.dtype, k.shape, dk), dw: this.#wrap(w.dtype, w.shape, dw) };
  }

  #kconvArgs(k: DeviceTensor, w: DeviceTensor, layout: Layout) {
    this.#alive();
    if (!k || !Array.isArray(k.shape) || k.shape.length !== 3 || k.shape.some((s) => !Number.isInteger(s) || s < 1)) {
      throw new MobaError('E_SHAPE', `k.shape = [${k?.shape?.join(', ')}] is invalid: must be [T, Hkv, D] with every dimension >= 1`, 'k.shape');
    }
    const [T, Hkv, D] = k.shape as [number, number, number];
    checkCaps(this.caps, { T, Hq: Hkv, Hkv, D, dtype: k.dtype });
    validateLayout(layout, T);
    const W = validateKconvWeight(w, Hkv, D, this.caps.maxKconvWidth);
    if (w.dtype !== k.dtype) throw new MobaError('E_DTYPE', `kconvWeight.dtype = ${String(w.dtype)} is invalid: must equal k.dtype = ${k.dtype}`, 'kconvWeight.dtype');
    const kb = this.#buf('k', k);
    const wb = this.#buf('kconvWeight', w);
    const cu = this.#small('cu', layout.cuSeqlens);
    return { T, C: Hkv * D, W, kb, wb, cu, nseq: layout.cuSeqlens.length - 1, small: layout.cuSeqlens.byteLength };
  }

  // ---------------------------------------------------------------- internals

  #alive(): void {
    if (this.#destroyed) throw new MobaError('E_DEVICE', 'the CUDA backend was destroyed: create a new one', 'backend');
    this.#drv.setCurrent(this.#ctx);
  }

  #problem(shape: ProblemShape, rc: ResolvedConfig, seqs: Sequences, layout: Layout): CudaProblem {
    const p: CudaProblem = { ...shape, topk: rc.topk, totalBlocks: seqs.totalBlocks, nseq: layout.cuSeqlens.length - 1 };
    checkIndexLimits(p);
    return p;
  }

  /** E_MEMORY before allocating when `bytes` more do not fit in free device memory. */
  #fits(what: string, bytes: number): void {
    let free = this.#drv.memInfo().free;
    if (bytes > free - this.#reserve && this.#pooledBytes > 0) {
      this.#trimPool(); // cached buffers count as free
      free = this.#drv.memInfo().free;
    }
    checkFits(what, bytes, free, this.#reserve);
  }

  /** Frees every cached buffer. */
  #trimPool(): void {
    for (const list of this.#pool.values()) for (const p of list) this.#drv.memFree(p);
    this.#pool.clear();
    this.#pooledBytes = 0;
  }

  #alloc(bytes: number): Buf {
    const size = Math.max(bytes, 16);
    const cached = this.#pool.get(size)?.pop();
    let p: bigint;
    if (cached !== undefined) {
      p = cached;
      this.#pooledBytes -= size;
    } else {
      try {
        p = this.#drv.memAlloc(size);
      } catch (e) {
        if (this.#pooledBytes === 0) throw e;
        this.#trimPool(); // out of memory with buffers cached: give them back and try once more
        p = this.#drv.memAlloc(size);
      }
    }
    const b: Buf = { ptr: p, bytes, freed: false };
    this.#live.add(b);
    this.#liveBytes += Math.max(bytes, 16);
    this.#peakBytes = Math.max(this.#peakBytes, this.#liveBytes);
    return b;
  }

  #freeQuietly(b: Buf): void {
    if (b.freed) return;
    b.freed = true;
    this.#liveBytes -= Math.max(b.bytes, 16);
    try { this.#drv.memFree(b.ptr); } catch { /* the context may be gone */ }
  }

  /** Returns a buffer to the cache (every op has synchronised before its buffers can be released). */
  #release(b: Buf): void {
    if (b.freed || this.#destroyed) return;
    this.#live.delete(b);
    b.freed = true;
    const size = Math.max(b.bytes, 16);
    this.#liveBytes -= size;
    if (this.#pooledBytes + size > POOL_CAP) {
      this.#drv.memFree(b.ptr);
      return;
    }
    const list = this.#pool.get(size);
    if (list) list.push(b.ptr);
    else this.#pool.set(size, [b.ptr]);
    this.#pooledBytes += size;
  }

  /** A buffer for the current op only: listed in `scratch`, which the op releases when it ends. */
  #scratch(scratch: Buf[], bytes: number): Buf {
    const b = this.#alloc(bytes);
    scratch.push(b);
    return b;
  }

  /** A reusable workspace buffer of at least `bytes` (same-sized problems reuse it). */
  #slot(name: string, bytes: number): Buf {
    const have = this.#workspace.get(name);
    const act = slotAction(have?.bytes, bytes);
    if (act === 'reuse') return have!;
    if (have) this.#release(have);
    const b = this.#alloc(bytes);
    this.#workspace.set(name, b);
    return b;
  }

  /** Uploads a small int32 table into its workspace slot. */
  #small(name: string, data: Int32Array): bigint {
    const b = this.#slot(name, data.byteLength);
    this.#drv.copyHtoD(b.ptr, data);
    return b.ptr;
  }

  #layout(layout: Layout, blockSize: number): DeviceLayout {
    const cu = layout.cuSeqlens;
    const tiles = geo.routeTileBase(cu);
    return {
      cu: this.#small('cu', cu),
      blockBase: this.#small('blockBase', geo.blockBase(cu, blockSize)),
      tileBase: this.#small('tileBase', tiles),
      nseq: cu.length - 1,
      nTiles: tiles[tiles.length - 1]!,
    };
  }

  /** Query windows of the tensor-core kernels: rows per window, their count and the per-sequence base table. */
  #windows(layout: Layout, topk: number, Hq: number): { rows: number; count: number; base: bigint } {
    const cu = layout.cuSeqlens;
    const lens = Array.from({ length: cu.length - 1 }, (_, s) => cu[s + 1]! - cu[s]!);
    const rows = geo.windowRows(topk, lens, Hq, this.device.sms);
    const base = geo.windowBase(cu, rows);
    return { rows, count: base[base.length - 1]!, base: this.#small('winBase', base) };
  }

  #wrap(dtype: DType, shape: readonly number[], b: Buf): DeviceTensor {
    const t: DeviceTensor = Object.freeze({ backend: NAME, dtype, shape: Object.freeze([...shape]) });
    this.#tensors.add(t, b);
    this.#gc.register(t, b, t);
    return t;
  }

  #buf(param: string, t: TensorLike): Buf {
    this.#alive();
    return this.#tensors.get(param, t);
  }

  #routing(r: Routing): RoutingStore {
    this.#alive();
    return this.#routings.get('routing', r);
  }

  #routingFor(r: Routing, layout: Layout): RoutingStore {
    return checkRoutingLayout(this.#routing(r), layout);
  }

  #function(file: KernelFile, name: string): bigint {
    let m = this.#modules.get(file);
    if (!m) {
      const src = kernelSource(file);
      const opts = compileOptions(this.device.arch, cudaIncludeDir());
      const compiler = { id: `nvrtc ${this.device.nvrtcVersion}`, compile: (s: string, n: string, o: readonly string[]) => this.#nvrtc.compile(s, n, o) };
      const { cubin } = compileCached(compiler, src, file, this.device.arch, opts, this.#cacheDir);
      m = { mod: this.#drv.moduleLoad(cubin), fns: new Map() };
      this.#modules.set(file, m);
    }
    let f = m.fns.get(name);
    if (f === undefined) {
      f = this.#drv.moduleFunction(m.mod, name);
      m.fns.set(name, f);
    }
    return f;
  }

  #launch(file: KernelFile, name: string, L: geo.Launch, args: readonly KernelArg[]): void {
    const f = this.#function(file, name);
    if (L.shared > geo.LIMITS.sharedDefault && (this.#sharedSet.get(f) ?? 0) < L.shared) {
      // the opt-in maximum for this launch's dynamic size (the kernel's static shared memory counts too)
      this.#drv.setMaxDynamicShared(f, L.shared);
      this.#sharedSet.set(f, L.shared);
    }
    packParams(args, this.#params.values);
    const t0 = this.profiling ? performance.now() : 0;
    this.#drv.launch(name, f, L.grid, L.block, L.shared, this.#params.ptr);
    if (this.profiling) {
      this.#drv.synchronize();
      this.#profile.set(name, (this.#profile.get(name) ?? 0) + performance.now() - t0);
    }
  }
}

interface DeviceLayout {
  readonly cu: bigint;
  readonly blockBase: bigint;
  readonly tileBase: bigint;
  readonly nseq: number;
  readonly nTiles: number;
}

function positiveInt(param: string, v: unknown): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 1) throw new MobaError('E_RANGE', `${param} = ${String(v)} is invalid: must be an integer >= 1`, param);
  return v;
}
