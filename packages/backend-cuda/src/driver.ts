/**
 * A small typed binding to the CUDA driver API (`libcuda.so.1`) and NVRTC through koffi (FFI): no native
 * addon, nothing compiled at install time. Every call's status goes through `checkCu` / `checkNvrtc`
 * (status.ts), so a failure is a `MobaError('E_DEVICE')` naming the call and the driver's error name.
 *
 * Koffi conventions used here (koffi 3): native pointers and CUDA handles are BigInts, declared as
 * `uint64_t` (CUdeviceptr is one; CUcontext/CUmodule/CUfunction are pointers, the same 8 bytes on
 * x86-64); out-parameters are one-element typed arrays (koffi passes a typed array as a pointer to its
 * contents); host buffers for copies are typed arrays passed as `void *`.
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { MobaError } from '@moba/core';
import { checkCu, checkNvrtc } from './status.js';

type Koffi = typeof import('koffi');
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Fn = (...args: any[]) => any;

let koffiCache: Koffi | null | undefined;
/** Why koffi could not be loaded (null until a load failed). */
let koffiFailure: string | null = null;

/**
 * koffi, or null when it cannot be loaded (then CUDA is unavailable). koffi is an optional dependency of
 * this package: an install on a platform it has no binary for (or with optional dependencies omitted) lacks it.
 */
export function loadKoffi(): Koffi | null {
  if (koffiCache !== undefined) return koffiCache;
  try {
    koffiCache = createRequire(import.meta.url)('koffi') as Koffi;
  } catch (e) {
    const err = e as { code?: string; message?: string };
    const msg = err?.message ?? String(e);
    const missing = err?.code === 'MODULE_NOT_FOUND' && msg.includes("'koffi'");
    koffiFailure = missing
      ? 'the koffi package (FFI, an optional dependency of @moba/backend-cuda) is not installed: npm install koffi'
      : `the koffi package (FFI) failed to load: ${msg.split('\n')[0]}`;
    koffiCache = null;
  }
  return koffiCache;
}

function koffiOrThrow(): Koffi {
  const k = loadKoffi();
  if (!k) throw new MobaError('E_UNSUPPORTED', koffiFailure ?? 'the koffi package could not be loaded', 'cuda');
  return k;
}

/** Device attributes we read (CUdevice_attribute, cuda.h). */
export const CU_ATTR = Object.freeze({
  MAX_SHARED_MEMORY_PER_BLOCK: 8,
  MULTIPROCESSOR_COUNT: 16,
  L2_CACHE_SIZE: 38,
  COMPUTE_CAPABILITY_MAJOR: 75,
  COMPUTE_CAPABILITY_MINOR: 76,
  MAX_SHARED_MEMORY_PER_BLOCK_OPTIN: 97,
});
/** CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES */
export const CU_FUNC_ATTR_MAX_DYNAMIC_SHARED = 8;

/** The library names tried for NVRTC, in order (`MOBA_NVRTC_LIB` first). Pure: for tests and messages. */
export function nvrtcCandidates(env: Record<string, string | undefined> = process.env): string[] {
  const names = ['libnvrtc.so', 'libnvrtc.so.13', 'libnvrtc.so.12'];
  const home = env.CUDA_HOME ?? env.CUDA_PATH;
  const dirs = [...(home ? [join(home, 'lib64'), join(home, 'targets/x86_64-linux/lib')] : []), '/usr/local/cuda/lib64', '/usr/local/cuda/targets/x86_64-linux/lib'];
  const out: string[] = [];
  if (env.MOBA_NVRTC_LIB) out.push(env.MOBA_NVRTC_LIB);
  out.push(...names); // through the dynamic loader's search path
  for (const d of dirs) for (const n of names) out.push(join(d, n));
  return [...new Set(out)];
}

/** CUDA headers passed to NVRTC as `-I` (`MOBA_CUDA_INCLUDE`, else `$CUDA_HOME/include`, else /usr/local/cuda/include). */
export function cudaIncludeDir(env: Record<string, string | undefined> = process.env): string {
  if (env.MOBA_CUDA_INCLUDE) return env.MOBA_CUDA_INCLUDE;
  const home = env.CUDA_HOME ?? env.CUDA_PATH;
  if (home && existsSync(join(home, 'include'))) return join(home, 'include');
  return '/usr/local/cuda/include';
}

