/**
 * Backend selection: `createBackend` follows `listBackends()` (auto = CUDA, then a hardware WebGPU adapter, then
 * CPU; software adapters only when allowed), unavailable kinds fail with E_UNSUPPORTED naming the kind, the
 * reason and the package to install, bad kinds with E_RANGE. Fake backend modules stand in for the packages
 * where the machine cannot provide a case (a hardware adapter, a missing package). The typed overloads are
 * checked by `pnpm typecheck` (this file is in the root tsconfig).
 */
import type * as CpuPkg from '@moba/backend-cpu';
import type * as CudaPkg from '@moba/backend-cuda';
import type * as WebGpuPkg from '@moba/backend-webgpu';
import { afterEach, describe, expect, it } from 'vitest';
import { BACKEND_OPTION_KEYS, __setBackendLoaders } from '../src/backends.js';
import {
  type Backend, type BackendKind, type CudaBackend, type CudaBackendOptions, MobaError, type WebGpuBackend, type WebGpuBackendOptions,
  createBackend, listBackends,
} from '../src/index.js';

async function rejection(p: Promise<unknown>): Promise<MobaError> {
  const e = await p.then(() => undefined, (err: unknown) => err);
  expect(e).toBeInstanceOf(MobaError);
  return e as MobaError;
}

// The structural types moba-ts declares (so its .d.ts never names the optional packages) stay in step with them.
type Assert<T extends true> = T;
export type TypesInStep = [
  Assert<WebGpuPkg.WebGpuBackend extends WebGpuBackend ? true : false>,
  Assert<Omit<WebGpuBackendOptions, 'device'> extends Omit<WebGpuPkg.WebGpuBackendOptions, 'device'> ? true : false>,
  Assert<CudaPkg.CudaBackend extends CudaBackend ? true : false>,
  Assert<CudaBackendOptions extends CudaPkg.CudaBackendOptions ? true : false>,
];

/** Compiled, never run: the overloads type each backend. */
export async function typedOverloads(): Promise<void> {
  const cpu = await createBackend('cpu', { threads: 2 });
  const threads: number = cpu.threads;
  const dense: CpuPkg.CpuBackend['denseForward'] = cpu.denseForward;
  const gpu = await createBackend('webgpu', { profile: true });
  const t: Map<string, number> = gpu.timings();
  const cuda = await createBackend('cuda', { ordinal: 0 });
  const name: string = cuda.device.name;
  const any: Backend = await createBackend('auto', { threads: 1, allowSoftwareAdapter: true });
  // @ts-expect-error threads is not a WebGPU option
  await createBackend('webgpu', { threads: 1 });
  // @ts-expect-error the 'auto' backend is a plain Backend
  (await createBackend()).threads;
  const kind = 'cpu' as BackendKind; // a kind known at run time: any backend, any backend's options
  const some: Backend = await createBackend(kind, { threads: 1 });
  void [threads, dense, t, name, any, some];
}

/** A fake backend module: its probe result and a factory recording the options it got. */
function fake(name: string, probe: { available: boolean; adapter?: string; software?: boolean; reason?: string }, got: object[] = []) {
  return async () => ({
    probeAdapter: async () => probe,
    createBackend: (opts?: object) => {
      got.push(opts ?? {});
      return { name, destroy: async () => undefined } as unknown as Backend;
    },
  });
}
const noCuda = async () => ({ isAvailable: () => false, unavailableReason: () => 'no CUDA device found' });
const SOFT = { available: true, adapter: 'llvmpipe: Mesa 25 — software', software: true };
const HARD = { available: true, adapter: 'NVIDIA H200', software: false };

