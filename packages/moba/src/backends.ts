/**
 * Backend selection for moba-ts users: `createBackend('auto'|'cpu'|'webgpu'|'cuda')` and `listBackends()`.
 * Every backend package is loaded lazily with a literal dynamic import (`import('@moba/backend-cpu')`, …), so
 * bundlers (esbuild, Vite, Rollup) see and bundle them while they stay lazy; the GPU backends are optional
 * peers: one that is not installed fails with `MobaError('E_UNSUPPORTED')` naming the package to install. The
 * declaration files never name the optional packages (their types below are structural), so a consumer's
 * TypeScript compiles without them.
 */
import { type Backend, type MemoryStats, MobaError } from '@moba/core';
import type { CpuBackend, CpuBackendOptions } from '@moba/backend-cpu';

export type { CpuBackend, CpuBackendOptions } from '@moba/backend-cpu';

/** A backend kind `createBackend` understands; `'auto'` picks the best available one. */
export type BackendKind = 'auto' | 'cpu' | 'webgpu' | 'cuda';

/** The concrete kinds, in `'auto'` preference order (fastest first). */
export const BACKEND_KINDS = ['cuda', 'webgpu', 'cpu'] as const;
export type ConcreteBackendKind = (typeof BACKEND_KINDS)[number];

/** Options of `createBackend('webgpu')` (those of `@moba/backend-webgpu`'s `createWebGpuBackend`, minus `unstable`). */
export interface WebGpuBackendOptions {
  /** A `GPUDevice` to run on (typed loosely so these types need no @webgpu/types); default: open one. */
  device?: object;
  /** Workspace budget of one call in bytes. */
  memoryBytes?: number;
  /** Time every kernel with timestamp queries (read with `backend.timings()`). */
  profile?: boolean;
  tuning?: { readonly workgroupStorage?: number; readonly partialBytes?: number };
}

/** The WebGPU backend as moba-ts types it (`@moba/backend-webgpu`'s `WebGpuBackend` has `device: GPUDevice`). */
export interface WebGpuBackend extends Backend {
  readonly device: object;
  /** GPU buffers in use (tensors, routings, scratch); the reuse pool is `pooledBuffers`. */
  readonly liveBuffers: number;
  readonly pooledBuffers: number;
  timings(): Map<string, number>;
  clearTimings(): void;
}

/** Options of `createBackend('cuda')` (those of `@moba/backend-cuda`'s `createCudaBackend`). */
export interface CudaBackendOptions {
  /** Device ordinal (default 0). */
  ordinal?: number;
  /** Folder for compiled cubins; `null` disables the disk cache. */
  cacheDir?: string | null;
  /** `'auto'` (default, or `MOBA_CUDA_PATH`): sm90 (wgmma-capable, `sm_90a`) on Hopper, else sm80; `'sm80'` forces mma.sync. */
  kernelPath?: 'auto' | 'sm80' | 'sm90';
  unstable?: { kvHeadsPerLaunch?: number | null; fastPaths?: boolean };
}

/** The CUDA backend as moba-ts types it (a subset of `@moba/backend-cuda`'s `CudaBackend`). */
export interface CudaBackend extends Backend {
  readonly device: { readonly name: string; readonly ordinal: number; readonly arch: string; readonly kernelPath: 'sm80' | 'sm90'; readonly targetArch: string; readonly sms: number; readonly totalBytes: number };
  synchronize(): void;
  memoryInfo(): { free: number; total: number };
  /** `cachedBytes` is `pooledBytes` under its earlier name. */
  memoryStats(): MemoryStats & { readonly cachedBytes: number };
}

/**
 * Options of `createBackend('auto')`: each backend's options (the chosen backend gets only its own keys), and
 * `allowSoftwareAdapter`: let `'auto'` pick a software WebGPU adapter (llvmpipe, lavapipe, SwiftShader, WARP),
 * which is slower than the CPU backend; default false, or true when the environment variable
 * `MOBA_ALLOW_SOFTWARE_WEBGPU=1` is set (Node).
 */
export interface AutoBackendOptions extends CpuBackendOptions, WebGpuBackendOptions, Omit<CudaBackendOptions, 'unstable'> {
  allowSoftwareAdapter?: boolean;
}

