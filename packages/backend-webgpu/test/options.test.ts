// createWebGpuBackend's options, nested tuning / unstable / dkdvShape included: unknown keys (with a suggestion)
// and nulls are E_RANGE, checked before any adapter or device is requested (so this runs without a GPU).
import { MobaError } from '@moba/core';
import { describe, expect, it } from 'vitest';
import { WEBGPU_OPTION_KEYS, type WebGpuBackendOptions, createWebGpuBackend, optionKeys } from '../src/index.js';

async function rejection(opts: unknown): Promise<MobaError> {
  try {
    await createWebGpuBackend(opts as WebGpuBackendOptions);
  } catch (e) {
    if (e instanceof MobaError) return e;
    throw e;
  }
  throw new Error('did not reject');
}

describe('WebGPU backend options', () => {
  it('unknown keys, at every level, are E_RANGE naming the key and the nearest known one', async () => {
    const cases: [unknown, string, string][] = [
      [{ devise: {} }, 'devise', "unknown WebGPU backend option 'devise' (did you mean 'device'?)"],
      [{ threads: 4 }, 'threads', "unknown WebGPU backend option 'threads'"],
      [{ tuning: { partialByte: 1 } }, 'partialByte', "unknown WebGPU tuning option 'partialByte' (did you mean 'partialBytes'?)"],
      [{ unstable: { routeKernal: 'owner' } }, 'routeKernal', "unknown WebGPU unstable option 'routeKernal' (did you mean 'routeKernel'?)"],
      [{ unstable: { dkdvShape: { rww: 2 } } }, 'rww', "unknown WebGPU unstable.dkdvShape field 'rww' (did you mean 'rw'?)"],
    ];
    for (const [opts, param, msg] of cases) {
      const e = await rejection(opts);
      expect([e.code, e.param]).toEqual(['E_RANGE', param]);
      expect(e.message).toContain(msg);
    }
  });

  it('null values are refused (undefined is the default); the key lists are exported', async () => {
    for (const key of ['device', 'memoryBytes', 'bufferCacheBytes', 'profile', 'tuning', 'unstable']) {
      expect(await rejection({ [key]: null })).toMatchObject({ code: 'E_RANGE', param: key });
    }
    expect(await rejection({ tuning: { workgroupStorage: null } })).toMatchObject({ code: 'E_RANGE', param: 'workgroupStorage' });
    expect(await rejection({ unstable: { dkdvShape: null } })).toMatchObject({ code: 'E_RANGE', param: 'dkdvShape' });
    expect((await rejection(null)).code).toBe('E_RANGE');
    expect(WEBGPU_OPTION_KEYS.options).toEqual(['device', 'memoryBytes', 'bufferCacheBytes', 'profile', 'tuning', 'unstable']);
    expect(WEBGPU_OPTION_KEYS.unstable).toEqual(['dkdvShape', 'routeKernel']);
    expect(optionKeys).toBe(WEBGPU_OPTION_KEYS.options);
  });
});
