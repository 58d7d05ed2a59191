// Quickstart (the README's API example): MoBA forward and backward on the CPU backend.
// Run from the repo root: node --conditions=@moba/source --import tsx examples/quickstart/index.ts
import { Rng, createBackend, hostTensor, moba, mobaBackward } from 'moba-ts';

const [T, H, D] = [4096, 4, 64]; // tokens, heads, head dim
const rng = new Rng(0);
const rand = () => hostTensor('f32', [T, H, D], rng.normals(T * H * D)); // [T, H, D] ~ N(0, 1)
const backend = await createBackend('cpu');
const { out, ctx } = await moba(backend, { q: rand(), k: rand(), v: rand(), cuSeqlens: Int32Array.of(0, T) }, { blockSize: 64, topk: 8 });
const o = await backend.download(out); // HostTensor: dtype 'f32', shape [T, H, D], data Float32Array
const { dq, dk, dv } = await mobaBackward(backend, ctx, rand()); // gradients of sum(out ⊙ dOut)
console.log('out', o.shape, o.data.slice(0, 4));
console.log('dq', dq.shape, 'dk', dk.shape, 'dv', dv.shape);
await backend.destroy();