function loadFirst(k: Koffi, candidates: readonly string[], what: string): { lib: ReturnType<Koffi['load']>; path: string } {
  const tried: string[] = [];
  for (const c of candidates) {
    if (c.includes('/') && !existsSync(c)) continue;
    try {
      return { lib: k.load(c), path: c };
    } catch (e) {
      tried.push(`${c} (${e instanceof Error ? e.message.split('\n')[0] : String(e)})`);
    }
  }
  throw new MobaError('E_DEVICE', `${what} not found: tried ${candidates.join(', ')}${tried.length ? `; load errors: ${tried.join('; ')}` : ''}`, 'cuda');
}

/** The CUDA driver API: each method checks its status and returns the out-parameter, if any. */
export class CudaDriver {
  readonly path: string;
  readonly #f: Record<string, Fn> = {};
  readonly #k: Koffi;

  constructor(libPath = process.env.MOBA_CUDA_LIB ?? 'libcuda.so.1') {
    this.#k = koffiOrThrow();
    const { lib, path } = loadFirst(this.#k, [libPath], 'the CUDA driver library');
    this.path = path;
    const decl: string[] = [
      'int cuInit(uint32_t flags)',
      'int cuDriverGetVersion(int *version)',
      'int cuDeviceGetCount(int *count)',
      'int cuDeviceGet(int *device, int ordinal)',
      'int cuDeviceGetAttribute(int *value, int attrib, int device)',
      'int cuDeviceGetName(char *name, int len, int device)',
      'int cuDevicePrimaryCtxRetain(uint64_t *ctx, int device)',
      'int cuDevicePrimaryCtxRelease_v2(int device)',
      'int cuCtxSetCurrent(uint64_t ctx)',
      'int cuCtxSynchronize()',
      'int cuMemAlloc_v2(uint64_t *dptr, size_t bytes)',
      'int cuMemFree_v2(uint64_t dptr)',
      'int cuMemcpyHtoD_v2(uint64_t dst, const void *src, size_t bytes)',
      'int cuMemcpyDtoH_v2(void *dst, uint64_t src, size_t bytes)',
      'int cuMemcpyDtoD_v2(uint64_t dst, uint64_t src, size_t bytes)',
      'int cuMemsetD8_v2(uint64_t dst, uint8_t value, size_t count)',
      'int cuMemGetInfo_v2(uint64_t *free, uint64_t *total)',
      'int cuModuleLoadData(uint64_t *module, const void *image)',
      'int cuModuleUnload(uint64_t module)',
      'int cuModuleGetFunction(uint64_t *func, uint64_t module, const char *name)',
      'int cuFuncSetAttribute(uint64_t func, int attrib, int value)',
      'int cuLaunchKernel(uint64_t f, uint32_t gx, uint32_t gy, uint32_t gz, uint32_t bx, uint32_t by, uint32_t bz, uint32_t sharedBytes, uint64_t stream, uint64_t params, uint64_t extra)',
      'int cuGetErrorName(int status, _Out_ const char **name)',
      'int cuGetErrorString(int status, _Out_ const char **text)',
    ];
    for (const d of decl) {
      const name = /\s(\w+)\(/.exec(d)![1]!;
      try {
        this.#f[name] = lib.func(d) as Fn;
      } catch (e) {
        throw new MobaError('E_DEVICE', `${path} lacks ${name}: ${e instanceof Error ? e.message : String(e)}`, 'cuda');
      }
    }
  }

  /** Calls `name` and checks its status (the error names the call and the driver's error name). */
  #call(name: string, ...args: unknown[]): void {
    const status = this.#f[name]!(...args) as number;
    if (status !== 0) checkCu(name, status, (s) => this.describe(s));
  }

  /** The driver's name and description of a status (never throws). */
  describe(status: number): { name: string | null; text: string | null } {
    const n: (string | null)[] = [null];
    const t: (string | null)[] = [null];
    try {
      this.#f.cuGetErrorName!(status, n);
      this.#f.cuGetErrorString!(status, t);
    } catch {
      /* names are best effort */
    }
    return { name: n[0] ?? null, text: t[0] ?? null };
  }

  init(): void { this.#call('cuInit', 0); }
  driverVersion(): number { const v = new Int32Array(1); this.#call('cuDriverGetVersion', v); return v[0]!; }
  deviceCount(): number { const v = new Int32Array(1); this.#call('cuDeviceGetCount', v); return v[0]!; }
  device(ordinal: number): number { const v = new Int32Array(1); this.#call('cuDeviceGet', v, ordinal); return v[0]!; }
  attribute(dev: number, attrib: number): number { const v = new Int32Array(1); this.#call('cuDeviceGetAttribute', v, attrib, dev); return v[0]!; }
  deviceName(dev: number): string {
    const buf = Buffer.alloc(256);
    this.#call('cuDeviceGetName', buf, buf.length, dev);
    const end = buf.indexOf(0);
    return buf.subarray(0, end < 0 ? buf.length : end).toString('utf8');
  }
  primaryCtxRetain(dev: number): bigint { const v = new BigUint64Array(1); this.#call('cuDevicePrimaryCtxRetain', v, dev); return v[0]!; }
  primaryCtxRelease(dev: number): void { this.#call('cuDevicePrimaryCtxRelease_v2', dev); }
  setCurrent(ctx: bigint): void { this.#call('cuCtxSetCurrent', ctx); }
  synchronize(): void { this.#call('cuCtxSynchronize'); }
  memAlloc(bytes: number): bigint { const v = new BigUint64Array(1); this.#call('cuMemAlloc_v2', v, bytes); return v[0]!; }
  memFree(ptr: bigint): void { this.#call('cuMemFree_v2', ptr); }
  /** Host → device; `src` is any typed array (its view: byteOffset and byteLength are honoured). */
  copyHtoD(dst: bigint, src: ArrayBufferView, bytes = src.byteLength): void { if (bytes > 0) this.#call('cuMemcpyHtoD_v2', dst, src, bytes); }
  /** Device → host into `dst` (synchronous with the null stream). */
  copyDtoH(dst: ArrayBufferView, src: bigint, bytes = dst.byteLength): void { if (bytes > 0) this.#call('cuMemcpyDtoH_v2', dst, src, bytes); }
  /** Device → device (ordered on the null stream; synchronise before reading the result on the host). */
  copyDtoD(dst: bigint, src: bigint, bytes: number): void { if (bytes > 0) this.#call('cuMemcpyDtoD_v2', dst, src, bytes); }
  memsetD8(dst: bigint, value: number, count: number): void { if (count > 0) this.#call('cuMemsetD8_v2', dst, value, count); }
  memInfo(): { free: number; total: number } {
    const f = new BigUint64Array(1);
    const t = new BigUint64Array(1);
    this.#call('cuMemGetInfo_v2', f, t);
    return { free: Number(f[0]!), total: Number(t[0]!) };
  }
  moduleLoad(image: Uint8Array): bigint { const v = new BigUint64Array(1); this.#call('cuModuleLoadData', v, image); return v[0]!; }
  moduleUnload(mod: bigint): void { this.#call('cuModuleUnload', mod); }
  moduleFunction(mod: bigint, name: string): bigint {
    const v = new BigUint64Array(1);
    this.#call('cuModuleGetFunction', v, mod, name);
    return v[0]!;
  }
  setMaxDynamicShared(func: bigint, bytes: number): void { this.#call('cuFuncSetAttribute', func, CU_FUNC_ATTR_MAX_DYNAMIC_SHARED, bytes); }
  /** Launches on the null stream; `params` is the native address of the `void *[]` argument-pointer array. */
  launch(name: string, func: bigint, grid: readonly [number, number, number], block: readonly [number, number, number], sharedBytes: number, params: bigint): void {
    const status = this.#f.cuLaunchKernel!(func, grid[0], grid[1], grid[2], block[0], block[1], block[2], sharedBytes, 0n, params, 0n) as number;
    if (status !== 0) checkCu(`cuLaunchKernel(${name}, grid [${grid.join(', ')}], block [${block.join(', ')}], shared ${sharedBytes} B)`, status, (s) => this.describe(s));
  }

  /** Native memory that does not move (for kernel parameters): address and an ArrayBuffer view of it. */
  allocHost(bytes: number): { ptr: bigint; view: ArrayBuffer; free: () => void } {
    const k = this.#k;
    const ptr = k.alloc('uint8_t', bytes) as bigint;
    return { ptr, view: k.view(ptr, bytes), free: () => k.free(ptr) };
  }
}

/** NVRTC: compiles CUDA C++ to a cubin for one architecture. */
export class Nvrtc {
  readonly path: string;
  readonly #f: Record<string, Fn> = {};

  constructor(candidates: readonly string[] = nvrtcCandidates()) {
    const k = koffiOrThrow();
    const { lib, path } = loadFirst(k, candidates, 'NVRTC (set MOBA_NVRTC_LIB to libnvrtc.so)');
    this.path = path;
    const decl = [
      'int nvrtcVersion(int *major, int *minor)',
      'int nvrtcCreateProgram(uint64_t *prog, const char *src, const char *name, int numHeaders, const char **headers, const char **includeNames)',
      'int nvrtcCompileProgram(uint64_t prog, int numOptions, const char **options)',
      'int nvrtcGetProgramLogSize(uint64_t prog, size_t *size)',
      'int nvrtcGetProgramLog(uint64_t prog, char *log)',
      'int nvrtcGetCUBINSize(uint64_t prog, size_t *size)',
      'int nvrtcGetCUBIN(uint64_t prog, char *cubin)',
      'int nvrtcDestroyProgram(uint64_t *prog)',
    ];
    for (const d of decl) {
      const name = /\s(\w+)\(/.exec(d)![1]!;
      try {
        this.#f[name] = lib.func(d) as Fn;
      } catch (e) {
        throw new MobaError('E_DEVICE', `${path} lacks ${name}: ${e instanceof Error ? e.message : String(e)}`, 'nvrtc');
      }
    }
  }

  version(): string {
    const a = new Int32Array(1);
    const b = new Int32Array(1);
    checkNvrtc('nvrtcVersion', this.#f.nvrtcVersion!(a, b));
    return `${a[0]}.${b[0]}`;
  }

  /** Compiles `source` (named `name` in messages) with `options` (e.g. `--gpu-architecture=sm_90`) to a cubin. */
  compile(source: string, name: string, options: readonly string[]): { cubin: Uint8Array; log: string } {
    const prog = new BigUint64Array(1);
    checkNvrtc('nvrtcCreateProgram', this.#f.nvrtcCreateProgram!(prog, source, name, 0, null, null));
    try {
      const status = this.#f.nvrtcCompileProgram!(prog[0]!, options.length, [...options]) as number;
      const log = this.#log(prog[0]!);
      checkNvrtc(`nvrtcCompileProgram(${name}, ${options.join(' ')})`, status, () => log);
      const size = new BigUint64Array(1);
      checkNvrtc('nvrtcGetCUBINSize', this.#f.nvrtcGetCUBINSize!(prog[0]!, size));
      const cubin = Buffer.alloc(Number(size[0]!));
      checkNvrtc('nvrtcGetCUBIN', this.#f.nvrtcGetCUBIN!(prog[0]!, cubin));
      return { cubin: new Uint8Array(cubin.buffer, cubin.byteOffset, cubin.byteLength), log };
    } finally {
      this.#f.nvrtcDestroyProgram!(prog);
    }
  }

  #log(prog: bigint): string {
    const size = new BigUint64Array(1);
    if (this.#f.nvrtcGetProgramLogSize!(prog, size) !== 0) return '';
    const n = Number(size[0]!);
    if (n <= 1) return '';
    const buf = Buffer.alloc(n);
    if (this.#f.nvrtcGetProgramLog!(prog, buf) !== 0) return '';
    return buf.subarray(0, n - 1).toString('utf8');
  }
}
