/**
 * What the CPU backend needs from the JavaScript runtime it runs in. The package's `#host` import resolves
 * (package.json `imports`) to `host-node.ts` under the `node` condition and to `host-web.ts` everywhere else
 * (browsers, web workers), so a browser bundle of this package holds no Node built-in at all. The limits that
 * follow from the host (the default `caps.memoryBytes`, the cgroup limit, the thread cap) are pure functions here.
 */
import type { StartWorker } from './pool.js';

export interface Host {
  /** Bytes of memory of the machine. */
  totalMemory(): number;
  /** The memory limit of the process's control groups in bytes, or null when there is none (or no cgroups). */
  memoryLimit(): number | null;
  /**
   * Worker threads for large jobs, or null where kernels run in the calling thread only. `load()` brings in
   * the worker implementation (a dynamic import, on the first job that uses workers) and gives its starter.
   */
  readonly workers: {
    /** The default thread count: the available cores. */
    defaultCount(): number;
    load(): Promise<StartWorker>;
  } | null;
}

/** Smallest `memoryBytes` option: 1 MiB. */
export const MIN_MEMORY_BYTES = 2 ** 20;

/** Most worker threads per available core (`threads` above it is E_RANGE). */
export const THREADS_PER_CORE = 4;

/** The default `caps.memoryBytes`: half of the machine's memory or of the cgroup limit, whichever is smaller. */
export function defaultMemoryBytes(total: number, limit: number | null): number {
  return Math.floor(Math.min(total, limit ?? Infinity) / 2);
}

/**
 * A cgroup memory limit file's value: bytes, or null for no limit — v2 `max`, v1's "unlimited" (2^63 rounded
 * down to a page, any value ≥ 2^62), an empty, unreadable (null) or malformed file, or 0.
 */
export function parseCgroupLimit(text: string | null): number | null {
  const s = text?.trim() ?? '';
  if (!/^\d+$/.test(s)) return null; // 'max', '', garbage
  const n = Number(s);
  return n > 0 && n < 2 ** 62 ? n : null;
}

/**
 * The smallest memory limit over the process's cgroups and their ancestors: for each line of
 * `/proc/self/cgroup` (`procSelfCgroup`), v2 (`0::/path`) reads `/sys/fs/cgroup/<path>/memory.max` and v1 (a
 * line whose controllers include `memory`) reads `/sys/fs/cgroup/memory/<path>/memory.limit_in_bytes`, then the
 * same file of each parent up to the mount point (a container sees its own limit there). `read` gives a file's
 * text or null; without `/proc/self/cgroup` the two mount points are read. Null when no file gives a limit.
 */
export function cgroupMemoryLimit(procSelfCgroup: string | null, read: (path: string) => string | null): number | null {
  const files: string[] = [];
  for (const line of (procSelfCgroup ?? '').split('\n')) {
    const m = /^\d+:([^:]*):(\/.*)$/.exec(line.trim());
    if (!m) continue;
    if (m[1] === '') files.push(...upward('/sys/fs/cgroup', m[2]!, 'memory.max'));
    else if (m[1]!.split(',').includes('memory')) files.push(...upward('/sys/fs/cgroup/memory', m[2]!, 'memory.limit_in_bytes'));
  }
  if (files.length === 0) files.push('/sys/fs/cgroup/memory.max', '/sys/fs/cgroup/memory/memory.limit_in_bytes');
  let min: number | null = null;
  for (const f of files) {
    const v = parseCgroupLimit(read(f));
    if (v !== null && (min === null || v < min)) min = v;
  }
  return min;
}

/** `root/a/b/file`, `root/a/file`, `root/file` for the cgroup path `/a/b`. */
function upward(root: string, path: string, file: string): string[] {
  const parts = path.split('/').filter((p) => p.length > 0 && p !== '..' && p !== '.');
  const out: string[] = [];
  for (let n = parts.length; n >= 0; n--) out.push([root, ...parts.slice(0, n), file].join('/'));
  return out;
}
