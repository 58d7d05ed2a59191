/**
 * The CUDA backend object: device tensors are device allocations (f16/bf16 kept as 16-bit), routings
 * hold `indices [T, Hq, topk]` and the collected form (offsets, rows, slotOf) on the device. Core's shell
 * validates every op; this file wires the stages (route.ts, collect.ts, forward.ts, backward.ts,
 * kconv.ts) to the device: each checks its bytes against free device memory, runs NVRTC-compiled kernels
 * on the null stream and synchronises before it returns (so a fault is reported by the op that caused it).
 */
import {
  type BackwardInputs, type Capabilities, type CheckedKconv, type CheckedProblem, type CheckedRoutingCall, type DType,
  type DeviceMemory, type DeviceTensor, type HostTensor, type KVCache, type KVCacheOptions, type Layout, type MemoryStats, type Qkv, type Routing,
  BackendShell, MobaError, hostTensor, numel,
} from '@moba/core';
import { Allocator, type Buf } from './allocator.js';
import { type CudaBackend, type CudaBackendOptions, checkCudaOptions } from './api.js';
import { backward } from './backward.js';
import { createCudaCache } from './cache.js';
import { collect } from './collect.js';
import { archOf } from './compile.js';
import { CU_ATTR, CudaDriver, Nvrtc } from './driver.js';
import * as geo from './geometry.js';
import { forward } from './forward.js';
import { kconv, kconvBackward } from './kconv.js';
import { flushL2 } from './l2.js';
import { type CudaProblem, checkIndexLimits, opBytes } from './memory.js';
import { kernelPathRequest, kernelTarget } from './path.js';
import { timeDeviceCopy, timeDeviceRead } from './probe.js';
import { Program } from './program.js';
import { route } from './route.js';
import { type Cuda, type DeviceLayout, type RoutingStore, deviceLayout, usesTensorCores } from './shared.js';

export class CudaBackendImpl extends BackendShell<Buf, RoutingStore> implements CudaBackend {
  readonly name = 'cuda';
  readonly caps: Capabilities;
  readonly device: CudaBackend['device'];
  readonly #drv: CudaDriver;
  readonly #dev: number;
  readonly #ctx: bigint;
  readonly #mem: Allocator;
  readonly #prog: Program;
  readonly #c: Cuda;
  readonly #stores = new WeakMap<Routing, RoutingStore>();

