/**
 * Compute pipelines, cached per device by shader name, entry point and override constants; compile errors
 * become E_DEVICE with the compiler's messages.
 */
/// <reference types="@webgpu/types" />
import { MobaError } from '@moba/core';

const pipelineCache = new WeakMap<GPUDevice, Map<string, Promise<GPUComputePipeline>>>();

/** A WGSL module with its bindings in order: `uniform`, `read` (read-only storage) or `rw` (storage). */
export interface ShaderSpec {
  readonly name: string;
  readonly code: string;
  readonly bindings: readonly ('uniform' | 'read' | 'rw')[];
}

/**
 * A compute pipeline for `entry` of a shader, cached per device. Every entry point of a shader shares one
 * explicit layout, `bindings[i]` being binding i, so a launcher binds the same list for all of them.
 * A shader that fails to compile gives E_DEVICE with the compiler's message (and is not cached).
 */
export async function compilePipeline(dev: GPUDevice, shader: ShaderSpec, entry: string, constants: Record<string, number> = {}): Promise<GPUComputePipeline> {
  const key = `${shader.name}:${entry}:${Object.entries(constants).map(([k, v]) => `${k}=${v}`).join(',')}`;
  let cache = pipelineCache.get(dev);
  if (!cache) pipelineCache.set(dev, (cache = new Map()));
  let p = cache.get(key);
  if (!p) {
    dev.pushErrorScope('validation'); // compile errors come back through the async pipeline's rejection
    const module = dev.createShaderModule({ label: shader.name, code: shader.code });
    const entries: GPUBindGroupLayoutEntry[] = shader.bindings.map((kind, binding) => ({
      binding, visibility: 0x4, // GPUShaderStage.COMPUTE
      buffer: { type: kind === 'uniform' ? 'uniform' : kind === 'read' ? 'read-only-storage' : 'storage' },
    }));
    const bgl = dev.createBindGroupLayout({ label: `${shader.name} layout`, entries });
    const layout = dev.createPipelineLayout({ label: `${shader.name} pipeline layout`, bindGroupLayouts: [bgl] });
    p = Promise.resolve(dev.createComputePipeline({ label: key, layout, compute: { module, entryPoint: entry, constants } }));
    const scope = dev.popErrorScope();
    cache.set(key, p);
    const err = await scope;
    if (err) {
      cache.delete(key);
      p.catch(() => undefined);
      const info = await module.getCompilationInfo();
      const msgs = info.messages.map((m) => `${m.lineNum}:${m.linePos} ${m.message}`).join('; ');
      throw new MobaError('E_DEVICE', `WebGPU shader ${key} failed: ${msgs || err.message}`, 'device');
    }
  }
  try {
    return await p;
  } catch (e) {
    cache.delete(key);
    throw new MobaError('E_DEVICE', `WebGPU pipeline ${key} failed: ${(e as Error).message}`, 'device');
  }
}
