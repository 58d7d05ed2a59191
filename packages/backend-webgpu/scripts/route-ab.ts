/**
 * A/B of the two routing top-k kernels (tuning.routeKernel 'split' and 'owner') on one device, peers.md
 * configuration (batch 2, ROUTE_AB_H = 16 heads, D 128, bf16 inputs, B 128, topk ROUTE_AB_K = 8, causal) at
 * ROUTE_AB_SIZES tokens per sequence (default 32768,65536): GPU ms of `topk`/`topkSplit` and `centroids`
 * (timestamp queries), wall ms of the whole route op (to queue completion), median of ROUTE_AB_REPS (5) after a
 * warm-up, and whether the two kernels' indices are bitwise equal. Bundle like gpu-check (scripts/bundle.sh):
 *   npx -y esbuild@0.28 packages/backend-webgpu/scripts/route-ab.ts --bundle --platform=node --format=esm \
 *     --external:webgpu --conditions=@moba/source --outfile=.device/webgpu/route-ab.mjs \
 *     --banner:js="import { createRequire as __cr } from 'node:module'; const require = __cr(import.meta.url);"
 * Local (lavapipe): node --conditions=@moba/source --import tsx packages/backend-webgpu/scripts/route-ab.ts
 */
import { type DeviceTensor, hostTensor } from '@moba/core';
import { type RouteKernel, type WebGpuBackend, createWebGpuBackend } from '../src/index.js';

const log = (s: string): void => void process.stdout.write(`${s}\n`);
const env = (name: string, dflt: string): string => process.env[name] ?? dflt;
const sizes = env('ROUTE_AB_SIZES', '32768,65536').split(',').map(Number);
const H = Number(env('ROUTE_AB_H', '16'));
const D = Number(env('ROUTE_AB_D', '128'));
const reps = Number(env('ROUTE_AB_REPS', '5'));
const cfg = { blockSize: Number(env('ROUTE_AB_B', '128')), topk: Number(env('ROUTE_AB_K', '8')), causal: env('ROUTE_AB_CAUSAL', '1') === '1' };
const memoryBytes = Number(env('ROUTE_AB_MEMORY_GB', '96')) * 2 ** 30;
const kinds: RouteKernel[] = ['split', 'owner'];
// ROUTE_AB_WGS: a smaller workgroup-memory budget (e.g. 32768: the split kernel stages Q with C instead of keeping it)
const tuning = process.env.ROUTE_AB_WGS ? { workgroupStorage: Number(process.env.ROUTE_AB_WGS) } : {};

/** Random bf16 bits, |x| in [2⁻⁸, 2), either sign (xorshift: fast enough for 2³⁰ values). */
function randomBf16(n: number, seed: number): Uint16Array {
  const out = new Uint16Array(n);
  let s = seed | 1;
  for (let i = 0; i < n; i++) {
    s ^= s << 13; s ^= s >>> 17; s ^= s << 5;
    out[i] = ((s >>> 16) & 0x8000) | ((119 + ((s >>> 7) & 7)) << 7) | (s & 0x7f);
  }
  return out;
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[xs.length >> 1]!;

const first = await createWebGpuBackend({ profile: true, memoryBytes, tuning: { ...tuning, routeKernel: kinds[0] } });
const backends: WebGpuBackend[] = [first, await createWebGpuBackend({ device: first.device, profile: true, memoryBytes, tuning: { ...tuning, routeKernel: kinds[1] } })];
const device = first.device;
log(`route A/B: batch 2, H ${H}, D ${D}, bf16, ${JSON.stringify(cfg)}, ${JSON.stringify(tuning)}, median of ${reps}`);
log('| N | kernel | topk GPU ms | centroids GPU ms | route wall ms | indices equal |');
log('|---|---|---|---|---|---|');
for (const N of sizes) {
  const T = 2 * N;
  const layout = { cuSeqlens: Int32Array.from([0, N, T]) };
  const qh = hostTensor('bf16', [T, H, D], randomBf16(T * H * D, N));
  const kh = hostTensor('bf16', [T, H, D], randomBf16(T * H * D, N + 7));
  const results: Int32Array[] = [];
  for (const [i, b] of backends.entries()) {
    let q: DeviceTensor | null = null;
    let k: DeviceTensor | null = null;
    try {
      q = await b.upload(qh);
      k = await b.upload(kh);
      let r = await b.route(q, k, layout, cfg); // warm-up: compiles
      const topk: number[] = [], cent: number[] = [], wall: number[] = [];
      for (let rep = 0; rep < reps; rep++) {
        b.dispose(r);
        b.clearTimings();
        await device.queue.onSubmittedWorkDone();
        const t0 = performance.now();
        r = await b.route(q, k, layout, cfg);
        await device.queue.onSubmittedWorkDone();
        wall.push(performance.now() - t0);
        const ms = [...b.timings()];
        topk.push(ms.filter(([key]) => /:topk/.test(key)).reduce((a, [, v]) => a + v, 0));
        cent.push(ms.filter(([key]) => /:centroids/.test(key)).reduce((a, [, v]) => a + v, 0));
      }
      results.push(await b.routingIndices(r));
      b.dispose(r);
      const eq = i === 0 ? '' : results[0]!.every((x, j) => x === results[1]![j]) ? 'yes' : 'NO';
      log(`| ${N / 1024}K | ${kinds[i]} | ${median(topk).toFixed(2)} | ${median(cent).toFixed(2)} | ${median(wall).toFixed(1)} | ${eq} |`);
    } catch (e) {
      log(`| ${N / 1024}K | ${kinds[i]} | failed: ${(e as Error).message.split('\n')[0]} | | | |`);
    } finally {
      if (q) b.dispose(q);
      if (k) b.dispose(k);
    }
  }
}
await backends[1]!.destroy();
await first.destroy();
process.exit(0);
