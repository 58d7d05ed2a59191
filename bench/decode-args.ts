/**
 * Flags of the decode bench (`pnpm bench -- --decode`, pure: no I/O). Defaults follow the inference issue:
 * GPU backends 16/16 and 32/8 heads, D 128, bf16, B 128, topk 8, contexts 8K…1M, batch 1, 16, 64; the CPU 4/4
 * heads, D 64, B 64, f32, contexts 8K…128K, batch 1 and 8; plus a 4K-token chunked prefill on a 128K cache.
 */
import { type FlagSpecs, UsageError, parseFlags } from '@moba/testkit';
import type { BackendKind } from 'moba-ts';

const MAX = 2 ** 24;

/** The decode bench's flags (parseFlags specs). */
export const DECODE_FLAGS = {
  decode: { type: 'bool', help: 'the decode bench' },
  backend: { type: 'enum', values: ['auto', 'cpu', 'webgpu', 'cuda'] as const, help: 'backend' },
  contexts: { type: 'ints', min: 1, max: MAX, meta: 'LIST', help: 'context lengths' },
  batch: { type: 'ints', min: 1, max: 1024, meta: 'LIST', help: 'sequences per step' },
  heads: { type: 'string', meta: 'LIST', help: 'Hq/Hkv pairs' },
  'head-dim': { type: 'int', min: 1, max: 1024, help: 'head dim D' },
  'block-size': { type: 'int', min: 1, max: 65536, help: 'block size B' },
  topk: { type: 'int', min: 1, max: 65536, help: 'blocks per query' },
  dtype: { type: 'enum', values: ['f32', 'f16', 'bf16'] as const, help: 'dtype' },
  reps: { type: 'int', min: 1, max: 1000, help: 'timed steps' },
  'prefill-chunk': { type: 'int', min: 1, max: MAX, help: 'prefill chunk tokens' },
  'prefill-context': { type: 'int', min: 0, max: MAX, help: 'prefill cache tokens (0: no prefill run)' },
  threads: { type: 'int', min: 1, max: 256, help: 'CPU worker threads' },
  seed: { type: 'int', min: 0, max: 2 ** 32 - 1, help: 'input seed' },
  'memory-gb': { type: 'number', above: 0, max: 65536, help: 'cache pool budget (GiB)' },
  quick: { type: 'bool', help: 'a smoke run' },
  'no-dense': { type: 'bool', help: 'no dense decode' },
  'no-torch': { type: 'bool', help: 'run no python (no torch SDPA)' },
  python: { type: 'string', meta: 'CMD', help: 'python with torch' },
  'torch-budget': { type: 'int', min: 10, max: 3600, help: 'seconds for the torch script' },
  'no-write': { type: 'bool', help: 'print only' },
  out: { type: 'string', meta: 'DIR', help: 'results folder' },
} as const satisfies FlagSpecs;

/** `--help` of the decode bench. */
export const DECODE_HELP = `Decode bench (--decode): inference on a paged KV cache (SPEC §9). For each heads pair, context length N and batch:
fills one sequence per batch slot with N tokens, then times decode steps — attend alone (the new token's k, v
appended untimed) and append + attend — as medians of --reps after 2 warm-ups, each step waited for on the device;
tokens per second (batch / step), bytes a step must read (planCacheAttend: centroids once per kv head, topk blocks
per query head) and the achieved bandwidth against the device's copy bandwidth measured in the same run; dense
decode on the same cache (attend with topk >= blocks: the backend's own dense path). Then a chunked prefill: a
--prefill-chunk chunk on a --prefill-context cache. Configurations whose cache would not fit the device memory
(caps.memoryBytes, or --memory-gb) are skipped and say so. Last, with the backend closed, torch SDPA dense decode
(bench/sdpa-decode.py, one python process): one query per sequence over a full K/V [batch, Hkv, N, D] for every
row, each SDPA backend forced in turn (default, flash, efficient, cudnn), CUDA-event medians; the best is shown
beside the backend's own times ("not measured" where python, torch or CUDA is missing), plus torch's copy bandwidth.

flags:
  --decode             this bench
  --backend cpu|webgpu|cuda|auto   backend (default cpu)
  --contexts LIST      N, K suffix ok (default cpu 8K,16K,32K,64K,128K; gpu 8K,32K,128K,512K,1024K)
  --batch LIST         sequences per step (default cpu 1,8; gpu 1,16,64)
  --heads LIST         Hq/Hkv pairs (default cpu 4/4; gpu 16/16,32/8)
  --head-dim N         (default cpu 64, gpu 128)
  --block-size N       (default cpu 64, gpu 128)
  --topk N             (default 8)
  --dtype f32|f16|bf16 (default cpu f32, gpu bf16)
  --reps N             timed steps per measurement (default 10)
  --prefill-chunk N    (default 4K)
  --prefill-context N  (default 128K; 0 skips the prefill run)
  --threads N          CPU worker threads
  --memory-gb X        memory budget (GiB): configurations whose cache needs more are skipped (memory);
                       WebGPU: also the backend's memoryBytes (its default is at most 8 GiB)
  --quick              contexts 8K,16K, batch 1,2, 3 reps, prefill 512 on 16K
  --no-dense           no dense decode (neither the backend's nor torch's)
  --no-torch           run no python (the SDPA columns say "not measured: --no-torch")
  --python CMD         python with torch (default: $MOBA_PYTHON or python3)
  --torch-budget S     seconds the torch script may take; later rows are skipped (default 240)
  --out DIR            results folder (default bench/results)
  --no-write           print only, write no files
`;

