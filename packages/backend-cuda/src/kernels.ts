/**
 * The kernels' parameter lists, in order, one entry per kernel base name (the entry point without its
 * `_d{D}` head-dim and `_{dtype}` suffixes). Each list mirrors the `extern "C"` signature in the `.cu`
 * file with the .cu parameter names (test/host.test.ts checks them against the sources); a launch passes
 * its arguments by these names (program.ts) and fails when one is missing or extra.
 */
import type { DType } from '@moba/core';

export const KERNEL_FILES = ['kconv.cu', 'route.cu', 'collect.cu', 'forward.cu', 'backward.cu', 'cache.cu'] as const;
export type KernelFile = (typeof KERNEL_FILES)[number];

/** Storage dtype code (route.cu centroids) and entry-point suffix. */
export const DT: Record<DType, { code: number; suffix: string }> = { f32: { code: 0, suffix: 'f32' }, f16: { code: 1, suffix: 'f16' }, bf16: { code: 2, suffix: 'bf16' } };

const routeTc = ['q', 'chi', 'clo', 'indices', 'cuq', 'cu', 'block_base', 'tile_base', 'nseq', 'Hq', 'Hkv', 'B', 'topk', 'causal'] as const;
const dkdvTc = ['q', 'k', 'v', 'dout', 'meta', 'offsets', 'dko', 'dvo', 'part', 'cu', 'block_base', 'nseq', 'Hq', 'Hkv', 'B', 'NB', 'topk', 'causal', 'scale', 'nsub', 'kv0'] as const;

