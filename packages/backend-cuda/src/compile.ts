/**
 * Kernel sources and compiled modules: reads `kernels/<file>.cu`, inlines its local includes (NVRTC gets
 * one self-contained source), and compiles it with NVRTC for the device's architecture, caching the cubin
 * on disk keyed by a hash of the source, the architecture, the options and the NVRTC version.
 */
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { MobaError } from '@moba/core';

/** Folder of the `.cu` files: `MOBA_CUDA_KERNELS`, else `../kernels/` beside this module (src/, dist/ or a bundle). */
export function kernelsDir(env: Record<string, string | undefined> = process.env): string {
  if (env.MOBA_CUDA_KERNELS) return env.MOBA_CUDA_KERNELS;
  return fileURLToPath(new URL('../kernels/', import.meta.url));
}

/** Where cubins are cached: `MOBA_CUDA_CACHE`, else `$XDG_CACHE_HOME/moba-ts/cuda`, else `~/.cache/moba-ts/cuda`. */
export function cacheDir(env: Record<string, string | undefined> = process.env, home: string = homedir()): string {
  if (env.MOBA_CUDA_CACHE) return env.MOBA_CUDA_CACHE;
  const base = env.XDG_CACHE_HOME || join(home, '.cache');
  return join(base, 'moba-ts', 'cuda');
}

/** The cache key of one compilation: sha256 over every input that changes the cubin. */
export function cacheKey(parts: { source: string; arch: string; options: readonly string[]; compiler: string }): string {
  const h = createHash('sha256');
  h.update('moba-ts cuda v1\0');
  h.update(parts.compiler).update('\0').update(parts.arch).update('\0').update(parts.options.join('\u0001')).update('\0').update(parts.source);
  return h.digest('hex');
}

/** `sm_XY` from a compute capability. */
export function archOf(major: number, minor: number): string {
  if (!Number.isInteger(major) || !Number.isInteger(minor) || major < 1 || minor < 0) {
    throw new MobaError('E_DEVICE', `compute capability ${major}.${minor} is invalid`, 'cuda');
  }
  return `sm_${major}${minor}`;
}

/**
 * Inlines `#include "name"` lines (local headers, each at most once; `#pragma once` dropped) using `read`;
 * `<...>` includes (CUDA's own headers) are left for NVRTC's `-I`.
 */
export function expandIncludes(source: string, read: (name: string) => string, seen: Set<string> = new Set()): string {
  return source.split('\n').map((line) => {
    const m = /^\s*#\s*include\s+"([^"]+)"\s*$/.exec(line);
    if (!m) return /^\s*#\s*pragma\s+once\s*$/.test(line) ? '' : line;
    const name = m[1]!;
    if (seen.has(name)) return `// (${name} already included)`;
    seen.add(name);
    return `// ---- begin ${name} ----\n${expandIncludes(read(name), read, seen)}\n// ---- end ${name} ----`;
  }).join('\n');
}

/** The self-contained source of `kernels/<file>`. */
export function kernelSource(file: string, dir: string = kernelsDir()): string {
  const read = (name: string): string => {
    const p = join(dir, name);
    try {
      return readFileSync(p, 'utf8');
    } catch (e) {
      throw new MobaError('E_DEVICE', `CUDA kernel source ${p} cannot be read (${e instanceof Error ? e.message : String(e)}); set MOBA_CUDA_KERNELS to the kernels folder`, 'cuda');
    }
  };
  return `#line 1 "${file}"\n${expandIncludes(read(file), read)}`;
}

/** NVRTC options for one architecture (`sm_90a` on the sm90 path, path.ts) and the path's `-D` defines. */
export function compileOptions(arch: string, includeDir: string, defines: readonly string[] = []): string[] {
  return [`--gpu-architecture=${arch}`, '--std=c++17', `-I${includeDir}`, '-DMOBA_NVRTC=1', ...defines];
}

export interface Compiler {
  /** Identifies the compiler (NVRTC version) in cache keys. */
  readonly id: string;
  compile(source: string, name: string, options: readonly string[]): { cubin: Uint8Array; log: string };
}

/** Compiles through `compiler`, or returns the cached cubin of an identical earlier compilation. */
export function compileCached(compiler: Compiler, source: string, name: string, arch: string, options: readonly string[], dir: string | null = cacheDir()): { cubin: Uint8Array; cached: boolean; key: string } {
  const key = cacheKey({ source, arch, options, compiler: compiler.id });
  const file = dir ? join(dir, `${name.replace(/[^\w.-]/g, '_')}-${arch}-${key.slice(0, 24)}.cubin`) : null;
  if (file && existsSync(file)) {
    try {
      return { cubin: new Uint8Array(readFileSync(file)), cached: true, key };
    } catch {
      /* unreadable cache entry: compile again */
    }
  }
  const { cubin } = compiler.compile(source, name, options);
  if (file) {
    try {
      mkdirSync(dirname(file), { recursive: true });
      const tmp = `${file}.${process.pid}.tmp`;
      writeFileSync(tmp, cubin);
      renameSync(tmp, file); // atomic: concurrent processes never read a half-written cubin
    } catch {
      /* a read-only cache is not an error */
    }
  }
  return { cubin, cached: false, key };
}
