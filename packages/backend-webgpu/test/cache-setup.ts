/**
 * The backend of a WebGPU cache test file: opened before its tests, destroyed after them; `unavailable` is why
 * WebGPU cannot run here (the tests skip), or null.
 */
import type { HostTensor, KVCache } from '@moba/core';
import { afterAll, beforeAll } from 'vitest';
import { type WebGpuBackend, createWebGpuBackend } from '../src/index.js';
import { unavailableBecause } from './gate.js';

export interface TestBackend {
  readonly backend: WebGpuBackend;
  readonly unavailable: string | null;
}

/** Registers the file's beforeAll / afterAll; read the fields inside the tests. */
export function testBackend(): TestBackend {
  let backend: WebGpuBackend | null = null;
  let unavailable: string | null = null;
  beforeAll(async () => {
    try {
      backend = await createWebGpuBackend();
    } catch (e) {
      unavailable = unavailableBecause(e);
    }
  });
  afterAll(async () => {
    await backend?.destroy();
  });
  return {
    get backend() { return backend!; },
    get unavailable() { return unavailable; },
  };
}

/** Row offsets of consecutive query groups of the given lengths: [0, nq0, nq0 + nq1, ...]. */
export function cuOf(nq: readonly number[]): Int32Array {
  const cu = new Int32Array(nq.length + 1);
  nq.forEach((n, i) => { cu[i + 1] = cu[i]! + n; });
  return cu;
}

/** One cache attend from host queries: uploads q, attends the named sequences, downloads out and lse, frees the device tensors. */
export async function attendOnce(b: WebGpuBackend, cache: KVCache, ids: readonly number[], q: HostTensor, nq: readonly number[], cfg: { topk: number; causal: boolean }): Promise<{ out: HostTensor; lse: HostTensor }> {
  const qd = await b.upload(q);
  const r = await cache.attend(ids, qd, cuOf(nq), cfg);
  const got = { out: await b.download(r.out), lse: await b.download(r.lse) };
  b.dispose(qd, r.out, r.lse);
  return got;
}
