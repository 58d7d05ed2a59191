/**
 * Backend selection for moba-ts users: `createBackend('auto'|'cpu'|'webgpu'|'cuda')` and `listBackends()`.
 * Every backend package is loaded lazily with a dynamic import, so the GPU backends stay optional
 * dependencies: a user who never asks for CUDA never loads koffi, and one without the package gets a
 * `MobaError('E_UNSUPPORTED')` saying how to install it.
 */
import { type Backend, MobaError } from '@moba/core';

/** A backend kind `createBackend` understands; `'auto'` picks the best available one. */
export type BackendKind = 'auto' | 'cpu' | 'webgpu' | 'cuda';

/** The concrete kinds, in `'auto'` preference order (fastest first). */
export const BACKEND_KINDS = ['cuda', 'webgpu', 'cpu'] as const;
export type ConcreteBackendKind = (typeof BACKEND_KINDS)[number];

/**
 * Options passed through to the chosen backend's factory. Each backend reads the keys it knows:
 * CPU `threads`, `minParallelWork`; WebGPU `device`; CUDA `ordinal`.
 */
export interface BackendOptions {
  /** CPU: worker threads (default: available cores). */
  threads?: number;
  /** CPU: smallest problem (in FLOPs) split across workers. */
  minParallelWork?: number;
  /** WebGPU: a `GPUDevice` to run on (default: request one). */
  device?: unknown;
  /** CUDA: device ordinal (default 0). */
  ordinal?: number;
  [key: string]: unknown;
}

/** Whether one backend can run here, from `listBackends()`. */
export interface BackendStatus {
  readonly name: ConcreteBackendKind;
  /** The npm package that provides it. */
  readonly package: string;
  readonly available: boolean;
  /** Why it is not available (missing package, no adapter, no driver, …). */
  readonly reason?: string;
  /** The package version, when it is installed. */
  readonly version?: string;
  adapter?: string;
  software?: boolean;
}

interface BackendModule {
  isAvailable?: () => unknown;
  /** Optional: why the backend cannot run here (null when it can). */
  unavailableReason?: () => string | null;
  createBackend?: (opts?: BackendOptions) => Backend | Promise<Backend>;
  [factory: string]: unknown;
}

interface Entry {
  readonly pkg: string;
  readonly factory: string;
  readonly install: string;
}

// Package names are looked up through this map (not import literals) so TypeScript never requires the
// optional GPU packages to be installed.
const ENTRIES: Record<ConcreteBackendKind, Entry> = {
  cpu: { pkg: '@moba/backend-cpu', factory: 'createCpuBackend', install: 'npm install @moba/backend-cpu (a dependency of moba-ts: reinstall moba-ts)' },
  webgpu: { pkg: '@moba/backend-webgpu', factory: 'createWebGpuBackend', install: 'npm install @moba/backend-webgpu (in Node it also needs the `webgpu` package and a GPU or a software adapter)' },
  cuda: { pkg: '@moba/backend-cuda', factory: 'createCudaBackend', install: 'npm install @moba/backend-cuda (needs an NVIDIA driver with CUDA 12 and NVRTC)' },
};

type Loaded = { ok: true; mod: BackendModule } | { ok: false; reason: string; missing: boolean };

async function load(kind: ConcreteBackendKind): Promise<Loaded> {
  const { pkg } = ENTRIES[kind];
  try {
    const mod = (await import(pkg)) as BackendModule;
    return { ok: true, mod };
  } catch (e) {
    const err = e as { code?: string; message?: string };
    const msg = err?.message ?? String(e);
    // Only the backend package itself missing means "not installed"; a missing dependency inside it is a load failure.
    const missing = (err?.code === 'ERR_MODULE_NOT_FOUND' || err?.code === 'MODULE_NOT_FOUND') && msg.includes(`'${pkg}'`);
    return { ok: false, missing, reason: missing ? `package ${pkg} is not installed` : `package ${pkg} failed to load: ${firstLine(msg)}` };
  }
}

async function probe(kind: ConcreteBackendKind, mod: BackendModule): Promise<{ available: boolean; reason?: string }> {
  if (typeof mod.isAvailable !== 'function') return { available: true };
  try {
    const r = await mod.isAvailable();
    if (typeof r === 'boolean') {
      if (r) return { available: true };
      const why = typeof mod.unavailableReason === 'function' ? mod.unavailableReason() : null;
      return { available: false, reason: why ?? `${kind}: isAvailable() returned false` };
    }
    if (r && typeof r === 'object' && 'available' in r) {
      const o = r as { available: unknown; reason?: unknown };
      return o.available ? { available: true } : { available: false, reason: typeof o.reason === 'string' ? o.reason : `${kind} is not available here` };
    }
    return { available: Boolean(r) };
  } catch (e) {
    return { available: false, reason: `${kind}: isAvailable() threw: ${firstLine(e instanceof Error ? e.message : String(e))}` };
  }
}

async function version(pkg: string): Promise<string | undefined> {
  try {
    const meta = (await import(`${pkg}/package.json`, { with: { type: 'json' } })) as { default: { version?: string } };
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

/** Lists every backend kind, whether it can run here and, if not, why. Loads each package once. */
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
    out.push({ name, package: pkg, available: p.available, ...(p.reason ? { reason: p.reason } : {}), ...(v ? { version: v } : {}) });
  }
  return out;
}

async function create(kind: ConcreteBackendKind, opts: BackendOptions | undefined): Promise<Backend> {
  const { pkg, factory, install } = ENTRIES[kind];
  const loaded = await load(kind);
  if (!loaded.ok) {
    throw new MobaError('E_UNSUPPORTED', `backend '${kind}' is not available: ${loaded.reason}; to install it: ${install}`, 'backend');
  }
  const p = await probe(kind, loaded.mod);
  if (!p.available) throw new MobaError('E_UNSUPPORTED', `backend '${kind}' is not available here: ${p.reason}`, 'backend');
  const make = (loaded.mod[factory] ?? loaded.mod.createBackend) as ((o?: BackendOptions) => Backend | Promise<Backend>) | undefined;
  if (typeof make !== 'function') {
    throw new MobaError('E_UNSUPPORTED', `backend '${kind}': package ${pkg} exports neither ${factory}() nor createBackend()`, 'backend');
  }
  return await make(opts);
}

/**
 * Creates a backend.
 * - `'cpu'`, `'webgpu'`, `'cuda'`: that backend, or `MobaError('E_UNSUPPORTED')` naming the kind, why it
 *   cannot run here and how to install it.
 * - `'auto'`: the first available of CUDA, WebGPU, CPU (the CPU backend is always available).
 * `opts` go to the backend's factory (see `BackendOptions`).
 */
export async function createBackend(kind: BackendKind = 'auto', opts?: BackendOptions): Promise<Backend> {
  if (!isKind(kind)) {
    throw new MobaError('E_RANGE', `backend kind = ${JSON.stringify(kind)} is invalid: must be one of auto, ${BACKEND_KINDS.join(', ')}`, 'kind');
  }
  if (kind !== 'auto') return create(kind, opts);
  const reasons: string[] = [];
  for (const k of BACKEND_KINDS) {
    const loaded = await load(k);
    if (!loaded.ok) { reasons.push(`${k}: ${loaded.reason}`); continue; }
    const p = await probe(k, loaded.mod);
    if (!p.available) { reasons.push(`${k}: ${p.reason}`); continue; }
    return create(k, opts);
  }
  throw new MobaError('E_UNSUPPORTED', `no backend is available here (${reasons.join('; ')})`, 'backend');
}
