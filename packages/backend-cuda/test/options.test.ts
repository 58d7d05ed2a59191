// createCudaBackend's options, the nested `unstable` included: unknown keys (with a suggestion) and nulls are
// E_RANGE, checked before the driver is loaded (so this runs without a GPU); `cacheDir: null` and
// `unstable.kvHeadsPerLaunch: null` keep their documented meaning.
import { MobaError } from '@moba/core';
import { describe, expect, it } from 'vitest';
import { CUDA_OPTION_KEYS, type CudaBackendOptions, createCudaBackend, isAvailable, optionKeys } from '../src/index.js';

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
    for (const key of ['ordinal', 'unstable']) expect(thrown({ [key]: null })).toMatchObject({ code: 'E_RANGE', param: key });
    expect(thrown({ unstable: { fastPaths: null } })).toMatchObject({ code: 'E_RANGE', param: 'fastPaths' });
    expect(thrown(null)?.code).toBe('E_RANGE');
    for (const ok of [{ cacheDir: null }, { unstable: { kvHeadsPerLaunch: null } }]) {
      const e = thrown(ok);
      if (isAvailable()) expect(e).toBeNull();
      else expect(e?.code).toBe('E_DEVICE'); // got past the option checks
    }
    expect(CUDA_OPTION_KEYS.options).toEqual(['ordinal', 'cacheDir', 'unstable']);
    expect(CUDA_OPTION_KEYS.unstable).toEqual(['kvHeadsPerLaunch', 'fastPaths']);
    expect(optionKeys).toBe(CUDA_OPTION_KEYS.options);
  });
});
