/**
 * The kernels of one context: modules compiled on first use (NVRTC through compile.ts, cubins cached on
 * disk), their functions, the shared-memory opt-in, and launches with named arguments checked against
 * the kernel's parameter list (kernels.ts). While `profiling` is on, every launch is synchronised and its
 * wall time added to a per-kernel total (ms).
 */
import { compileCached, compileOptions, kernelSource } from './compile.js';
import { type CudaDriver, type Nvrtc, cudaIncludeDir } from './driver.js';
import { LIMITS, type Launch } from './geometry.js';
import { KERNEL_PARAMS, type KernelFile, kernelBase } from './kernels.js';
import { type KernelArg, MAX_ARGS, SLOT_BYTES, packParams, writeSlotPointers } from './params.js';

/** A kernel's arguments by parameter name (kernels.ts). */
export type KernelArgs = Readonly<Record<string, KernelArg>>;

/** The argument list of kernel `name` in signature order; throws when a name is missing or extra. */
export function orderArgs(file: KernelFile, name: string, args: KernelArgs): KernelArg[] {
  const base = kernelBase(name);
  const k = KERNEL_PARAMS[base];
  if (!k || k.file !== file) throw new Error(`kernel ${name}: no parameter list for ${base} in ${file} (kernels.ts)`);
  const extra = Object.keys(args).filter((a) => !k.params.includes(a));
  const missing = k.params.filter((a) => !Object.hasOwn(args, a));
  if (extra.length > 0 || missing.length > 0) {
    throw new Error(`kernel ${name}: ${missing.length ? `missing argument(s) ${missing.join(', ')}` : ''}${missing.length && extra.length ? '; ' : ''}${extra.length ? `unknown argument(s) ${extra.join(', ')}` : ''}`);
  }
  return k.params.map((a) => args[a]!);
}

export class Program {
  readonly #drv: CudaDriver;
  readonly #nvrtc: Nvrtc;
  readonly #arch: string;
  readonly #defines: readonly string[];
  readonly #nvrtcVersion: string;
  readonly #cacheDir: string | null | undefined;
  readonly #modules = new Map<KernelFile, { mod: bigint; fns: Map<string, bigint> }>();
  readonly #sharedSet = new Map<bigint, number>();
  readonly #params: { ptr: bigint; values: DataView; free: () => void };
  #profile = new Map<string, number>();
  profiling = false;

  constructor(drv: CudaDriver, nvrtc: Nvrtc, device: { readonly nvrtcVersion: string }, target: { readonly arch: string; readonly defines: readonly string[] }, cacheDir: string | null | undefined) {
    this.#drv = drv;
    this.#nvrtc = nvrtc;
    this.#arch = target.arch;
    this.#defines = target.defines;
    this.#nvrtcVersion = device.nvrtcVersion;
    this.#cacheDir = cacheDir;
    const block = drv.allocHost(MAX_ARGS * SLOT_BYTES * 2);
    writeSlotPointers(block.ptr, new DataView(block.view, MAX_ARGS * SLOT_BYTES));
    this.#params = { ptr: block.ptr + BigInt(MAX_ARGS * SLOT_BYTES), values: new DataView(block.view, 0, MAX_ARGS * SLOT_BYTES), free: block.free };
  }

  #function(file: KernelFile, name: string): bigint {
    let m = this.#modules.get(file);
    if (!m) {
      const src = kernelSource(file);
      const opts = compileOptions(this.#arch, cudaIncludeDir(), this.#defines);
      const compiler = { id: `nvrtc ${this.#nvrtcVersion}`, compile: (s: string, n: string, o: readonly string[]) => this.#nvrtc.compile(s, n, o) };
      // the cache key and file name include the arch and every option: the two paths' cubins never mix
      const { cubin } = compileCached(compiler, src, file, this.#arch, opts, this.#cacheDir);
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

  /** Launches entry point `name` of `file` on the null stream with `args` by parameter name. */
  launch(file: KernelFile, name: string, L: Launch, args: KernelArgs): void {
    const list = orderArgs(file, name, args);
    const f = this.#function(file, name);
    if (L.shared > LIMITS.sharedDefault && (this.#sharedSet.get(f) ?? 0) < L.shared) {
      // the opt-in maximum for this launch's dynamic size (the kernel's static shared memory counts too)
      this.#drv.setMaxDynamicShared(f, L.shared);
      this.#sharedSet.set(f, L.shared);
    }
    packParams(list, this.#params.values);
    const t0 = this.profiling ? performance.now() : 0;
    this.#drv.launch(name, f, L.grid, L.block, L.shared, this.#params.ptr);
    if (this.profiling) {
      this.#drv.synchronize();
      this.#profile.set(name, (this.#profile.get(name) ?? 0) + performance.now() - t0);
    }
  }

  /** Per-kernel milliseconds since the last call (cleared). */
  takeProfile(): Record<string, number> {
    const out = Object.fromEntries(this.#profile);
    this.#profile = new Map();
    return out;
  }

  /** Unloads the modules and frees the parameter block. */
  destroy(): void {
    for (const { mod } of this.#modules.values()) {
      try { this.#drv.moduleUnload(mod); } catch { /* best effort */ }
    }
    this.#modules.clear();
    this.#params.free();
  }
}
