/**
 * Host-side logic of the CUDA backend, without a GPU: status → error mapping, cubin cache keys and
 * source assembly, kernel-parameter packing (through real native memory via koffi), launch geometry
 * and device-memory planning.
 */
import { mkdtempSync, readFileSync, readdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MobaError } from '@moba/core';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { archOf, cacheDir, cacheKey, compileCached, compileOptions, expandIncludes, kernelSource, kernelsDir } from '../src/compile.js';
import { cudaIncludeDir, loadKoffi, nvrtcCandidates } from '../src/driver.js';
import * as geo from '../src/geometry.js';
import { isAvailable, unavailableReason } from '../src/index.js';
import { KERNEL_FILES, KERNEL_PARAMS, kernelBase } from '../src/kernels.js';
import { checkFits, checkIndexLimits, opBytes, reserveBytes, slotAction } from '../src/memory.js';
import { MAX_ARGS, SLOT_BYTES, f32, i32, i64, packParams, ptr, writeSlotPointers } from '../src/params.js';
import { orderArgs } from '../src/program.js';
import { checkCu, checkNvrtc, cuError, cuResultName, nvrtcError } from '../src/status.js';

describe('status → MobaError', () => {
  it('CUDA_SUCCESS passes, any other status is E_DEVICE naming the call and the error', () => {
    expect(() => checkCu('cuInit', 0)).not.toThrow();
    const e = cuError('cuMemAlloc_v2', 2);
    expect(e).toBeInstanceOf(MobaError);
    expect(e.code).toBe('E_DEVICE');
    expect(e.message).toContain('cuMemAlloc_v2');
    expect(e.message).toContain('CUDA_ERROR_OUT_OF_MEMORY (2)');
    expect(() => checkCu('cuInit', 100)).toThrow(/cuInit failed with CUDA_ERROR_NO_DEVICE \(100\)/);
  });
  it("prefers the driver's own name and description, and survives a failing describe", () => {
    const e = cuError('cuLaunchKernel', 719, () => ({ name: 'CUDA_ERROR_LAUNCH_FAILED', text: 'unspecified launch failure' }));
    expect(e.message).toContain('CUDA_ERROR_LAUNCH_FAILED (719): unspecified launch failure');
    expect(e.message).toContain('context is now unusable');
    const f = cuError('cuCtxSynchronize', 700, () => { throw new Error('driver gone'); });
    expect(f.message).toContain('CUDA_ERROR_ILLEGAL_ADDRESS (700)');
    expect(cuResultName(12345)).toBe('CUresult 12345');
    expect(cuResultName(1, null)).toBe('CUDA_ERROR_INVALID_VALUE');
  });
  it('NVRTC statuses carry the compile log', () => {
    expect(() => checkNvrtc('nvrtcVersion', 0)).not.toThrow();
    const e = nvrtcError('nvrtcCompileProgram(forward.cu)', 6, 'forward.cu(3): error: identifier "x" is undefined\n');
    expect(e.code).toBe('E_DEVICE');
    expect(e.message).toContain('NVRTC_ERROR_COMPILATION (6)');
    expect(e.message).toContain('identifier "x" is undefined');
    expect(() => checkNvrtc('nvrtcCreateProgram', 3)).toThrow(/NVRTC_ERROR_INVALID_INPUT/);
  });
});