/** Options for a kind known only at run time (every backend's keys; the chosen factory checks its own). */
export interface BackendOptions extends AutoBackendOptions {
  [key: string]: unknown;
}

/** The backend `createBackend(kind)` gives for a kind (for a union of kinds, the union of theirs). */
export type BackendFor<K extends BackendKind> = K extends 'cpu' ? CpuBackend : K extends 'webgpu' ? WebGpuBackend : K extends 'cuda' ? CudaBackend : Backend;
/** The options `createBackend(kind)` takes for a kind. */
export type BackendOptionsFor<K extends BackendKind> =
  K extends 'cpu' ? CpuBackendOptions : K extends 'webgpu' ? WebGpuBackendOptions : K extends 'cuda' ? CudaBackendOptions : AutoBackendOptions;

/** Whether one backend can run here, from `listBackends()`. */
export interface BackendStatus {
  readonly name: ConcreteBackendKind;
  /** The npm package that provides it. */
  readonly package: string;
  /** Whether it can run here (a software WebGPU adapter counts; `'auto'` skips it unless allowed). */
  readonly available: boolean;
  /** Why it is not available (missing package, no adapter, no driver, …). */
  readonly reason?: string;
  /** The package version, when it is installed. */
  readonly version?: string;
  /** The device it would run on (WebGPU: the adapter, e.g. "llvmpipe: Mesa 25.0.7 (LLVM 15.0.6) — software"; CUDA: device 0 and its kernel path). */
  readonly adapter?: string;
  /** True when that device is a software rasteriser (a CPU pretending to be a GPU). */
  readonly software?: boolean;
}

interface BackendModule {
  isAvailable?: () => unknown;
  /** Optional: why the backend cannot run here (null when it can). */
  unavailableReason?: () => string | null;
  /** Optional (WebGPU, CUDA): the adapter, whether it is software, or why there is none. */
  probeAdapter?: () => Promise<{ available: boolean; reason?: string; adapter?: string; software?: boolean }>;
  createBackend?: (opts?: object) => Backend | Promise<Backend>;
  [factory: string]: unknown;
}

interface Entry {
  readonly pkg: string;
  readonly factory: string;
  readonly install: string;
  /** The option keys its factory knows (`'auto'` passes only these). */
  readonly keys: readonly string[];
  /** The literal dynamic import, visible to bundlers. */
  readonly load: () => Promise<unknown>;
}

let ENTRIES: Record<ConcreteBackendKind, Entry> = {
  cpu: {
    pkg: '@moba/backend-cpu', factory: 'createCpuBackend', install: 'npm install @moba/backend-cpu', keys: ['threads', 'minParallelWork', 'memoryBytes'],
    load: () => import('@moba/backend-cpu'),
  },
  webgpu: {
    pkg: '@moba/backend-webgpu', factory: 'createWebGpuBackend', keys: ['device', 'memoryBytes', 'bufferCacheBytes', 'profile', 'tuning', 'unstable'],
    install: 'npm install @moba/backend-webgpu (in Node also the `webgpu` package, Dawn: npm install webgpu)',
    load: () => import('@moba/backend-webgpu'),
  },
  cuda: {
    pkg: '@moba/backend-cuda', factory: 'createCudaBackend', keys: ['ordinal', 'cacheDir', 'kernelPath', 'unstable'],
    install: 'npm install @moba/backend-cuda (needs an NVIDIA driver with CUDA 12 and NVRTC)',
    load: () => import('@moba/backend-cuda'),
  },
};

/** Each factory's option keys, known before its package loads; a test keeps them equal to the package's `optionKeys`. */
export const BACKEND_OPTION_KEYS = { cuda: ENTRIES.cuda.keys, webgpu: ENTRIES.webgpu.keys, cpu: ENTRIES.cpu.keys } as const;

/** Tests only: replaces how each kind's package is loaded; returns the previous loaders. */
export function __setBackendLoaders(loaders: Partial<Record<ConcreteBackendKind, () => Promise<unknown>>>): Record<ConcreteBackendKind, () => Promise<unknown>> {
  const prev = { cuda: ENTRIES.cuda.load, webgpu: ENTRIES.webgpu.load, cpu: ENTRIES.cpu.load };
  ENTRIES = { ...ENTRIES };
  for (const k of BACKEND_KINDS) if (loaders[k]) ENTRIES[k] = { ...ENTRIES[k], load: loaders[k]! };
  return prev;
}

