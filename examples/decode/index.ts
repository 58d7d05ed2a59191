// Inference on a paged KV cache (docs/inference.md): prefill two prompts of different lengths in one step, then
// decode token by token. q, k, v stand for what a model's projections give per token; here they are random.
// Run from the repo root: pnpm decode   (or: node --conditions=@moba/source --import tsx examples/decode/index.ts)
import { Rng, createBackend, createCache, hostTensor, mobaStep } from 'moba-ts';

const [Hq, Hkv, D, B] = [8, 2, 64, 64]; // query heads, kv heads (GQA 4:1), head dim, block size = page size
const rng = new Rng(0);
const rand = (T: number, H: number) => hostTensor('f32', [T, H, D], rng.normals(T * H * D)); // per-token projections
const backend = await createBackend('cpu');
const cache = await createCache(backend, { Hkv, D, dtype: 'f32', blockSize: B, capacityTokens: 16384 });
const seqs = [cache.newSequence(), cache.newSequence()];
const prompt = [3000, 1234]; // prompt lengths: one prefill step with both prompts
let cu = Int32Array.of(0, prompt[0]!, prompt[0]! + prompt[1]!), T = prompt[0]! + prompt[1]!;
for (let step = 0; step <= 32; step++) { // step 0: prefill; then one new token per sequence per step
  const { out, lse } = await mobaStep(backend, cache, { seqs, q: rand(T, Hq), k: rand(T, Hkv), v: rand(T, Hkv), cuSeqlens: cu }, { topk: 8 });
  const o = await backend.download(out); // [T, Hq, D]: attention output of each new token (feed the model's next layer)
  backend.dispose(out, lse);
  if (step % 8 === 0) console.log(`step ${step}: lengths ${seqs.map((s) => cache.length(s)).join(', ')}, out ${o.shape.join('×')}, pages used ${cache.memoryStats().usedPages}`);
  [cu, T] = [Int32Array.of(0, 1, 2), 2]; // decode: one token per sequence
}
await cache.destroy();
await backend.destroy();
