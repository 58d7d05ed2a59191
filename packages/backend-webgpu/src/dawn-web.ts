/**
 * `#dawn` everywhere but Node (browsers, web workers): there is no Dawn to load, WebGPU is `navigator.gpu`
 * or nothing. Keeps the `webgpu` package out of every page bundle.
 */
import type { DawnLoad } from './dawn.js';

export async function loadDawn(): Promise<DawnLoad> {
  return { gpu: null, reason: 'this browser has no WebGPU (navigator.gpu is missing)' };
}
