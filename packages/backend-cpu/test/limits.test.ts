/**
 * Limits that depend on the host (issue #11): the memory budget (`memoryBytes` option, default from the machine's
 * memory and the cgroup limit, parsed by pure functions on strings), the thread cap (4 per available core), and
 * memoryStats on the CPU backend.
 */
import os from 'node:os';
import { MobaError, hostTensor } from '@moba/core';
import { describe, expect, it } from 'vitest';
import { cgroupMemoryLimit, defaultMemoryBytes, parseCgroupLimit } from '../src/host.js';
import { host } from '../src/host-node.js';
import { createCpuBackend } from '../src/index.js';

const GIB = 2 ** 30;

function error(fn: () => unknown): MobaError {
  try { fn(); } catch (e) { if (e instanceof MobaError) return e; throw e; }
  throw new Error('did not throw');
}

describe('cgroup memory limits (pure)', () => {
  it('parses v2 memory.max and v1 memory.limit_in_bytes; max, unlimited, empty and garbage mean none', () => {
    expect(parseCgroupLimit('8589934592\n')).toBe(8 * GIB);
    expect(parseCgroupLimit('max\n')).toBeNull();
    expect(parseCgroupLimit('9223372036854771712\n')).toBeNull(); // v1 "unlimited"
    expect(parseCgroupLimit('4611686018427387904')).toBeNull(); // 2^62: treated as unlimited
    for (const bad of [null, '', '0', '-1', '12 MiB', '1e9']) expect(parseCgroupLimit(bad)).toBeNull();
  });

  it('walks the process cgroup and its parents (v2 and v1) and takes the smallest limit', () => {
    const files: Record<string, string> = {
      '/sys/fs/cgroup/memory.max': 'max\n',
      '/sys/fs/cgroup/a/memory.max': '6442450944\n',
      '/sys/fs/cgroup/a/b/memory.max': 'max\n',
      '/sys/fs/cgroup/memory/memory.limit_in_bytes': '9223372036854771712\n',
      '/sys/fs/cgroup/memory/job/memory.limit_in_bytes': '2147483648\n',
    };
    const read = (p: string): string | null => files[p] ?? null;
    expect(cgroupMemoryLimit('0::/a/b\n', read)).toBe(6 * GIB); // the parent's limit binds its children
    expect(cgroupMemoryLimit('0::/\n', read)).toBeNull();
    // v1 (this sandbox's layout: 4:memory:/path, plus an empty v2 line)
    expect(cgroupMemoryLimit('9:name=systemd:/\n4:memory:/job\n1:cpu:/\n0::/\n', read)).toBe(2 * GIB);
    expect(cgroupMemoryLimit('5:cpuacct,memory:/job/x\n', read)).toBe(2 * GIB); // co-mounted controllers; x has no file
    expect(cgroupMemoryLimit('0::/a\n4:memory:/job\n', read)).toBe(2 * GIB); // both: the smaller
    // no /proc/self/cgroup: the two mount points
    expect(cgroupMemoryLimit(null, (p) => (p === '/sys/fs/cgroup/memory.max' ? '3221225472' : null))).toBe(3 * GIB);
    expect(cgroupMemoryLimit(null, () => null)).toBeNull();
  });

  it('the default budget is half of the smaller of total memory and the cgroup limit', () => {
    expect(defaultMemoryBytes(64 * GIB, null)).toBe(32 * GIB);
    expect(defaultMemoryBytes(64 * GIB, 8 * GIB)).toBe(4 * GIB);
    expect(defaultMemoryBytes(8 * GIB, 64 * GIB)).toBe(4 * GIB);
    expect(defaultMemoryBytes(2 ** 30 + 1, null)).toBe(2 ** 29);
  });
});

describe('CPU backend options that depend on the host', () => {
  it('memoryBytes: an integer >= 1 MiB sets caps.memoryBytes; the default respects the cgroup limit', async () => {
    const b = createCpuBackend({ threads: 1, memoryBytes: 3 * 2 ** 20 });
    expect(b.caps.memoryBytes).toBe(3 * 2 ** 20);
    await b.destroy();
    for (const bad of [0, 2 ** 20 - 1, 2 ** 20 + 0.5, -1, NaN, Infinity, '1GiB']) {
      const e = error(() => createCpuBackend({ threads: 1, memoryBytes: bad as number }));
      expect([e.code, e.param]).toEqual(['E_RANGE', 'memoryBytes']);
      expect(e.message).toMatch(/memoryBytes = .* must be an integer >= 1048576/);
    }
    const d = createCpuBackend({ threads: 1 });
    expect(d.caps.memoryBytes).toBe(defaultMemoryBytes(os.totalmem(), host.memoryLimit()));
    await d.destroy();
  });

  it('a small memoryBytes turns a problem that fits the host into E_MEMORY before allocating', async () => {
    const b = createCpuBackend({ threads: 1, memoryBytes: 2 ** 20 });
    const T = 4096;
    const q = await b.upload(hostTensor('f32', [T, 4, 16]));
    await expect(b.route(q, q, { cuSeqlens: Int32Array.of(0, T) }, { blockSize: 64, topk: 4 })).rejects.toMatchObject({ code: 'E_MEMORY' });
    await b.destroy();
  });

  it('threads: at most 4 per available core, E_RANGE naming the cap', async () => {
    const cores = host.workers!.defaultCount();
    const e = error(() => createCpuBackend({ threads: 4 * cores + 1 }));
    expect([e.code, e.param]).toEqual(['E_RANGE', 'threads']);
    expect(e.message).toContain(`must be an integer in [1, ${4 * cores}] (at most 4 per available core; this host has ${cores})`);
    expect(error(() => createCpuBackend({ threads: 64 * cores })).code).toBe('E_RANGE');
    expect(error(() => createCpuBackend({ threads: 0 })).code).toBe('E_RANGE');
    const b = createCpuBackend({ threads: 4 * cores }); // the cap itself is allowed (workers start lazily: none here)
    expect(b.threads).toBe(4 * cores);
    await b.destroy();
    const d = createCpuBackend();
    expect(d.threads).toBe(Math.min(16, cores));
    await d.destroy();
  });

  it('memoryStats: uploads and routings counted, the peak bounds a call from above, zeros after destroy', async () => {
    const b = createCpuBackend({ threads: 1 });
    const T = 64;
    const q = await b.upload(hostTensor('f32', [T, 2, 8]));
    expect(b.memoryStats()).toMatchObject({ liveBytes: T * 16 * 4, liveTensors: 1, scratchBytes: 0, pooledBytes: 0 });
    const layout = { cuSeqlens: Int32Array.of(0, T) };
    const r = await b.route(q, q, layout, { blockSize: 8, topk: 2 });
    const f = await b.forward(q, q, q, r, layout, { blockSize: 8, topk: 2 });
    const s = b.memoryStats();
    expect(s.liveRoutings).toBe(1);
    expect(s.liveTensors).toBe(3);
    expect(s.liveBytes).toBeGreaterThan(T * 16 * 4 * 2 + T * 2 * 4);
    expect(s.peakBytes).toBeGreaterThan(s.liveBytes); // the head-major working copies of forward
    b.dispose(q, r, f.out, f.lse);
    expect(b.memoryStats()).toMatchObject({ liveBytes: 0, liveTensors: 0, liveRoutings: 0, peakBytes: s.peakBytes });
    await b.destroy();
    expect(b.memoryStats().peakBytes).toBe(0);
  });
});