type Loaded = { ok: true; mod: BackendModule } | { ok: false; reason: string };

/** Whether a load error says that `pkg` itself cannot be found (Node, browsers, bundlers' stand-ins). */
function isMissing(e: unknown, pkg: string): boolean {
  const msg = (e as { message?: unknown })?.message;
  if (typeof msg !== 'string') return false;
  // a missing dependency inside the package names the dependency, or pkg followed by a path, not pkg alone
  return (msg.includes(`'${pkg}'`) || msg.includes(`"${pkg}"`)) && /cannot find|not found|resolve|is it installed/i.test(msg);
}

async function load(kind: ConcreteBackendKind): Promise<Loaded> {
  const { pkg, load: importIt } = ENTRIES[kind];
  try {
    return { ok: true, mod: (await importIt()) as BackendModule };
  } catch (e) {
    const why = firstLine(e instanceof Error ? e.message : String(e));
    return { ok: false, reason: isMissing(e, pkg) ? `package ${pkg} is not installed (${why})` : `package ${pkg} failed to load: ${why}` };
  }
}

type Probe = { available: boolean; reason?: string; adapter?: string; software?: boolean };

async function probe(kind: ConcreteBackendKind, mod: BackendModule): Promise<Probe> {
  try {
    if (typeof mod.probeAdapter === 'function') {
      const p = await mod.probeAdapter();
      const extra = { ...(p.adapter ? { adapter: p.adapter } : {}), ...(typeof p.software === 'boolean' ? { software: p.software } : {}) };
      return p.available ? { available: true, ...extra } : { available: false, reason: p.reason ?? `${kind} is not available here`, ...extra };
    }
    if (typeof mod.isAvailable !== 'function') return { available: true };
    const r = await mod.isAvailable();
    if (r === true) return { available: true };
    const why = typeof mod.unavailableReason === 'function' ? mod.unavailableReason() : null;
    return { available: false, reason: why ?? `${kind}: isAvailable() returned false` };
  } catch (e) {
    return { available: false, reason: `${kind}: availability check threw: ${firstLine(e instanceof Error ? e.message : String(e))}` };
  }
}

async function version(pkg: string): Promise<string | undefined> {
  try {
    // best effort (a bundle without node_modules has no package.json to read): not a literal, on purpose
    const meta = (await import(/* @vite-ignore */ `${pkg}/package.json`, { with: { type: 'json' } })) as { default: { version?: string } };
    return meta.default.version;
  } catch {
    return undefined;
  }
}

function firstLine(s: string): string {
  return s.split('\n')[0] ?? s;
}

function isKind(kind: unknown): kind is BackendKind {
  return kind === 'auto' || (BACKEND_KINDS as readonly unknown[]).includes(kind);
}

function allowSoftware(opts: { allowSoftwareAdapter?: unknown } | undefined): boolean {
  if (opts?.allowSoftwareAdapter !== undefined) return opts.allowSoftwareAdapter === true;
  const env = (globalThis as { process?: { env?: Record<string, string | undefined> } }).process?.env;
  return env?.MOBA_ALLOW_SOFTWARE_WEBGPU === '1';
}

/** Lists every backend kind, whether it can run here and, if not, why; WebGPU with its adapter, CUDA with its device and kernel path. */
export async function listBackends(): Promise<BackendStatus[]> {
  const out: BackendStatus[] = [];
  for (const name of BACKEND_KINDS) {
    const { pkg } = ENTRIES[name];
    const loaded = await load(name);
    if (!loaded.ok) {
      out.push({ name, package: pkg, available: false, reason: loaded.reason });
      continue;
    }
    const p = await probe(name, loaded.mod);
    const v = await version(pkg);
    out.push({ name, package: pkg, ...p, ...(v ? { version: v } : {}) });
  }
  return out;
}

async function create(kind: ConcreteBackendKind, loaded: Loaded, opts: object | undefined): Promise<Backend> {
  const { pkg, factory, install } = ENTRIES[kind];
  if (!loaded.ok) throw new MobaError('E_UNSUPPORTED', `backend '${kind}' is not available: ${loaded.reason}; to install it: ${install}`, 'backend');
  const make = (loaded.mod[factory] ?? loaded.mod.createBackend) as ((o?: object) => Backend | Promise<Backend>) | undefined;
  if (typeof make !== 'function') {
    throw new MobaError('E_UNSUPPORTED', `backend '${kind}': package ${pkg} exports neither ${factory}() nor createBackend()`, 'backend');
  }
  return await make(opts);
}