  constructor(opts: CudaBackendOptions = {}) {
    super('CUDA');
    checkCudaOptions(opts);
    const ordinal = opts.ordinal ?? 0;
    if (!Number.isInteger(ordinal) || ordinal < 0) throw new MobaError('E_RANGE', `ordinal = ${String(ordinal)} is invalid: must be an integer >= 0`, 'ordinal');
    const kvHeads = opts.unstable?.kvHeadsPerLaunch ?? null;
    const pathReq = kernelPathRequest(opts.kernelPath); // E_RANGE before the driver is loaded
    this.#drv = new CudaDriver();
    this.#drv.init();
    const count = this.#drv.deviceCount();
    if (ordinal >= count) throw new MobaError('E_DEVICE', `CUDA device ${ordinal} does not exist: ${count} device(s) found`, 'ordinal');
    const nvrtc = new Nvrtc();
    this.#dev = this.#drv.device(ordinal);
    this.#ctx = this.#drv.primaryCtxRetain(this.#dev);
    this.#drv.setCurrent(this.#ctx);
    const sharedOptIn = this.#drv.attribute(this.#dev, CU_ATTR.MAX_SHARED_MEMORY_PER_BLOCK_OPTIN);
    const mem = this.#drv.memInfo();
    const [major, minor] = [this.#drv.attribute(this.#dev, CU_ATTR.COMPUTE_CAPABILITY_MAJOR), this.#drv.attribute(this.#dev, CU_ATTR.COMPUTE_CAPABILITY_MINOR)];
    const target = kernelTarget(major, minor, pathReq); // E_UNSUPPORTED: sm90 forced on a device that is not Hopper
    this.device = Object.freeze({
      name: this.#drv.deviceName(this.#dev), ordinal, arch: archOf(major, minor), kernelPath: target.path, targetArch: target.arch,
      sms: this.#drv.attribute(this.#dev, CU_ATTR.MULTIPROCESSOR_COUNT), l2Bytes: this.#drv.attribute(this.#dev, CU_ATTR.L2_CACHE_SIZE),
      totalBytes: mem.total, driverVersion: this.#drv.driverVersion(), nvrtcVersion: nvrtc.version(),
    });
    this.#mem = new Allocator(this.#drv, mem.total);
    this.#prog = new Program(this.#drv, nvrtc, this.device, target, opts.cacheDir);
    this.#c = {
      drv: this.#drv, mem: this.#mem, prog: this.#prog, sms: this.device.sms, sharedOptIn,
      fast: opts.unstable?.fastPaths ?? process.env.MOBA_CUDA_FAST !== '0', kvHeadsPerLaunch: kvHeads,
    };
    this.caps = Object.freeze({
      dtypes: Object.freeze(['f32', 'f16', 'bf16'] as DType[]),
      maxHeadDim: geo.K.maxHeadDim, maxTopk: geo.K.maxTopk, maxBlockSize: 1 << 20,
      nonCausal: true, qkLayout: true, kconv: true, maxKconvWidth: 8, kconvWeightDtype: 'k',
      memoryBytes: Math.max(0, mem.free - this.#mem.reserve),
      deterministic: true, kvCache: true, cacheDense: true,
      // the tensor-core paths (docs/cuda.md): a non-finite k/v (q/dOut) may reach a row (key) its causal mask hides
      nonFinite: this.#c.fast ? 'block' : 'rows',
    });
  }

  // ---------------------------------------------------------------- device extras

  synchronize(): void { this.alive(); this.#drv.synchronize(); }

  memoryInfo(): { free: number; total: number } { this.alive(); return this.#drv.memInfo(); }

  override memoryStats(): MemoryStats & { readonly cachedBytes: number } {
    const s = super.memoryStats();
    return { ...s, cachedBytes: s.pooledBytes };
  }

  get profiling(): boolean {
    return this.#prog.profiling;
  }

  set profiling(on: boolean) {
    this.#prog.profiling = on;
  }

  takeProfile(): Record<string, number> {
    return this.#prog.takeProfile();
  }

  usesTensorCores(dtype: DType, D: number): boolean {
    return usesTensorCores(this.#c, dtype, D);
  }

  async timeDeviceCopy(bytes: number): Promise<number> { this.alive(); return timeDeviceCopy(this.#c, bytes); }
  async timeDeviceRead(bytes: number): Promise<number> { this.alive(); return timeDeviceRead(this.#c, bytes); }

  async flushL2(): Promise<void> { this.alive(); this.#drv.setCurrent(this.#ctx); flushL2(this.#c, this.device.l2Bytes); }

  async createCache(opts: KVCacheOptions): Promise<KVCache> {
    this.alive();
    return createCudaCache(this.#c, { name: this.name, caps: this.caps, tensor: (p, t) => this.tensor(p, t), wrap: (d, s, x) => this.wrap(d, s, x) }, opts);
  }

  // ---------------------------------------------------------------- the stages

  protected override checkDevice(): void {
    this.#drv.setCurrent(this.#ctx);
  }

  protected override adopted(handle: DeviceTensor | Routing, data: Buf | RoutingStore): void {
    if ('ptr' in data) this.#mem.register(handle, data);
    else {
      for (const b of routingBufs(data)) this.#mem.register(handle, b);
      this.#stores.set(handle as Routing, data);
    }
  }

  /** Check helper (not part of CudaBackend): the collected lists of a routing of this backend (`lists` = Hq·NB + 1 offsets), downloaded. */
  debugRoutingLists(r: Routing, lists: number): { offsets: Int32Array; rows: Int32Array; slotOf: Int32Array } {
    const s = this.#stores.get(r);
    if (!s) throw new MobaError('E_RANGE', 'routing is not one of this backend\'s live routings', 'routing');
    const offsets = new Int32Array(lists);
    this.#drv.copyDtoH(offsets, s.offsets.ptr, offsets.byteLength);
    const nnz = offsets[offsets.length - 1]!;
    const rows = new Int32Array(nnz), slotOf = new Int32Array(nnz);
    if (nnz > 0) { this.#drv.copyDtoH(rows, s.rows.ptr, nnz * 4); this.#drv.copyDtoH(slotOf, s.slotOf.ptr, nnz * 4); }
    return { offsets, rows, slotOf };
  }

  protected async doUpload(t: HostTensor): Promise<Buf> {
    const bytes = t.data.byteLength;
    this.#mem.fits('upload', bytes);
    const b = this.#mem.alloc(bytes);
    this.#drv.copyHtoD(b.ptr, t.data, bytes);
    return b;
  }

  protected async doDownload(t: DeviceTensor, b: Buf): Promise<HostTensor> {
    const n = numel(t.shape);
    const data = t.dtype === 'f32' ? new Float32Array(n) : new Uint16Array(n);
    this.#drv.copyDtoH(data, b.ptr, data.byteLength);
    return hostTensor(t.dtype, t.shape, data);
  }

  protected async doRoute(p: CheckedProblem, q: Buf, k: Buf, layout: Layout): Promise<RoutingStore> {
    const { indices, lay } = route(this.#c, p, q, k, layout);
    return this.#collect(indices, p.shape.T, p.shape.Hq, p, lay);
  }

  protected async doRoutingFromIndices(indices: Int32Array, p: CheckedRoutingCall, layout: Layout): Promise<RoutingStore> {
    const { T, Hq, cfg: rc, seqs } = p;
    const cp: CudaProblem = { T, Tk: layout.cuSeqlens[layout.cuSeqlens.length - 1]!, Hq, Hkv: 1, D: 1, dtype: 'f32', topk: rc.topk, totalBlocks: seqs.totalBlocks, nseq: layout.cuSeqlens.length - 1 };
    checkIndexLimits(cp);
    this.#mem.fits('routingFromIndices()', opBytes(cp).route);
    const lay = deviceLayout(this.#c, layout, rc.blockSize, p.queries);
    const ib = this.#mem.alloc(indices.byteLength);
    try {
      this.#drv.copyHtoD(ib.ptr, indices);
    } catch (e) {
      this.#mem.release(ib);
      throw e;
    }
    return this.#collect(ib, T, Hq, p, lay);
  }

  /** Collects `indices` into a routing; releases them when that fails. */
  #collect(indices: Buf, T: number, Hq: number, p: CheckedProblem | CheckedRoutingCall, lay: DeviceLayout): RoutingStore {
    try {
      return collect(this.#c, indices, T, Hq, p.cfg, p.seqs, lay, p.queries.cuSeqlensQ);
    } catch (e) {
      this.#mem.release(indices);
      throw e;
    }
  }

  protected async doRoutingIndices(r: Routing, s: RoutingStore): Promise<Int32Array> {
    const out = new Int32Array(r.T * r.Hq * r.topk);
    this.#drv.copyDtoH(out, s.indices.ptr, out.byteLength);
    return out;
  }

  protected async doForward(p: CheckedProblem, t: Qkv<Buf>, r: RoutingStore, layout: Layout): Promise<{ out: Buf; lse: Buf }> {
    return forward(this.#c, p, t, r, layout);
  }

  protected async doBackward(p: CheckedProblem, t: BackwardInputs<Buf>, r: RoutingStore, layout: Layout): Promise<{ dq: Buf; dk: Buf; dv: Buf }> {
    return backward(this.#c, p, t, r, layout);
  }

  protected async doKconv(p: CheckedKconv, k: Buf, w: Buf, layout: Layout): Promise<Buf> {
    return kconv(this.#c, p, k, w, layout);
  }

  protected async doKconvBackward(p: CheckedKconv, k: Buf, w: Buf, dkOut: Buf, layout: Layout): Promise<{ dk: Buf; dw: Buf }> {
    return kconvBackward(this.#c, p, k, w, dkOut, layout);
  }

  protected bytesOf(b: Buf): number {
    return Math.max(b.bytes, 16); // as the allocator counts it
  }

  protected routingBytesOf(s: RoutingStore): number {
    return routingBufs(s).reduce((n, b) => n + this.bytesOf(b), 0);
  }

  protected override deviceMemory(): DeviceMemory {
    const s = this.#mem.stats();
    return { inUseBytes: s.liveBytes, pooledBytes: s.cachedBytes, peakBytes: s.peakBytes };
  }

  protected override resetDevicePeak(): void {
    this.#mem.resetPeak();
  }

  protected async doSync(): Promise<void> {
    this.#drv.synchronize();
  }

  protected freeTensor(b: Buf, handle: DeviceTensor): void {
    this.#mem.unregister(handle);
    this.#mem.release(b);
  }

  protected freeRouting(s: RoutingStore, handle: Routing): void {
    this.#mem.unregister(handle);
    for (const b of routingBufs(s)) this.#mem.release(b);
  }

  protected async doDestroy(): Promise<void> {
    this.#mem.markDestroyed();
    try {
      this.#drv.setCurrent(this.#ctx);
      this.#drv.synchronize();
    } catch {
      /* a faulted context still gets its memory back below */
    }
    this.#mem.freeAll();
    this.#prog.destroy();
    try { this.#drv.primaryCtxRelease(this.#dev); } catch { /* best effort */ }
  }
}

const routingBufs = (s: RoutingStore): Buf[] => [s.indices, s.offsets, s.rows, s.slotOf];
