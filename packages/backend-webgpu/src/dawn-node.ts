/**
 * Dawn for Node (`#dawn` under the `node` condition): the optional `webgpu` package, imported on first use.
 * Browsers get dawn-web.ts instead, so a page bundle never sees the `webgpu` package (nor its node:path,
 * node:url and module imports).
 */
/// <reference types="@webgpu/types" />
import type { DawnLoad } from './dawn.js';

/** The package that provides WebGPU in Node (an optional peer dependency of @moba/backend-webgpu). */
export const DAWN_PACKAGE = 'webgpu';

export async function loadDawn(): Promise<DawnLoad> {
  try {
    const mod = (await import('webgpu')) as { create(opts: string[]): GPU };
    // unquantized timestamps: they serve only the `profile` option's per-kernel times
    return { gpu: mod.create(['disable-dawn-features=timestamp_quantization']), reason: null };
  } catch (e) {
    const err = e as { code?: string; message?: string };
    const msg = err?.message ?? String(e);
    const missing = (err?.code === 'ERR_MODULE_NOT_FOUND' || err?.code === 'MODULE_NOT_FOUND') && msg.includes(`'${DAWN_PACKAGE}'`);
    const reason = missing
      ? `the \`${DAWN_PACKAGE}\` package (Dawn, WebGPU for Node) is not installed: npm install ${DAWN_PACKAGE}`
      : `the \`${DAWN_PACKAGE}\` package (Dawn) failed to load: ${msg.split('\n')[0]}`;
    return { gpu: null, reason };
  }
}