/** The options `kind`'s factory gets: all but moba-ts's own key, or (for `'auto'`) only the keys it knows. */
function optionsFor(kind: ConcreteBackendKind, opts: object | undefined, onlyKnown: boolean): object | undefined {
  if (!opts) return undefined;
  const keys = ENTRIES[kind].keys;
  const picked = Object.entries(opts).filter(([k]) => k !== 'allowSoftwareAdapter' && (!onlyKnown || keys.includes(k)));
  return picked.length > 0 ? Object.fromEntries(picked) : undefined;
}

async function explicit(kind: ConcreteBackendKind, opts: object | undefined): Promise<Backend> {
  const loaded = await load(kind);
  if (loaded.ok) {
    const p = await probe(kind, loaded.mod);
    if (!p.available) throw new MobaError('E_UNSUPPORTED', `backend '${kind}' is not available here: ${p.reason}`, 'backend');
  }
  return create(kind, loaded, optionsFor(kind, opts, false));
}

async function auto(opts: AutoBackendOptions | undefined): Promise<Backend> {
  if (opts) {
    const known = new Set(['allowSoftwareAdapter', ...BACKEND_KINDS.flatMap((k) => ENTRIES[k].keys)]);
    const bad = Object.keys(opts).filter((k) => !known.has(k));
    if (bad.length > 0) {
      throw new MobaError('E_RANGE', `createBackend('auto') option ${bad.map((k) => JSON.stringify(k)).join(', ')} is unknown: no backend takes it`, bad[0]);
    }
  }
  const reasons: string[] = [];
  for (const k of BACKEND_KINDS) {
    const loaded = await load(k);
    if (!loaded.ok) { reasons.push(`${k}: ${loaded.reason}`); continue; }
    const p = await probe(k, loaded.mod);
    if (!p.available) { reasons.push(`${k}: ${p.reason}`); continue; }
    if (p.software && !allowSoftware(opts)) {
      reasons.push(`${k}: only a software adapter (${p.adapter ?? 'unknown'}); allow it with allowSoftwareAdapter: true or MOBA_ALLOW_SOFTWARE_WEBGPU=1`);
      continue;
    }
    return create(k, loaded, optionsFor(k, opts, true));
  }
  throw new MobaError('E_UNSUPPORTED', `no backend is available here (${reasons.join('; ')})`, 'backend');
}

/**
 * Creates a backend.
 * - `'cpu'`, `'webgpu'`, `'cuda'`: that backend (typed as that package's backend), or `MobaError('E_UNSUPPORTED')`
 *   naming the kind, why it cannot run here and what to install. `'webgpu'` accepts any adapter, software ones too.
 * - `'auto'` (default): the first available of CUDA, a hardware WebGPU adapter, CPU (always available). A
 *   software WebGPU adapter only with `allowSoftwareAdapter: true` or `MOBA_ALLOW_SOFTWARE_WEBGPU=1`.
 * `opts` go to the backend's factory; for `'auto'` only the keys the chosen backend knows.
 */
export function createBackend(kind: 'cpu', opts?: CpuBackendOptions): Promise<CpuBackend>;
export function createBackend(kind: 'webgpu', opts?: WebGpuBackendOptions): Promise<WebGpuBackend>;
export function createBackend(kind: 'cuda', opts?: CudaBackendOptions): Promise<CudaBackend>;
export function createBackend(kind?: 'auto', opts?: AutoBackendOptions): Promise<Backend>;
export function createBackend<K extends BackendKind>(kind: K, opts?: BackendOptionsFor<K>): Promise<BackendFor<K>>;
export async function createBackend(kind: BackendKind = 'auto', opts?: object): Promise<Backend> {
  if (!isKind(kind)) {
    throw new MobaError('E_RANGE', `backend kind = ${JSON.stringify(kind)} is invalid: must be one of auto, ${BACKEND_KINDS.join(', ')}`, 'kind');
  }
  return kind === 'auto' ? auto(opts as AutoBackendOptions | undefined) : explicit(kind, opts);
}
