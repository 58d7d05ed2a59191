/**
 * The device gate of the WebGPU test files: why WebGPU cannot run here, or null. A backend that cannot open
 * (`E_DEVICE`: no adapter; `E_UNSUPPORTED`: no WebGPU at all, e.g. the `webgpu` package missing in Node) gives a
 * reason to skip with, unless MOBA_REQUIRE names webgpu: then it is a failure. Any other error is a real one.
 */
import { MobaError } from '@moba/core';
import { isRequired } from '@moba/testkit/vitest';
import { createWebGpuBackend } from '../src/index.js';

/** The skip reason for an error thrown while opening a backend (rethrows what is not "unavailable"). */
export function unavailableBecause(e: unknown): string {
  if (!(e instanceof MobaError && (e.code === 'E_DEVICE' || e.code === 'E_UNSUPPORTED'))) throw e;
  if (isRequired('webgpu')) throw new Error(`webgpu is required (MOBA_REQUIRE) but unavailable: ${e.message}`);
  return e.message;
}

/** Opens and destroys one backend: null when WebGPU runs here, else the reason to skip. */
export async function webgpuUnavailable(): Promise<string | null> {
  try {
    await (await createWebGpuBackend()).destroy();
    return null;
  } catch (e) {
    return unavailableBecause(e);
  }
}
