/**
 * The backend of a WebGPU cache test file: opened before its tests, destroyed after them; `unavailable` is why
 * WebGPU cannot run here (the tests skip), or null.
 */
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
