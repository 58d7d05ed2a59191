/**
 * Where WebGPU comes from and what adapter it offers: `navigator.gpu` in browsers, Dawn (the optional `webgpu`
 * package, loaded through `#dawn`) in Node, and whether an adapter is a software rasteriser (llvmpipe,
 * lavapipe, SwiftShader, WARP) rather than hardware.
 */
/// <reference types="@webgpu/types" />

/** The outcome of loading Dawn: the GPU object, or why there is none. */
export type DawnLoad = { gpu: GPU; reason: null } | { gpu: null; reason: string };

/** What `probeAdapter()` found: an adapter (its name, whether it is software) or why there is none. */
export interface AdapterProbe {
  readonly available: boolean;
  /** Why no adapter can be obtained (missing `webgpu` package, no navigator.gpu, requestAdapter() gave null). */
  readonly reason?: string;
  /** Human-readable adapter name, e.g. "llvmpipe: Mesa 25.0.7 (LLVM 15.0.6) — software". */
  readonly adapter?: string;
  /** True for a software adapter (CPU rasteriser): llvmpipe, lavapipe, SwiftShader, WARP, or `isFallbackAdapter`. */
  readonly software?: boolean;
}

const SOFTWARE = /llvmpipe|lavapipe|softpipe|swiftshader|\bsoftware\b|\bwarp\b|basic render/i;

interface InfoLike {
  vendor?: string;
  architecture?: string;
  device?: string;
  description?: string;
  isFallbackAdapter?: boolean;
}

/** Describes an adapter from its GPUAdapterInfo (and the older `adapter.isFallbackAdapter`). */
export function describeAdapter(adapter: GPUAdapter): { adapter: string; software: boolean } {
  const info = ((adapter as { info?: InfoLike }).info ?? {}) as InfoLike;
  const fields = [info.vendor, info.architecture, info.device, info.description].filter((s): s is string => typeof s === 'string' && s.length > 0);
  const fallback = info.isFallbackAdapter === true || (adapter as { isFallbackAdapter?: boolean }).isFallbackAdapter === true;
  const software = fallback || fields.some((f) => SOFTWARE.test(f));
  const name = info.description || [info.vendor, info.architecture, info.device].filter(Boolean).join(' ') || 'unknown adapter';
  return { adapter: software ? `${name} — software` : name, software };
}
