/**
 * The host everywhere but Node (`#host` under `default`): browsers and web workers. No Node built-ins, no
 * SharedArrayBuffer: kernels run in the calling thread. Memory comes from `navigator.deviceMemory` where the
 * browser tells it (Chromium, in GiB, rounded), else 4 GiB is assumed; there are no cgroups to read.
 */
import type { Host } from './host.js';

const GIB = 2 ** 30;

export const host: Host = {
  totalMemory: () => {
    const nav = (globalThis as { navigator?: { deviceMemory?: unknown } }).navigator;
    const gib = nav?.deviceMemory;
    return (typeof gib === 'number' && gib > 0 ? gib : 4) * GIB;
  },
  memoryLimit: () => null,
  workers: null,
};