describe('compilation inputs and the cubin cache', () => {
  it('cache keys change with the source, the architecture, the options and the compiler', () => {
    const base = { source: 'a', arch: 'sm_90', options: ['-x'], compiler: 'nvrtc 13.0' };
    const k = cacheKey(base);
    expect(k).toMatch(/^[0-9a-f]{64}$/);
    expect(cacheKey({ ...base })).toBe(k);
    for (const other of [{ source: 'b' }, { arch: 'sm_80' }, { options: ['-y'] }, { options: ['-x', ''] }, { compiler: 'nvrtc 12.8' }]) {
      expect(cacheKey({ ...base, ...other })).not.toBe(k);
    }
  });
  it('cache folder follows MOBA_CUDA_CACHE, then XDG_CACHE_HOME, then ~/.cache', () => {
    expect(cacheDir({ MOBA_CUDA_CACHE: '/c' }, '/home/u')).toBe('/c');
    expect(cacheDir({ XDG_CACHE_HOME: '/x' }, '/home/u')).toBe('/x/moba-ts/cuda');
    expect(cacheDir({}, '/home/u')).toBe('/home/u/.cache/moba-ts/cuda');
  });
  it('architecture from the compute capability', () => {
    expect(archOf(9, 0)).toBe('sm_90');
    expect(archOf(8, 6)).toBe('sm_86');
    expect(() => archOf(0, 0)).toThrow(MobaError);
  });
  it('NVRTC library candidates and include folder honour the environment', () => {
    const c = nvrtcCandidates({ MOBA_NVRTC_LIB: '/opt/nvrtc.so' });
    expect(c[0]).toBe('/opt/nvrtc.so');
    expect(c).toContain('libnvrtc.so.13');
    expect(c).toContain('/usr/local/cuda/targets/x86_64-linux/lib/libnvrtc.so');
    expect(new Set(c).size).toBe(c.length);
    expect(cudaIncludeDir({ MOBA_CUDA_INCLUDE: '/inc' })).toBe('/inc');
    expect(compileOptions('sm_90', '/inc')).toEqual(expect.arrayContaining(['--gpu-architecture=sm_90', '-I/inc']));
  });
  it('local includes are inlined once, CUDA headers are left to NVRTC', () => {
    const files: Record<string, string> = { 'a.cuh': '#pragma once\nint a;\n#include "b.cuh"', 'b.cuh': '#pragma once\nint b;' };
    const out = expandIncludes('#include "a.cuh"\n#include <cuda_fp16.h>\n#include "b.cuh"\nint main;', (n) => files[n]!);
    expect(out.match(/int b;/g)).toHaveLength(1);
    expect(out).toContain('#include <cuda_fp16.h>');
    expect(out).not.toContain('#pragma once');
    expect(out.indexOf('int a;')).toBeLessThan(out.indexOf('int main;'));
  });
  it('every kernel file assembles into one self-contained source with the entry points the backend launches', () => {
    const files = readdirSync(kernelsDir()).filter((f) => f.endsWith('.cu')).sort();
    expect(files).toEqual(['backward.cu', 'cache.cu', 'collect.cu', 'forward.cu', 'kconv.cu', 'route.cu']);
    const want: Record<string, string[]> = {
      'kconv.cu': ['kconv_forward', 'kconv_dz', 'kconv_dk', 'kconv_dw'], 'route.cu': ['route', 'centroid_split'], 'forward.cu': ['forward', 'forward_merge'],
      'backward.cu': ['delta', 'dkdv', 'dq', 'dq_merge'],
    };
    const tc: Record<string, string[]> = { 'forward.cu': ['forward_tc', 'forward_kv'], 'route.cu': ['route_tc', 'route_tcs'] };
    for (const f of files) {
      const src = kernelSource(f);
      expect(src).not.toMatch(/#include\s+"/);
      expect(src).toContain('namespace moba');
      for (const k of want[f] ?? []) expect(src).toContain(`${k}_##N(`);
      for (const k of tc[f] ?? []) expect(src).toContain(`${k}_d##D##_##N(`);
    }
    const bwd = kernelSource('backward.cu'); // dkdv_tc (4 warps) and dkdv_tc8 (8 warps, D = 128) for both 16-bit dtypes
    expect(bwd).toContain('dkdv_##TAG##_d##D##_##N(');
    for (const dt of ['f16, __half', 'bf16, __nv_bfloat16']) {
      for (const e of ['64, 4, tc)', '128, 4, tc)', '128, 8, tc8)']) expect(bwd).toContain(`BACKWARD_TC_ENTRIES(${dt}, ${e}`);
    }
    expect(kernelSource('route.cu')).toContain('extern "C" __global__ void centroids(');
    expect(bwd).toMatch(/__global__ void (__launch_bounds__\(256\) )?dkdv_meta\(/);
    for (const k of ['collect_count', 'collect_scan', 'collect_fill', 'collect_sort', 'collect_slot_of']) expect(kernelSource('collect.cu')).toMatch(new RegExp(`__global__ void (__launch_bounds__\\(\\d+\\) )?${k}\\(`));
    expect(() => kernelSource('missing.cu')).toThrow(/MOBA_CUDA_KERNELS/);
  });
  it('compileCached compiles once and then reads the cubin back from disk', () => {
    const dir = mkdtempSync(join(tmpdir(), 'moba-cuda-cache-'));
    let calls = 0;
    const compiler = { id: 'test', compile: (s: string) => { calls++; return { cubin: new TextEncoder().encode(`cubin of ${s}`), log: '' }; } };
    const a = compileCached(compiler, 'src', 'k.cu', 'sm_90', ['-o'], dir);
    const b = compileCached(compiler, 'src', 'k.cu', 'sm_90', ['-o'], dir);
    const c = compileCached(compiler, 'src', 'k.cu', 'sm_80', ['-o'], dir);
    expect([a.cached, b.cached, c.cached]).toEqual([false, true, false]);
    expect(calls).toBe(2);
    expect(new TextDecoder().decode(b.cubin)).toBe('cubin of src');
    expect(readdirSync(dir).filter((f) => f.endsWith('.cubin'))).toHaveLength(2);
    expect(readFileSync(join(dir, readdirSync(dir).find((f) => f.includes('sm_90'))!), 'utf8')).toBe('cubin of src');
  });
});

describe('kernel parameters', () => {
  it('each argument lands in its own little-endian 8-byte slot', () => {
    const view = new DataView(new ArrayBuffer(MAX_ARGS * SLOT_BYTES));
    packParams([ptr(0x1234_5678_9abc_def0n), i32(-7), f32(0.5), i64(2 ** 40 + 3)], view);
    expect(view.getBigUint64(0, true)).toBe(0x1234_5678_9abc_def0n);
    expect(view.getInt32(8, true)).toBe(-7);
    expect(view.getInt32(12, true)).toBe(0); // the rest of a slot is cleared
    expect(view.getFloat32(16, true)).toBe(0.5);
    expect(view.getBigInt64(24, true)).toBe(BigInt(2 ** 40 + 3));
    expect(() => packParams([i32(2 ** 31)], view)).toThrow(MobaError);
    expect(() => packParams(Array.from({ length: MAX_ARGS + 1 }, () => i32(0)), view)).toThrow(/arguments/);
  });
  it('through native memory: pointer i addresses slot i, as cuLaunchKernel reads them', () => {
    const koffi = loadKoffi();
    expect(koffi).not.toBeNull();
    const k = koffi!;
    const bytes = MAX_ARGS * SLOT_BYTES;
    const base = k.alloc('uint8_t', 2 * bytes) as bigint;
    try {
      const mem = k.view(base, 2 * bytes);
      writeSlotPointers(base, new DataView(mem, bytes));
      packParams([ptr(42n), i32(5), f32(-1.25)], new DataView(mem, 0, bytes));
      const pointers = new BigUint64Array(mem, bytes, MAX_ARGS);
      // read each argument back through its pointer, as the driver does
      expect(BigInt(k.decode(pointers[0]!, 'uint64_t') as number | bigint)).toBe(42n);
      expect(k.decode(pointers[1]!, 'int32_t')).toBe(5);
      expect(k.decode(pointers[2]!, 'float')).toBe(-1.25);
      expect(pointers[31]! - pointers[0]!).toBe(BigInt(31 * SLOT_BYTES));
    } finally {
      k.free(base);
    }
  });
  it('typed arrays pass to void * at their own offset and receive data in place (the cuMemcpy calling convention)', () => {
    const koffi = loadKoffi()!;
    const libc = koffi.load('libc.so.6');
    const memcpy = libc.func('void *memcpy(void *dst, const void *src, size_t n)');
    const dst = new Float32Array(8);
    const src = new Float32Array([1, 2, 3, 4]);
    memcpy(dst.subarray(2), src.subarray(1), 8);
    expect(Array.from(dst)).toEqual([0, 0, 2, 3, 0, 0, 0, 0]);
    const out = new BigUint64Array(1);
    memcpy(out, new BigUint64Array([0xdead_beef_0000_0001n]), 8);
    expect(out[0]).toBe(0xdead_beef_0000_0001n);
  });
});

describe('launch geometry', () => {
  it('route: one CTA per (row tile, head), centroid tile shrinks to fit 48 KiB', () => {
    const L = geo.routeLaunch(100, 16, 128, 8);
    expect(L.grid).toEqual([100, 16, 1]);
    expect(L.block).toEqual([128, 1, 1]);
    expect(L.ct).toBe(32);
    expect(L.shared).toBe(geo.routeShared(128, 8, 32));
    const big = geo.routeLaunch(1, 1, 256, 64);
    expect(big.ct).toBe(16);
    expect(big.shared).toBeLessThanOrEqual(geo.LIMITS.sharedDefault);
    expect(() => geo.routeLaunch(1, 1, 128, 65)).toThrow(/topk/);
    expect(() => geo.routeLaunch(1, 70000, 64, 8)).toThrow(MobaError); // grid.y limit
  });
  it('route_tc: 64-row tiles, f16/bf16 with D 64 or 128 only, lists within the opt-in shared memory', () => {
    const L = geo.routeTcLaunch(10, 16, 'bf16', 128, 8, true, 227 * 1024)!;
    expect(L.grid).toEqual([10, 16, 1]);
    expect(L.kernel).toBe('route_tcs'); // 7 slots: one register list per row
    expect(L.shared).toBe(2 * 2 * 32 * 136 * 2 + 64 * 33 * 4 + 128 * 4);
    const wide = geo.routeTcLaunch(10, 16, 'bf16', 128, 16, true, 227 * 1024)!; // 15 slots: per-lane shared lists
    expect(wide.kernel).toBe('route_tc');
    expect(wide.shared).toBe(2 * 32 * 136 * 2 + 15 * 2 * 128 * 8 + 2 * 128 * 4);
    expect(geo.routeTcLaunch(10, 16, 'bf16', 128, 8, false, 227 * 1024)!.kernel).toBe('route_tcs');
    expect(geo.routeTcLaunch(10, 16, 'bf16', 128, 9, false, 227 * 1024)!.kernel).toBe('route_tc');
    expect(geo.routeTcLaunch(10, 16, 'f32', 128, 8, true, 227 * 1024)).toBeNull();
    expect(geo.routeTcLaunch(10, 16, 'f16', 96, 8, true, 227 * 1024)).toBeNull();
    expect(geo.routeTcLaunch(10, 16, 'f16', 64, 64, false, 48 * 1024)).toBeNull();
    expect(Array.from(geo.routeTileBase(Int32Array.from([0, 64, 64, 200]), geo.K.routeTcRows))).toEqual([0, 1, 1, 4]);
  });
  it('partials: one launch up to 2 GiB, else kv heads within one 16-bit [T, Hq, D] tensor but at least 4 CTAs per SM', () => {
    // 2 × 8K tokens: 16 × 67 MB of partials, one launch
    expect(geo.dqPartPlan(16384, 16, 16, 128, 8, 1, 128, 132)).toEqual({ kvPerLaunch: 16, bytes: 16 * 16384 * 8 * 128 * 4 });
    // 2 × 32K tokens, 512 blocks: the budget allows 1 kv head (268 MB), 4 waves of 132 SMs need 2
    expect(geo.dqPartPlan(65536, 16, 16, 128, 8, 1, 512, 132)).toEqual({ kvPerLaunch: 2, bytes: 2 * 65536 * 8 * 128 * 4 });
    expect(geo.dqPartPlan(65536, 16, 16, 128, 8, 2, 512, 132).kvPerLaunch).toBe(1); // 2 key tiles per block: 1024 CTAs per head
    // 2 × 128K tokens, 2048 blocks: one kv head per launch (1 GiB of partials)
    expect(geo.dqPartPlan(262144, 16, 16, 128, 8, 1, 2048, 132).kvPerLaunch).toBe(1);
    expect(geo.dqPartPlan(16384, 16, 16, 128, 8, 1, 128, 132, 3).kvPerLaunch).toBe(3); // forced (testing)
    expect(geo.dqPartPlan(2 ** 21, 16, 1, 128, 64, 2, 16384, 132).kvPerLaunch).toBe(1);
    expect(geo.dqPartPlan(1024, 4, 4, 64, 8, 1, 8, 132).kvPerLaunch).toBe(4); // never above Hkv
    fc.assert(fc.property(fc.integer({ min: 1, max: 1 << 24 }), fc.integer({ min: 1, max: 64 }), fc.integer({ min: 1, max: 1 << 20 }), fc.integer({ min: 1, max: 1 << 16 }), (perKv, hkv, ctas, budget) => {
      const k = geo.kvPerLaunch(perKv, hkv, budget, ctas, 132);
      return k >= 1 && k <= hkv && (hkv * perKv <= 2 ** 31 ? k === hkv : k * perKv <= Math.max(budget, perKv) || k * ctas <= 4 * 132 + ctas);
    }));
  });
  it('forward_kv: a CTA per (key block, kv head) when the block fits in shared memory; partials within their budget', () => {
    const L = geo.forwardKvLaunch(2048, 128, 4, 128, 227 * 1024)!;
    expect(L.grid).toEqual([2048, 4, 1]);
    expect(L.shared).toBe(2 * 128 * 136 * 2 + 2 * (64 * 136 * 2 + 2 * 64 * 4));
    expect(geo.forwardKvLaunch(10, 1024, 1, 128, 227 * 1024)).toBeNull();
    const p = geo.fwdPartPlan(8192, 16, 16, 128, 8, 64, 132); // 1.1 GB of partials: one launch
    expect(p.kvPerLaunch).toBe(16);
    expect(p.mlOffset).toBe(16 * 8192 * 8 * 128 * 4);
    expect(p.bytes).toBe(16 * 8192 * 8 * 130 * 4);
    expect(geo.fwdPartPlan(524288, 16, 16, 128, 8, 4096, 132).kvPerLaunch).toBe(1);
  });
  it('route tiles and block bases per sequence', () => {
    const cu = Int32Array.from([0, 5, 5, 40]);
    expect(Array.from(geo.routeTileBase(cu))).toEqual([0, 1, 1, 4]);
    expect(Array.from(geo.blockBase(cu, 16))).toEqual([0, 1, 1, 4]);
    expect(Array.from(geo.blockBase(cu, 4))).toEqual([0, 2, 2, 11]);
  });
  it('warp-per-row kernels: 4 rows per CTA, grid-strided under the cap', () => {
    const f = geo.forwardLaunch(1000, 3, 64);
    expect(f.grid[0]).toBe(750);
    expect(f.block[0]).toBe(128);
    expect(f.shared).toBe(4 * 64 * 4);
    expect(geo.dqLaunch(10, 2, 100).shared).toBe(4 * 2 * 100 * 4);
    const huge = geo.forwardLaunch(1 << 22, 16, 128);
    expect(huge.grid[0]).toBe(geo.LIMITS.gridStrideCap);
    expect(() => geo.forwardLaunch(1, 1, 257)).toThrow(/head dim/);
  });
  it('dK/dV: key tiles of 32 keys (16 above D = 128), shared memory and registers within limits for every D', () => {
    fc.assert(fc.property(fc.integer({ min: 1, max: 256 }), fc.integer({ min: 1, max: 4096 }), (D, B) => {
      const L = geo.dkdvLaunch(2, 7, B, D);
      expect(L.kc).toBe(D <= 128 ? 32 : 16);
      expect(L.kc * D).toBeLessThanOrEqual(128 * geo.K.maxEpt);
      expect(L.shared).toBeLessThanOrEqual(geo.LIMITS.sharedDefault);
      expect(L.grid[0]).toBe(Math.min(2 * 7 * Math.ceil(B / L.kc), geo.LIMITS.gridStrideCap));
      const R = geo.routeLaunch(3, 2, D, 64);
      expect(R.shared).toBeLessThanOrEqual(geo.LIMITS.sharedDefault);
    }), { numRuns: 200 });
  });
  it('elementwise and collect launches', () => {
    expect(geo.elementwiseLaunch('x', 1000).grid[0]).toBe(4);
    expect(geo.elementwiseLaunch('x', 0).grid[0]).toBe(1);
    expect(geo.scanLaunch().block[0]).toBe(1024);
    expect(geo.sortLaunch(33).grid[0]).toBe(33);
    expect(geo.kconvDwLaunch(2048).block[0]).toBe(256);
    expect(geo.centroidsLaunch(10, 2048).grid).toEqual([10, 16, 1]);
  });
});

describe('tensor-core launch geometry', () => {
  it('takes f16/bf16 with D 64/128 when the opt-in shared memory allows, nothing else', () => {
    const h200 = 227 * 1024;
    for (const D of [64, 128]) for (const dt of ['f16', 'bf16']) expect(geo.tcEligible(dt, D, h200)).toBe(true);
    expect(geo.tcEligible('f32', 128, h200)).toBe(false);
    expect(geo.tcEligible('bf16', 96, h200)).toBe(false);
    expect(geo.tcEligible('bf16', 128, 48 * 1024)).toBe(false);
    expect(2 * geo.forwardTcShared(128, geo.TC.maxWindow)).toBeLessThanOrEqual(227 * 1024); // two CTAs per H200 SM
  });
  it('windows keep rows · topk within the list capacity and give every SM work', () => {
    expect(geo.windowRows(8, [32768, 32768], 16, 132)).toBe(2048);
    expect(geo.windowRows(64, [32768], 16, 132)).toBe(256);
    expect(geo.windowRows(8, [8192, 8192], 16, 132)).toBe(512); // 256 CTAs at 1024 rows < 2 per SM
    expect(geo.windowRows(8, [100], 1, 132)).toBe(128);
    fc.assert(fc.property(fc.integer({ min: 1, max: 64 }), fc.array(fc.integer({ min: 1, max: 1 << 20 }), { minLength: 1, maxLength: 4 }), (k, lens) => {
      const r = geo.windowRows(k, lens, 4, 132);
      return r * k <= geo.TC.listCap && r >= 64 && r <= geo.TC.maxWindow;
    }));
    expect(Array.from(geo.windowBase(Int32Array.from([0, 1000, 1000, 3100]), 1024))).toEqual([0, 1, 1, 4]);
  });
  it('dkdv_tc covers every key of a block (whole 128-key tiles for D 128, B >= 128); launches check the opt-in limit', () => {
    const L = geo.dkdvTcLaunch(100, 128, 4, 128, 227 * 1024);
    expect([L.kernel, L.nsub, L.kvTile, L.block[0]]).toEqual(['dkdv_tc8', 1, 128, 256]);
    expect(L.grid).toEqual([100, 4, 1]);
    expect(geo.dkdvTcLaunch(100, 256, 4, 128, 227 * 1024).nsub).toBe(2);
    const small = geo.dkdvTcLaunch(100, 128, 4, 128, geo.dkdvTcShared(128, 64)); // 128-key tiles do not fit
    expect([small.kernel, small.nsub, small.kvTile, small.block[0]]).toEqual(['dkdv_tc', 2, 64, 128]);
    expect(geo.dkdvTcLaunch(10, 100, 1, 64, 227 * 1024)).toMatchObject({ kernel: 'dkdv_tc', nsub: 2 });
    expect(geo.dkdvTcLaunch(10, 64, 1, 128, 227 * 1024)).toMatchObject({ kernel: 'dkdv_tc', nsub: 1 });
    expect(() => geo.windowLaunch('forward_tc', 10, 16, 200 * 1024, 99 * 1024)).toThrow(MobaError);
    expect(geo.windowLaunch('forward_tc', 10, 16, geo.forwardTcShared(128, 2048), 227 * 1024).grid).toEqual([10, 16, 1]);
  });
});

describe('device-memory planning', () => {
  const p = { T: 8192, Tk: 8192, Hq: 16, Hkv: 16, D: 128, dtype: 'bf16' as const, topk: 8, totalBlocks: 64, nseq: 2 };
  it('op bytes count outputs and scratch', () => {
    const b = opBytes(p);
    expect(b.forward).toBe(12 * 4 + 8192 * 16 * 128 * 2 + 8192 * 16 * 4);
    expect(b.backward).toBe(12 * 4 + 8192 * 16 * 4 + 3 * 8192 * 16 * 128 * 2);
    expect(b.route).toBe(15 * 4 + 2 * 64 * 16 * 128 * 4 + 8192 * 16 * 8 * 12 + (2 * 16 * 64 + 1) * 4);
    expect(opBytes({ ...p, dtype: 'f32' }).forward).toBeGreaterThan(b.forward);
  });
  it('E_MEMORY before allocating when the op does not fit; int32 routing limits', () => {
    expect(() => checkFits('forward()', 100, 1000, 500)).not.toThrow();
    try {
      checkFits('forward()', 600, 1000, 500);
      expect.unreachable();
    } catch (e) {
      expect((e as MobaError).code).toBe('E_MEMORY');
      expect((e as MobaError).message).toContain('forward()');
    }
    expect(reserveBytes(141e9)).toBe(Math.floor(141e9 * 0.02));
    expect(reserveBytes(1e9)).toBe(256 * 2 ** 20);
    expect(() => checkIndexLimits({ ...p, T: 2 ** 23, Hq: 16, topk: 8 })).not.toThrow();
    expect(() => checkIndexLimits({ ...p, T: 2 ** 25, Hq: 64, topk: 64 })).toThrow(/int32/);
  });
  it('workspace slots are reused for same-sized or smaller problems', () => {
    expect(slotAction(undefined, 10)).toBe('alloc');
    expect(slotAction(10, 10)).toBe('reuse');
    expect(slotAction(10, 4)).toBe('reuse');
    expect(slotAction(10, 11)).toBe('alloc');
  });
});

/** Every extern "C" entry point of a .cu source: its base name (kernels.ts) and parameter names in order. */
function entryPoints(src: string): { base: string; params: string[] }[] {
  const text = src.replace(/\\\n/g, ' ');
  const out: { base: string; params: string[] }[] = [];
  for (const m of text.matchAll(/extern "C" __global__ void (?:__launch_bounds__\([^)]*\) )?(\w+(?:##\w+)*)\(([^)]*)\)/g)) {
    const params = m[2]!.split(',').map((x) => x.trim().split(/[\s*]+/).pop()!);
    const name = m[1]!.replace(/_##N$/, '').replace(/_d##D##$/, '');
    for (const base of name === 'dkdv_##TAG##' ? ['dkdv_tc', 'dkdv_tc8'] : [name]) out.push({ base, params });
  }
  return out;
}

describe('kernel parameter lists (kernels.ts)', () => {
  it('mirror every entry point of the .cu sources, in order, and name no kernel that does not exist', () => {
    const seen = new Set<string>();
    for (const f of KERNEL_FILES) {
      for (const e of entryPoints(kernelSource(f))) {
        expect(KERNEL_PARAMS[e.base], `${f}: ${e.base}`).toBeDefined();
        expect(KERNEL_PARAMS[e.base]!.file).toBe(f);
        expect([...KERNEL_PARAMS[e.base]!.params], `${f}: ${e.base}`).toEqual(e.params);
        seen.add(e.base);
      }
    }
    expect([...seen].sort()).toEqual(Object.keys(KERNEL_PARAMS).sort());
  });
  it('base names strip the head-dim and dtype suffixes', () => {
    expect(kernelBase('dkdv_tc8_d128_bf16')).toBe('dkdv_tc8');
    expect(kernelBase('forward_kv_d64_f16')).toBe('forward_kv');
    expect(kernelBase('route_f32')).toBe('route');
    expect(kernelBase('centroids')).toBe('centroids');
    expect(kernelBase('collect_slot_of')).toBe('collect_slot_of');
  });
  it('a launch orders named arguments by the signature and throws on a missing or extra name', () => {
    const args = { a: ptr(1n), n: i32(5) };
    expect(orderArgs('collect.cu', 'collect_scan', { n: args.n, a: args.a })).toEqual([args.a, args.n]);
    expect(() => orderArgs('collect.cu', 'collect_scan', { a: args.a })).toThrow(/missing argument\(s\) n/);
    expect(() => orderArgs('collect.cu', 'collect_scan', { ...args, m: i32(1) })).toThrow(/unknown argument\(s\) m/);
    expect(() => orderArgs('route.cu', 'collect_scan', args)).toThrow(/no parameter list/);
    expect(() => orderArgs('collect.cu', 'collect_nothing', args)).toThrow(/no parameter list/);
  });
});

describe('availability', () => {
  it('isAvailable never throws and agrees with unavailableReason', () => {
    const reason = unavailableReason();
    expect(isAvailable()).toBe(reason === null);
    if (reason !== null) expect(reason.length).toBeGreaterThan(0);
  });
  it('koffi is installed as a dependency', () => {
    expect(() => createRequire(import.meta.url)('koffi')).not.toThrow();
  });
});