export const KERNEL_PARAMS: Readonly<Record<string, { readonly file: KernelFile; readonly params: readonly string[] }>> = Object.freeze({
  // route.cu
  centroids: { file: 'route.cu', params: ['kraw', 'dtype', 'cent', 'cu', 'block_base', 'nseq', 'B', 'C', 'total_blocks'] },
  route: { file: 'route.cu', params: ['q', 'cent', 'indices', 'cuq', 'cu', 'block_base', 'tile_base', 'nseq', 'Hq', 'Hkv', 'D', 'B', 'topk', 'causal', 'ct'] },
  centroid_split: { file: 'route.cu', params: ['cent', 'hi', 'lo', 'n'] },
  route_tc: { file: 'route.cu', params: routeTc },
  route_tcs: { file: 'route.cu', params: routeTc },
  // collect.cu
  collect_count: { file: 'collect.cu', params: ['indices', 'counts', 'cuq', 'block_base', 'nseq', 'T_', 'Hq', 'topk', 'NB'] },
  collect_scan: { file: 'collect.cu', params: ['a', 'n'] },
  collect_fill: { file: 'collect.cu', params: ['indices', 'offsets', 'cursor', 'rows', 'cuq', 'block_base', 'nseq', 'T_', 'Hq', 'topk', 'NB'] },
  collect_sort: { file: 'collect.cu', params: ['indices', 'offsets', 'rows', 'cuq', 'cu', 'block_base', 'nseq', 'Hq', 'topk', 'NB', 'B', 'causal'] },
  collect_slot_of: { file: 'collect.cu', params: ['indices', 'offsets', 'rows', 'slots', 'block_base', 'nseq', 'Hq', 'topk', 'NB'] },
  collect_count_chunks: {
    file: 'collect.cu', params: ['indices', 'ctab', 'part', 'offsets', 'done', 'cuq', 'block_base', 'nseq', 'T_', 'Hq', 'topk', 'NB', 'R', 'S', 'smem_ints'],
  },
  collect_place: {
    file: 'collect.cu', params: ['indices', 'ctab', 'part', 'offsets', 'rows', 'slots', 'cuq', 'block_base', 'nseq', 'T_', 'Hq', 'topk', 'NB', 'R', 'S', 'smem_ints'],
  },
  // forward.cu
  forward: { file: 'forward.cu', params: ['q', 'k', 'v', 'indices', 'out', 'lse', 'cuq', 'cu', 'nseq', 'T_', 'Hq', 'Hkv', 'D', 'B', 'topk', 'causal', 'scale'] },
  forward_kv: { file: 'forward.cu', params: ['q', 'k', 'v', 'slots', 'offsets', 'rows', 'part', 'part_ml', 'cu', 'block_base', 'nseq', 'Hq', 'Hkv', 'B', 'NB', 'topk', 'causal', 'scale', 'kv0'] },
  forward_merge: { file: 'forward.cu', params: ['part', 'part_ml', 'indices', 'out', 'lse', 'T_', 'Hq', 'h0', 'Hs', 'D', 'topk'] },
  forward_tc: { file: 'forward.cu', params: ['q', 'k', 'v', 'indices', 'out', 'lse', 'acc', 'cu', 'win_base', 'nseq', 'Hq', 'Hkv', 'B', 'topk', 'causal', 'scale', 'BQ'] },
  // backward.cu
  delta: { file: 'backward.cu', params: ['out', 'dout', 'dlt', 'nrows', 'D'] },
  dkdv: { file: 'backward.cu', params: ['q', 'k', 'v', 'dout', 'lse', 'dlt', 'offsets', 'rows', 'dk', 'dv', 'cuq', 'cu', 'block_base', 'nseq', 'Hq', 'Hkv', 'D', 'B', 'NB', 'causal', 'scale', 'kc'] },
  dq: { file: 'backward.cu', params: ['q', 'k', 'v', 'dout', 'lse', 'dlt', 'indices', 'dqo', 'cuq', 'cu', 'nseq', 'T_', 'Hq', 'Hkv', 'D', 'B', 'topk', 'causal', 'scale'] },
  dkdv_meta: { file: 'backward.cu', params: ['offsets', 'rows', 'slots', 'lse', 'dlt', 'Hq', 'NB', 'meta'] },
  dq_merge: { file: 'backward.cu', params: ['part', 'indices', 'dqo', 'cu', 'nseq', 'T_', 'Hq', 'h0', 'Hs', 'D', 'B', 'topk', 'nsub', 'kvt', 'scale'] },
  dkdv_tc: { file: 'backward.cu', params: dkdvTc },
  dkdv_tc8: { file: 'backward.cu', params: dkdvTc },
  // kconv.cu
  kconv_forward: { file: 'kconv.cu', params: ['k', 'w', 'out', 'cu', 'nseq', 'T_', 'C', 'W'] },
  kconv_dz: { file: 'kconv.cu', params: ['k', 'w', 'dkout', 'dz', 'cu', 'nseq', 'T_', 'C', 'W'] },
  kconv_dk: { file: 'kconv.cu', params: ['w', 'dkout', 'dz', 'dk', 'cu', 'nseq', 'T_', 'C', 'W'] },
  kconv_dw: { file: 'kconv.cu', params: ['k', 'dz', 'dw', 'cu', 'nseq', 'T_', 'C', 'W'] },
  // cache.cu (the paged KV cache, cache.ts)
  cache_append_kv: { file: 'cache.cu', params: ['k', 'v', 'w', 'state', 'kpool', 'vpool', 'cu', 'ent', 'ptab', 'nent', 'T_', 'C', 'W', 'B'] },
  cache_append_sum: { file: 'cache.cu', params: ['k', 'kpool', 'sums', 'cents', 'state', 'cu', 'ent', 'work', 'nwork', 'nstate', 'C', 'W', 'B'] },
  cache_route: { file: 'cache.cu', params: ['q', 'cents', 'sums', 'rows', 'ptab', 'sel', 'plist', 'cnt', 'Hq', 'Hkv', 'D', 'B', 'topk', 'causal', 'hpc', 'tps', 'nbuf'] },
  cache_attend: { file: 'cache.cu', params: ['q', 'kpool', 'vpool', 'rows', 'ptab', 'sel', 'part', 'cnt', 'out', 'lse', 'Hq', 'Hkv', 'D', 'B', 'topk', 'causal', 'scale', 'vec', 'sb', 'nsub'] },
  cache_fused: {
    file: 'cache.cu',
    params: ['q', 'cents', 'sums', 'kpool', 'vpool', 'rows', 'ptab', 'part', 'cnt', 'out', 'lse', 'Hq', 'Hkv', 'D', 'B', 'topk', 'causal', 'scale', 'vec', 'sb', 'nsub', 'wph'],
  },
  read_probe: { file: 'cache.cu', params: ['src', 'n', 'sink'] }, // the decode bench's read bandwidth (probe.ts)
});

/** The base name of an entry point: `dkdv_tc8_d128_bf16` → `dkdv_tc8`, `route_f32` → `route`. */
export function kernelBase(name: string): string {
  return name.replace(/_(f32|f16|bf16)$/, '').replace(/_d\d+$/, '');
}
