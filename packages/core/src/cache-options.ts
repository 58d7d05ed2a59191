/** Options of `createCache` (SPEC §7 codes) and the pool size they give. */
import type { Capabilities } from './backend.js';
import { checkCaps } from './backend.js';
import { KV_CACHE_OPTION_KEYS, type KVCacheOptions } from './cache.js';
import { resolveConfig, validateKconvWeight } from './config.js';
import { DTYPES, type DType } from './dtype.js';
import { MobaError, checkInt, checkKeys } from './errors.js';

/** Checked cache options. */
export interface ResolvedCacheOptions {
  readonly Hkv: number;
  readonly D: number;
  readonly dtype: DType;
  readonly blockSize: number;
  readonly pages: number;
  readonly pageBytes: number;
  readonly maxSequences: number;
  /** kconv width, 0 without kconv. */
  readonly W: number;
}

export const DEFAULT_MAX_SEQUENCES = 256;
const MAX_SEQUENCES = 1 << 16;

/**
 * Checks `createCache` options against caps (SPEC §7 codes) and sizes the pool; `pageBytes` is the backend's
 * storage for one page (keys, values and the page's f32 sum).
 */
export function resolveCacheOptions(caps: Capabilities, opts: KVCacheOptions, pageBytes: (o: { Hkv: number; D: number; dtype: DType; blockSize: number }) => number): ResolvedCacheOptions {
  if (!caps.kvCache) throw new MobaError('E_UNSUPPORTED', 'this backend has no KV cache (caps.kvCache is false)', 'kvCache');
  if (opts === null || typeof opts !== 'object') throw new MobaError('E_RANGE', 'cache options must be an object { Hkv, D, dtype, blockSize, capacityTokens | capacityBytes }', 'options');
  checkKeys(opts, KV_CACHE_OPTION_KEYS, 'cache option');
  const Hkv = checkInt('Hkv', opts.Hkv, 1);
  const D = checkInt('D', opts.D, 1);
  if (!DTYPES.includes(opts.dtype)) throw new MobaError('E_DTYPE', `dtype = ${String(opts.dtype)} is invalid: must be one of ${DTYPES.join(', ')}`, 'dtype');
  checkCaps(caps, { T: 1, Hq: Hkv, Hkv, D, dtype: opts.dtype });
  const { blockSize } = resolveConfig({ blockSize: opts.blockSize, topk: 1 }, D, caps);
  const pb = pageBytes({ Hkv, D, dtype: opts.dtype, blockSize });
  const byTokens = opts.capacityTokens !== undefined;
  if (byTokens === (opts.capacityBytes !== undefined)) {
    throw new MobaError('E_RANGE', 'give exactly one of capacityTokens and capacityBytes (the pool size)', 'capacityTokens');
  }
  const pages = byTokens
    ? Math.ceil(checkInt('capacityTokens', opts.capacityTokens, 1) / blockSize)
    : Math.floor(checkInt('capacityBytes', opts.capacityBytes, pb) / pb);
  if (pages * pb > caps.memoryBytes) {
    throw new MobaError('E_MEMORY', `a pool of ${pages} pages of ${pb} bytes exceeds this backend's memory limit of ${caps.memoryBytes} bytes`, byTokens ? 'capacityTokens' : 'capacityBytes');
  }
  const maxSequences = opts.maxSequences === undefined ? DEFAULT_MAX_SEQUENCES : checkInt('maxSequences', opts.maxSequences, 1, MAX_SEQUENCES);
  let W = 0;
  if (opts.kconvWeight !== undefined) {
    if (!caps.kconv) throw new MobaError('E_UNSUPPORTED', 'kconv is not supported by this backend (caps.kconv is false)', 'kconvWeight');
    W = validateKconvWeight(opts.kconvWeight, Hkv, D, caps.maxKconvWidth);
  }
  return { Hkv, D, dtype: opts.dtype, blockSize, pages, pageBytes: pb, maxSequences, W };
}

/**
 * A cache attend's topk clamped to the longest attended sequence's block count (a larger topk selects the same
 * blocks); above `capTopk` (caps.maxCacheTopk) only that dense case is allowed (the caller checked caps.cacheDense).
 */
export function attendTopk(topk: number, entries: readonly { readonly length: number }[], blockSize: number, capTopk: number | undefined): number {
  const maxBlocks = entries.reduce((m, e) => Math.max(m, Math.ceil(e.length / blockSize)), 1);
  const k = Math.min(topk, maxBlocks);
  if (capTopk !== undefined && k > capTopk && k < maxBlocks) {
    throw new MobaError(
      'E_UNSUPPORTED',
      `topk = ${topk} is not supported by this backend's cache: caps.maxCacheTopk = ${capTopk}, or topk >= ${maxBlocks} (every block of the longest attended sequence: dense)`,
      'topk',
    );
  }
  return k;
}