describe('createBackend / listBackends', () => {
  it("the option keys 'auto' knows before loading a package equal each package's own optionKeys", async () => {
    const pkgs = { cpu: await import('@moba/backend-cpu'), webgpu: await import('@moba/backend-webgpu'), cuda: await import('@moba/backend-cuda') };
    for (const [kind, mod] of Object.entries(pkgs)) {
      expect([...BACKEND_OPTION_KEYS[kind as keyof typeof pkgs]].sort(), kind).toEqual([...mod.optionKeys].sort());
    }
  });

  let restore: (() => void) | null = null;
  const stub = (l: Parameters<typeof __setBackendLoaders>[0]): void => {
    const prev = __setBackendLoaders(l);
    restore ??= () => void __setBackendLoaders(prev);
  };
  afterEach(() => {
    restore?.();
    restore = null;
    delete process.env.MOBA_ALLOW_SOFTWARE_WEBGPU;
  });

  it('auto picks the first available kind, skipping a software WebGPU adapter; unavailable kinds say why', async () => {
    const list = await listBackends();
    expect(list.map((b) => b.name)).toEqual(['cuda', 'webgpu', 'cpu']);
    const cpu = list.find((b) => b.name === 'cpu')!;
    expect(cpu).toMatchObject({ available: true, package: '@moba/backend-cpu' });
    expect(cpu.version).toMatch(/^\d+\.\d+\.\d+/);
    const webgpu = list.find((b) => b.name === 'webgpu')!;
    if (webgpu.available) {
      expect(typeof webgpu.software).toBe('boolean');
      expect(webgpu.adapter).toMatch(/\S/);
      if (webgpu.software) expect(webgpu.adapter).toMatch(/software$/);
    }

    const first = list.find((b) => b.available && !b.software)!;
    const auto = await createBackend('auto', { threads: 1 });
    try {
      expect(auto.name).toBe(first.name);
    } finally {
      await auto.destroy();
    }
    for (const b of list.filter((x) => !x.available)) {
      const e = await rejection(createBackend(b.name));
      expect(e.code).toBe('E_UNSUPPORTED');
      expect(e.message).toContain(`backend '${b.name}'`);
      expect(e.message).toContain(b.reason!);
    }
  });

  it('listBackends gives the WebGPU adapter and whether it is software', async () => {
    stub({ cuda: noCuda, webgpu: fake('webgpu', SOFT) });
    const webgpu = (await listBackends()).find((b) => b.name === 'webgpu')!;
    expect(webgpu).toMatchObject({ available: true, adapter: SOFT.adapter, software: true });
  });

  it('auto: a hardware adapter wins over the CPU, a software one only when allowed (option or env)', async () => {
    stub({ cuda: noCuda, webgpu: fake('webgpu', HARD) });
    expect((await createBackend('auto')).name).toBe('webgpu');
    stub({ cuda: noCuda, webgpu: fake('webgpu', SOFT) });
    expect((await createBackend('auto', { threads: 1 })).name).toBe('cpu');
    expect((await createBackend('auto', { allowSoftwareAdapter: true })).name).toBe('webgpu');
    process.env.MOBA_ALLOW_SOFTWARE_WEBGPU = '1';
    expect((await createBackend('auto')).name).toBe('webgpu');
    expect((await createBackend('auto', { allowSoftwareAdapter: false, threads: 1 })).name).toBe('cpu');
  });

  it("explicit 'webgpu' accepts a software adapter", async () => {
    stub({ webgpu: fake('webgpu', SOFT) });
    expect((await createBackend('webgpu')).name).toBe('webgpu');
  });

  it("auto gives the chosen backend only its own option keys; unknown keys are E_RANGE", async () => {
    const got: object[] = [];
    stub({ cuda: noCuda, webgpu: fake('webgpu', HARD, got) });
    await createBackend('auto', { threads: 2, memoryBytes: 2 ** 30, allowSoftwareAdapter: false });
    expect(got).toEqual([{ memoryBytes: 2 ** 30 }]);
    const e = await rejection(createBackend('auto', { thread: 2 } as object));
    expect(e.code).toBe('E_RANGE');
    expect(e.message).toContain('"thread"');
  });

  it('a missing package is E_UNSUPPORTED naming the package to install; a broken one says what failed', async () => {
    const notFound = (pkg: string) => async () => {
      throw Object.assign(new Error(`Cannot find package '${pkg}' imported from /app/node_modules/moba-ts/dist/backends.js`), { code: 'ERR_MODULE_NOT_FOUND' });
    };
    stub({ cuda: notFound('@moba/backend-cuda'), webgpu: notFound('@moba/backend-webgpu') });
    for (const kind of ['cuda', 'webgpu'] as const) {
      const e = await rejection(createBackend(kind));
      expect(e.code).toBe('E_UNSUPPORTED');
      expect(e.message).toContain(`package @moba/backend-${kind} is not installed`);
      expect(e.message).toContain(`npm install @moba/backend-${kind}`);
    }
    stub({ cpu: async () => { throw new Error('Failed to resolve module specifier "@moba/backend-cpu"'); } });
    const e = await rejection(createBackend('cpu'));
    expect(e.message).toContain('package @moba/backend-cpu is not installed (Failed to resolve module specifier');
    expect(e.message).not.toContain('reinstall');
    stub({ cpu: async () => { throw new Error("Cannot find module '/app/dist/kernels.js'"); } });
    expect((await rejection(createBackend('cpu'))).message).toContain("package @moba/backend-cpu failed to load: Cannot find module '/app/dist/kernels.js'");
  });

  it('explicit cpu honours its options; an unknown kind is E_RANGE', async () => {
    const b = await createBackend('cpu', { threads: 1 });
    try {
      expect(b.name).toBe('cpu');
      expect(b.threads).toBe(1);
    } finally {
      await b.destroy();
    }
    const e = await rejection(createBackend('tpu' as BackendKind));
    expect(e.code).toBe('E_RANGE');
    expect(e.message).toContain('"tpu"');
  });
});