/** The decode bench's parsed flags. */
export interface DecodeFlags {
  backend: BackendKind; contexts: number[]; batch: number[]; heads: [number, number][]; D: number; B: number; topk: number;
  dtype: 'f32' | 'f16' | 'bf16'; reps: number; prefillChunk: number; prefillContext: number; threads?: number; seed: number;
  memoryBytes?: number; dense: boolean; write: boolean; out: string;
  /** Run bench/sdpa-decode.py (torch SDPA dense decode); `python` unset: $MOBA_PYTHON or python3. */
  torch: boolean; python?: string; torchBudgetS: number;
}

function headsList(raw: string): [number, number][] {
  return raw.split(',').map((pair) => {
    const m = /^(\d+)\/(\d+)$/.exec(pair.trim());
    const hq = m ? Number(m[1]) : NaN;
    const hkv = m ? Number(m[2]) : NaN;
    if (!m || !(hq >= 1 && hkv >= 1 && hq <= 1024) || hq % hkv !== 0) throw new UsageError(`--heads ${raw}: each entry must be Hq/Hkv with Hq a multiple of Hkv (e.g. 16/16,32/8)`);
    return [hq, hkv];
  });
}

/** Parses the decode bench's command line (usage errors throw UsageError); `resolve` makes --out absolute. */
export function parseDecodeFlags(argv: readonly string[], resultsDir: string, resolve: (p: string) => string = (p) => p): DecodeFlags | 'help' | 'version' {
  const r = parseFlags(argv, DECODE_FLAGS);
  if (r.help) return 'help';
  if (r.version) return 'version';
  const a = r.flags;
  const backend = a.backend ?? 'cpu';
  const gpu = backend === 'cuda' || backend === 'webgpu';
  const f: DecodeFlags = {
    backend,
    contexts: a.contexts ?? (gpu ? [8192, 32768, 131072, 524288, 1048576] : [8192, 16384, 32768, 65536, 131072]),
    batch: a.batch ?? (gpu ? [1, 16, 64] : [1, 8]),
    heads: headsList(a.heads ?? (gpu ? '16/16,32/8' : '4/4')),
    D: a['head-dim'] ?? (gpu ? 128 : 64), B: a['block-size'] ?? (gpu ? 128 : 64), topk: a.topk ?? 8, dtype: a.dtype ?? (gpu ? 'bf16' : 'f32'),
    reps: a.reps ?? 10, prefillChunk: a['prefill-chunk'] ?? 4096, prefillContext: a['prefill-context'] ?? 131072, seed: a.seed ?? 1,
    dense: !a['no-dense'], write: !a['no-write'], torch: !a['no-dense'] && !a['no-torch'], torchBudgetS: a['torch-budget'] ?? 240,
    out: a.out !== undefined ? resolve(a.out) : resultsDir,
    ...(a.threads !== undefined ? { threads: a.threads } : {}),
    ...(a.python !== undefined ? { python: a.python } : {}),
    ...(a['memory-gb'] !== undefined ? { memoryBytes: Math.floor(a['memory-gb'] * 2 ** 30) } : {}),
  };
  if (a.quick) {
    if (!r.given.has('contexts')) f.contexts = [8192, 16384];
    if (!r.given.has('batch')) f.batch = [1, 2];
    if (!r.given.has('reps')) f.reps = 3;
    if (!r.given.has('prefill-chunk')) f.prefillChunk = 512;
    if (!r.given.has('prefill-context')) f.prefillContext = 16384;
  }
  return f;
}
