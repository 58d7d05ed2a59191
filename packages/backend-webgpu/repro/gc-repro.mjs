// Reproduces the Dawn-in-Node lifetime trap: the object returned by `create()` owns Dawn's instance; if it is
// garbage-collected while its device is in use, the next GPU wait crashes or hangs.
//   node --expose-gc repro/gc-repro.mjs drop   # drops the GPU object, then gc(): crashes (segfault) or hangs
//   node --expose-gc repro/gc-repro.mjs keep   # keeps it referenced: runs to the end
import { create, globals } from 'webgpu';

Object.assign(globalThis, globals);
const keep = process.argv[2] !== 'drop';
let gpu = create([]);
const adapter = await gpu.requestAdapter();
const device = await adapter.requestDevice();
const held = keep ? gpu : null;
gpu = null;
globalThis.gc?.();

const n = 1024;
const buf = device.createBuffer({ size: n * 4, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC });
const read = device.createBuffer({ size: n * 4, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
const module = device.createShaderModule({
  code: '@group(0) @binding(0) var<storage, read_write> x: array<f32>;\n' +
    '@compute @workgroup_size(64) fn main(@builtin(global_invocation_id) i: vec3u) { x[i.x] = f32(i.x) * 2.0; }',
});
const pipeline = device.createComputePipeline({ layout: 'auto', compute: { module, entryPoint: 'main' } });
for (let round = 0; round < 20; round++) {
  const enc = device.createCommandEncoder();
  const pass = enc.beginComputePass();
  pass.setPipeline(pipeline);
  pass.setBindGroup(0, device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries: [{ binding: 0, resource: { buffer: buf } }] }));
  pass.dispatchWorkgroups(n / 64);
  pass.end();
  enc.copyBufferToBuffer(buf, 0, read, 0, n * 4);
  device.queue.submit([enc.finish()]);
  await read.mapAsync(GPUMapMode.READ);
  const ok = new Float32Array(read.getMappedRange())[n - 1] === (n - 1) * 2;
  read.unmap();
  if (!ok) throw new Error('wrong result');
  globalThis.gc?.();
}
device.destroy();
console.log(`ok (${held ? 'kept' : 'dropped'} the GPU object)`);
