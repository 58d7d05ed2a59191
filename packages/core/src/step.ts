/**
 * Inference on a KV cache (SPEC §8, §9): `createCache` opens a paged cache on a backend and `mobaStep` is the one
 * call a generation loop makes per step — append the new tokens' raw keys and values to their sequences, then
 * attend their queries. A prompt is one step with all its tokens (chunked prefill: several steps of a chunk
 * each); decoding is one step per token with one token per sequence. Sequences of one step may be at different
 * lengths and take different token counts.
 */
import type { Backend, DeviceTensor, ForwardResult } from './backend.js';
import type { CacheAttendConfig, KVCache, KVCacheOptions } from './cache.js';
import { MobaError, checkKeys } from './errors.js';
import { type HostTensor, asHostTensor } from './tensor.js';

type Input = HostTensor | DeviceTensor;

export interface MobaStepInputs {
  /** The sequences that take new tokens this step (ids from `cache.newSequence()` / `fork()`). */
  seqs: readonly number[];
  /** Queries of the new tokens `[T, Hq, D]`. */
  q: Input;
  /** Raw keys of the new tokens `[T, Hkv, D]` (kconv, when the cache has a weight, is applied on append). */
  k: Input;
  /** Values of the new tokens `[T, Hkv, D]`. */
  v: Input;
  /**
   * Boundaries of the new tokens, length `seqs.length + 1`: sequence `seqs[b]` takes rows
   * `[cuSeqlens[b], cuSeqlens[b+1])`. Optional when every sequence takes one token (decode).
   */
  cuSeqlens?: Int32Array;
}

export const MOBA_STEP_INPUT_KEYS: readonly string[] = Object.freeze(['seqs', 'q', 'k', 'v', 'cuSeqlens']);

/** A paged KV cache on `backend` (E_UNSUPPORTED where it has none: `caps.kvCache`). */
export async function createCache(backend: Backend, opts: KVCacheOptions): Promise<KVCache> {
  if (!backend.caps.kvCache || typeof backend.createCache !== 'function') {
    throw new MobaError('E_UNSUPPORTED', `the ${backend.name} backend has no KV cache (caps.kvCache is false)`, 'kvCache');
  }
  return backend.createCache(opts);
}

/**
 * One generation step: appends k, v of the new tokens to their sequences, then attends their queries (each
 * query is the token at its own position: causal MoBA over everything the sequence holds). Host tensors are
 * uploaded and freed again; out `[T, Hq, D]` and lse `[T, Hq]` are tensors of the cache's backend. When the
 * append fails (E_MEMORY: the pool is full) nothing was written and the cache is unchanged.
 */
export async function mobaStep(backend: Backend, cache: KVCache, inputs: MobaStepInputs, cfg: CacheAttendConfig): Promise<ForwardResult> {
  if (inputs === null || typeof inputs !== 'object') throw new MobaError('E_RANGE', 'inputs must be an object { seqs, q, k, v, cuSeqlens? }', 'inputs');
  checkKeys(inputs, MOBA_STEP_INPUT_KEYS, 'mobaStep() input');
  if (cache === null || typeof cache !== 'object' || cache.backend !== backend.name) {
    throw new MobaError('E_UNSUPPORTED', `cache belongs to backend ${String(cache?.backend)}, not ${backend.name}`, 'cache');
  }
  const { seqs } = inputs;
  if (!Array.isArray(seqs) || seqs.length === 0) throw new MobaError('E_SHAPE', 'seqs must be a non-empty array of sequence ids', 'seqs');
  const cu = inputs.cuSeqlens ?? Int32Array.from({ length: seqs.length + 1 }, (_, i) => i);
  const owned: DeviceTensor[] = [];
  try {
    const q = await onBackend(backend, 'q', inputs.q, owned);
    const k = await onBackend(backend, 'k', inputs.k, owned);
    const v = await onBackend(backend, 'v', inputs.v, owned);
    if (q.shape[0] !== k.shape[0]) {
      throw new MobaError('E_SHAPE', `q has ${q.shape[0]} rows but k has ${k.shape[0]}: each new token brings one query`, 'q.shape');
    }
    await cache.append(seqs, k, v, cu);
    return await cache.attend(seqs, q, cu, cfg);
  } finally {
    backend.dispose(...owned);
  }
}

async function onBackend(backend: Backend, param: string, t: Input, owned: DeviceTensor[]): Promise<DeviceTensor> {
  if (t === null || typeof t !== 'object' || Array.isArray(t) || ArrayBuffer.isView(t)) {
    throw new MobaError('E_SHAPE', `${param} = ${Array.isArray(t) ? 'an array' : String(t)} is invalid: must be a HostTensor { dtype, shape, data } or a DeviceTensor of backend ${backend.name}`, param);
  }
  if ('data' in t) {
    const d = await backend.upload(asHostTensor(param, t));
    owned.push(d);
    return d;
  }
  if (t.backend !== backend.name) throw new MobaError('E_UNSUPPORTED', `${param} belongs to backend ${String(t.backend)}, not ${backend.name}`, param);
  return t;
}
