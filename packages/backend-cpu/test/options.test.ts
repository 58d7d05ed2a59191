// createCpuBackend's options and denseForward's: unknown keys (with a suggestion) and nulls are E_RANGE.
import { MobaError, hostTensor } from '@moba/core';
import { describe, expect, it } from 'vitest';
import { CPU_BACKEND_OPTION_KEYS, type CpuBackendOptions, createCpuBackend, optionKeys } from '../src/index.js';

function thrown(fn: () => unknown): MobaError {
  try {
    fn();
  } catch (e) {
    if (e instanceof MobaError) return e;
    throw e;
  }
  throw new Error('did not throw');
}

describe('CPU backend options', () => {
  it('an unknown option is E_RANGE naming it, with the nearest known one', () => {
    const e = thrown(() => createCpuBackend({ treads: 1 } as CpuBackendOptions));
    expect([e.code, e.param]).toEqual(['E_RANGE', 'treads']);
    expect(e.message).toContain("unknown CPU backend option 'treads' (did you mean 'threads'?)");
    expect(thrown(() => createCpuBackend({ threads: 1, device: 0 } as CpuBackendOptions)).param).toBe('device');
  });

  it('null options are refused (undefined is the default); the key list is exported', async () => {
    for (const key of ['threads', 'minParallelWork', 'memoryBytes'] as const) {
      const e = thrown(() => createCpuBackend({ [key]: null } as unknown as CpuBackendOptions));
      expect([e.code, e.param]).toEqual(['E_RANGE', key]);
    }
    expect(thrown(() => createCpuBackend(null as unknown as CpuBackendOptions)).code).toBe('E_RANGE');
    const b = createCpuBackend({ threads: 1, minParallelWork: undefined });
    try {
      expect(b.threads).toBe(1);
      expect([...CPU_BACKEND_OPTION_KEYS]).toEqual(['threads', 'minParallelWork', 'memoryBytes']);
      expect(optionKeys).toBe(CPU_BACKEND_OPTION_KEYS);
      const t = (h: number) => b.upload(hostTensor('f32', [4, h, 2]));
      const [q, k] = [await t(1), await t(1)];
      const layout = { cuSeqlens: Int32Array.of(0, 4) };
      await expect(b.denseForward(q, k, k, layout, { scal: 1 } as { scale?: number })).rejects.toThrow(/unknown denseForward option 'scal' \(did you mean 'scale'\?\)/);
      await expect(b.denseForward(q, k, k, layout, { scale: null } as unknown as { scale?: number })).rejects.toMatchObject({ code: 'E_RANGE', param: 'scale' });
    } finally {
      await b.destroy();
    }
  });

  it('uploads data over a SharedArrayBuffer (it copies it) and round-trips it bitwise', async () => {
    const b = createCpuBackend({ threads: 1 });
    try {
      const u = new Uint16Array(new SharedArrayBuffer(6));
      u.set([0x3c00, 0x8001, 0x7e00]);
      expect((await b.download(await b.upload(hostTensor('f16', [3], u)))).data).toEqual(new Uint16Array(u));
    } finally {
      await b.destroy();
    }
  });
});
