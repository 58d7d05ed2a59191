// The kernel path (src/path.ts), without a GPU: the option and MOBA_CUDA_PATH (E_RANGE naming the one given),
// the path and NVRTC arch from a compute capability (E_UNSUPPORTED for sm90 off Hopper), and the compile inputs
// of the two paths on Hopper (different options, so different cubin cache keys and file names).
import { mkdtempSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MobaError } from '@moba/core';
import { describe, expect, it } from 'vitest';
import { compileCached, compileOptions } from '../src/compile.js';
import { flushBytes } from '../src/l2.js';
import { KERNEL_PATH_CHOICES, type KernelPathRequest, kernelPathRequest, kernelTarget } from '../src/path.js';

const caught = (f: () => unknown): MobaError => {
  try {
    f();
  } catch (e) {
    if (e instanceof MobaError) return e;
    throw e;
  }
  throw new Error('no MobaError thrown');
};
const req = (choice: KernelPathRequest['choice'], from: KernelPathRequest['from'] = 'kernelPath'): KernelPathRequest => ({ choice, from });

describe('kernel path request', () => {
  it('the option wins over MOBA_CUDA_PATH, which wins over auto; an empty variable is unset', () => {
    expect(KERNEL_PATH_CHOICES).toEqual(['auto', 'sm80', 'sm90']);
    expect(kernelPathRequest(undefined, {})).toEqual({ choice: 'auto', from: 'default' });
    expect(kernelPathRequest(undefined, { MOBA_CUDA_PATH: '' })).toEqual({ choice: 'auto', from: 'default' });
    expect(kernelPathRequest(undefined, { MOBA_CUDA_PATH: 'sm80' })).toEqual({ choice: 'sm80', from: 'MOBA_CUDA_PATH' });
    expect(kernelPathRequest('sm90', { MOBA_CUDA_PATH: 'sm80' })).toEqual({ choice: 'sm90', from: 'kernelPath' });
    expect(kernelPathRequest('auto', { MOBA_CUDA_PATH: 'sm80' })).toEqual({ choice: 'auto', from: 'kernelPath' });
  });
  it('any other value is E_RANGE naming the option or the variable and the allowed values', () => {
    for (const bad of ['SM80', 'sm_90a', '', 90, null, true]) {
      const e = caught(() => kernelPathRequest(bad, {}));
      expect([e.code, e.param]).toEqual(['E_RANGE', 'kernelPath']);
      expect(e.message).toContain('must be one of auto, sm80, sm90');
    }
    const e = caught(() => kernelPathRequest(undefined, { MOBA_CUDA_PATH: 'hopper' }));
    expect([e.code, e.param]).toEqual(['E_RANGE', 'MOBA_CUDA_PATH']);
    expect(e.message).toContain('MOBA_CUDA_PATH = "hopper" is invalid: must be one of auto, sm80, sm90');
  });
});

describe('kernel target from the compute capability', () => {
  it('auto: sm90 (sm_90a, MOBA_SM90) on Hopper only; sm80 with the device arch elsewhere, Blackwell included', () => {
    expect(kernelTarget(9, 0, req('auto', 'default'))).toEqual({ path: 'sm90', arch: 'sm_90a', defines: ['-DMOBA_SM90=1'] });
    for (const [maj, min, arch] of [[8, 0, 'sm_80'], [8, 6, 'sm_86'], [8, 9, 'sm_89'], [10, 0, 'sm_100'], [12, 0, 'sm_120'], [7, 5, 'sm_75']] as const) {
      expect(kernelTarget(maj, min, req('auto', 'default'))).toEqual({ path: 'sm80', arch, defines: [] });
    }
  });
  it('sm80 forced on Hopper compiles for sm_90 without MOBA_SM90; sm90 forced elsewhere is E_UNSUPPORTED naming its source', () => {
    expect(kernelTarget(9, 0, req('sm80'))).toEqual({ path: 'sm80', arch: 'sm_90', defines: [] });
    expect(kernelTarget(9, 0, req('sm90', 'MOBA_CUDA_PATH')).path).toBe('sm90');
    for (const from of ['kernelPath', 'MOBA_CUDA_PATH'] as const) {
      const e = caught(() => kernelTarget(8, 0, req('sm90', from)));
      expect([e.code, e.param]).toEqual(['E_UNSUPPORTED', from]);
      expect(e.message).toMatch(/needs a Hopper GPU .* 8\.0 \(sm_80\)/);
    }
    expect(caught(() => kernelTarget(0, 0, req('auto'))).code).toBe('E_DEVICE');
  });
  it("the two Hopper paths' compiles differ in arch and options, so they never share a cached cubin", () => {
    const dir = mkdtempSync(join(tmpdir(), 'moba-path-'));
    const compiled: string[][] = [];
    const compiler = { id: 'fake nvrtc', compile: (_s: string, _n: string, o: readonly string[]) => { compiled.push([...o]); return { cubin: Uint8Array.of(compiled.length), log: '' }; } };
    const keys = (['sm80', 'sm90'] as const).map((p) => {
      const t = kernelTarget(9, 0, req(p));
      const opts = compileOptions(t.arch, '/inc', t.defines);
      return compileCached(compiler, 'src', 'forward.cu', t.arch, opts, dir);
    });
    expect(compiled).toEqual([
      ['--gpu-architecture=sm_90', '--std=c++17', '-I/inc', '-DMOBA_NVRTC=1'],
      ['--gpu-architecture=sm_90a', '--std=c++17', '-I/inc', '-DMOBA_NVRTC=1', '-DMOBA_SM90=1'],
    ]);
    expect(keys[0]!.key).not.toBe(keys[1]!.key);
    expect(readdirSync(dir).sort().map((f) => f.replace(/-[0-9a-f]{24}\.cubin$/, ''))).toEqual(['forward.cu-sm_90', 'forward.cu-sm_90a']);
  });
});

describe('L2 flush size', () => {
  it('writes twice the L2 (the H200 reports 60 MiB), at least 2 MiB', () => {
    expect(flushBytes(60 * 2 ** 20)).toBe(120 * 2 ** 20);
    expect(flushBytes(0)).toBe(2 * 2 ** 20);
  });
});
