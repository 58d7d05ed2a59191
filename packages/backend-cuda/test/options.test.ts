// createCudaBackend's options, the nested `unstable` included: unknown keys (with a suggestion) and nulls are
// E_RANGE, checked before the driver is loaded (so this runs without a GPU); `cacheDir: null` and
// `unstable.kvHeadsPerLaunch: null` keep their documented meaning.
import { MobaError } from '@moba/core';
import { describe, expect, it } from 'vitest';
import { CUDA_OPTION_KEYS, type CudaBackendOptions, createCudaBackend, isAvailable, optionKeys, probeAdapter, unavailableReason } from '../src/index.js';

function thrown(opts: unknown): MobaError | null {
  try {
    const b = createCudaBackend(opts as CudaBackendOptions);
    void b.destroy();
    return null;
  } catch (e) {
    if (e instanceof MobaError) return e;
    throw e;
  }
}

describe('CUDA backend options', () => {
  it('unknown keys, nested ones included, are E_RANGE naming the key and the nearest known one', () => {
    const cases: [unknown, string, string][] = [
      [{ ordnial: 0 }, 'ordnial', "unknown CUDA backend option 'ordnial' (did you mean 'ordinal'?)"],
      [{ threads: 2 }, 'threads', "unknown CUDA backend option 'threads'"],
      [{ unstable: { fastPath: false } }, 'fastPath', "unknown CUDA unstable option 'fastPath' (did you mean 'fastPaths'?)"],
    ];
    for (const [opts, param, msg] of cases) {
      const e = thrown(opts);
      expect([e?.code, e?.param]).toEqual(['E_RANGE', param]);
      expect(e?.message).toContain(msg);
    }
  });

  it('null is refused where it means nothing and kept where it is documented; the key lists are exported', () => {
    for (const key of ['ordinal', 'kernelPath', 'unstable']) expect(thrown({ [key]: null })).toMatchObject({ code: 'E_RANGE', param: key });
    expect(thrown({ unstable: { fastPaths: null } })).toMatchObject({ code: 'E_RANGE', param: 'fastPaths' });
    expect(thrown(null)?.code).toBe('E_RANGE');
    for (const ok of [{ cacheDir: null }, { unstable: { kvHeadsPerLaunch: null } }]) {
      const e = thrown(ok);
      if (isAvailable()) expect(e).toBeNull();
      else expect(e?.code).toBe('E_DEVICE'); // got past the option checks
    }
    expect(CUDA_OPTION_KEYS.options).toEqual(['ordinal', 'cacheDir', 'kernelPath', 'unstable']);
    expect(CUDA_OPTION_KEYS.unstable).toEqual(['kvHeadsPerLaunch', 'fastPaths']);
    expect(optionKeys).toBe(CUDA_OPTION_KEYS.options);
  });

  it('kernelPath and MOBA_CUDA_PATH are checked before the driver is loaded: E_RANGE naming them and the allowed values', () => {
    const e = thrown({ kernelPath: 'sm89' });
    expect([e?.code, e?.param]).toEqual(['E_RANGE', 'kernelPath']);
    expect(e?.message).toContain('kernelPath = "sm89" is invalid: must be one of auto, sm80, sm90');
    const prev = process.env.MOBA_CUDA_PATH;
    process.env.MOBA_CUDA_PATH = 'fast';
    try {
      expect(thrown({})).toMatchObject({ code: 'E_RANGE', param: 'MOBA_CUDA_PATH' });
      const ok = thrown({ kernelPath: 'sm80' }); // the option wins over the variable
      if (isAvailable()) expect(ok).toBeNull();
      else expect(ok?.code).toBe('E_DEVICE');
    } finally {
      if (prev === undefined) delete process.env.MOBA_CUDA_PATH;
      else process.env.MOBA_CUDA_PATH = prev;
    }
  });

  it("probeAdapter (listBackends, moba info) names device 0 and its kernel path, or why CUDA is unavailable", async () => {
    const p = await probeAdapter();
    if (isAvailable()) expect(p.adapter).toMatch(/\(compute capability \d+\.\d+\), kernel path (sm80|sm90) \(NVRTC sm_\d+a?\)$/);
    else expect(p).toEqual({ available: false, reason: unavailableReason(), software: false });
  });
});
