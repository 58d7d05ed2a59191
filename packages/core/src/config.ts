/**
 * MoBA configuration, packed-varlen layout and input validation (SPEC §1, §7). Every check throws a
 * `MobaError` naming the parameter, the value given and what is allowed.
 */
import type { DType } from './dtype.js';
import { MobaError, checkInt, checkKeys, shapeStr } from './errors.js';

export interface MobaConfig {
  /** Tokens per key block (B). Integer >= 1. */
  blockSize: number;
  /** Blocks each query attends to, its own (current) block included. Integer >= 1. */
  topk: number;
  /** Causal MoBA (default true): own block forced and masked, future blocks never eligible. */
  causal?: boolean;
  /** Softmax scale; defaults to 1/sqrt(D). Routing never uses it. */
  scale?: number;
}

/** The keys a MobaConfig may have; any other key is E_RANGE (with the nearest allowed key suggested). */
export const CONFIG_KEYS: readonly string[] = Object.freeze(['blockSize', 'topk', 'causal', 'scale']);

export interface ResolvedConfig {
  readonly blockSize: number;
  readonly topk: number;
  readonly causal: boolean;
  readonly scale: number;
}

/** Packed variable-length batch (SPEC §1): sequence `b` is tokens `[cuSeqlens[b], cuSeqlens[b+1])`. */
export interface Layout {
  readonly cuSeqlens: Int32Array;
}

/** Sizes of one problem: `q [T, Hq, D]`, `k, v [Tk, Hkv, D]` (`Tk = T` but with fewer queries than keys, SPEC §8). */
export interface ProblemShape {
  /** Query rows (`q`, `out`, `lse`, `dq`, routing). */
  readonly T: number;
  /** Key rows (`k`, `v`, `dk`, `dv`); absent or equal to `T` for self-attention. */
  readonly Tk?: number;
  readonly Hq: number;
  readonly Hkv: number;
  readonly D: number;
  readonly dtype: DType;
}

/** A validated problem's sizes: `Tk` always present. */
export interface CheckedShape extends ProblemShape {
  readonly Tk: number;
}

/** Anything with a dtype and shape: host and device tensors alike. */
export interface TensorLike {
  readonly dtype: DType;
  readonly shape: readonly number[];
}

/** Validates a config against head dim `D` and fills in defaults. */
export function resolveConfig(cfg: MobaConfig, D: number, limits?: { maxTopk?: number; maxBlockSize?: number }): ResolvedConfig {
  if (cfg === null || typeof cfg !== 'object') throw new MobaError('E_RANGE', 'config must be an object { blockSize, topk, causal?, scale? }', 'config');
  checkKeys(cfg, CONFIG_KEYS, 'config key'); // unknown keys and nulls (undefined means the default)
  const blockSize = withinCaps('blockSize', checkInt('blockSize', cfg.blockSize, 1), 'maxBlockSize', limits?.maxBlockSize);
  const topk = withinCaps('topk', checkInt('topk', cfg.topk, 1), 'maxTopk', limits?.maxTopk);
  const causal = cfg.causal ?? true;
  if (typeof causal !== 'boolean') throw new MobaError('E_RANGE', `causal = ${String(causal)} is invalid: must be true or false`, 'causal');
  const scale = cfg.scale ?? 1 / Math.sqrt(D);
  // every backend holds the scale in f32: one that rounds to Infinity there (≥ 2^128 · (1 − 2^-25)) is rejected
  if (typeof scale !== 'number' || !Number.isFinite(Math.fround(scale)) || scale <= 0) {
    throw new MobaError('E_RANGE', `scale = ${String(scale)} is invalid: must be a number > 0 that is finite in f32 (below 3.4028235677973366e38)`, 'scale');
  }
  return { blockSize, topk, causal, scale };
}

/**
 * `E_UNSUPPORTED` when `value` (valid per SPEC) exceeds the backend's declared `caps[cap]`; values SPEC §7
 * forbids are `E_RANGE` (checked before this).
 */
export function withinCaps(param: string, value: number, cap: string, max: number | undefined): number {
  if (max !== undefined && value > max) {
    throw new MobaError('E_UNSUPPORTED', `${param} = ${value} is not supported by this backend: caps.${cap} = ${max}`, param);
  }
  return value;
}

/** Checks `cuSeqlens` (SPEC §1): starts at 0, non-decreasing, ends at T. */
export function validateLayout(layout: Layout, T: number): void {
  const cu = layout?.cuSeqlens;
  if (!(cu instanceof Int32Array)) throw new MobaError('E_SHAPE', 'cuSeqlens must be an Int32Array of length batch + 1', 'cuSeqlens');
  if (cu.length < 2) throw new MobaError('E_SHAPE', `cuSeqlens has length ${cu.length}: must be batch + 1 >= 2`, 'cuSeqlens');
  if (cu[0] !== 0) throw new MobaError('E_RANGE', `cuSeqlens[0] = ${cu[0]} is invalid: must be 0`, 'cuSeqlens');
  for (let i = 1; i < cu.length; i++) {
    if (cu[i]! < cu[i - 1]!) {
      throw new MobaError('E_RANGE', `cuSeqlens[${i}] = ${cu[i]} < cuSeqlens[${i - 1}] = ${cu[i - 1]}: must be non-decreasing`, 'cuSeqlens');
    }
  }
  if (cu[cu.length - 1] !== T) {
    throw new MobaError('E_RANGE', `cuSeqlens[${cu.length - 1}] = ${cu[cu.length - 1]} is invalid: must equal T = ${T} (the token count of q)`, 'cuSeqlens');
  }
}

export interface SeqInfo {
  /** First token (global row). */
  readonly start: number;
  readonly len: number;
  readonly nBlocks: number;
  /** Global index of the sequence's block 0 (blocks numbered across sequences). */
  readonly blockBase: number;
}

export interface Sequences {
  readonly seqs: readonly SeqInfo[];
  /** Blocks over all sequences. */
  readonly totalBlocks: number;
  /** The largest block count of one sequence. */
  readonly maxBlocks: number;
  /** For each token, its sequence index. */
  readonly seqOf: Int32Array;
}

/** Splits a layout into sequences and blocks (blocks restart at each sequence start, SPEC §2). */
export function sequences(layout: Layout, blockSize: number): Sequences {
  const cu = layout.cuSeqlens;
  const seqs: SeqInfo[] = [];
  const T = cu[cu.length - 1]!;
  const seqOf = new Int32Array(T);
  let base = 0;
  let maxBlocks = 0;
  for (let b = 0; b + 1 < cu.length; b++) {
    const start = cu[b]!;
    const len = cu[b + 1]! - start;
    const nBlocks = Math.ceil(len / blockSize);
    seqs.push({ start, len, nBlocks, blockBase: base });
    seqOf.fill(b, start, start + len);
    base += nBlocks;
    maxBlocks = Math.max(maxBlocks, nBlocks);
  }
  return { seqs, totalBlocks: base, maxBlocks, seqOf };
}

function check3d(param: string, t: TensorLike): [number, number, number] {
  if (!t || !Array.isArray(t.shape) || t.shape.length !== 3) {
    throw new MobaError('E_SHAPE', `${param}.shape = ${t && Array.isArray(t.shape) ? shapeStr(t.shape) : String(t)} is invalid: must be [T, H, D]`, `${param}.shape`);
  }
  for (const s of t.shape) {
    if (!Number.isInteger(s) || s < 1) throw new MobaError('E_SHAPE', `${param}.shape = ${shapeStr(t.shape)} is invalid: every dimension must be an integer >= 1`, `${param}.shape`);
  }
  return t.shape as unknown as [number, number, number];
}

/**
 * Validates q, k, v shapes and dtypes (SPEC §1, §7) and returns the problem sizes. `qk`: the layout has its own
 * query boundaries (SPEC §8), so q may have fewer rows than k (the layout checks each sequence).
 */
export function validateQkv(q: TensorLike, k: TensorLike, v: TensorLike, qk = false): CheckedShape {
  const [T, Hq, D] = check3d('q', q);
  const [Tk, Hkv, Dk] = check3d('k', k);
  const [Tv, Hv, Dv] = check3d('v', v);
  if (Tv !== Tk) throw new MobaError('E_SHAPE', `v has ${Tv} tokens but k has ${Tk}: must be equal`, 'v.shape');
  if (!qk && Tk !== T) throw new MobaError('E_SHAPE', `k has ${Tk} and v has ${Tv} tokens but q has ${T}: self-attention needs the same T (fewer queries than keys need a { cuSeqlensQ, cuSeqlensK } layout)`, 'k.shape');
  if (Dk !== D || Dv !== D) throw new MobaError('E_SHAPE', `head dims differ: q ${D}, k ${Dk}, v ${Dv}; must be equal`, 'k.shape');
  if (Hv !== Hkv) throw new MobaError('E_SHAPE', `v.shape ${shapeStr(v.shape)} must equal k.shape ${shapeStr(k.shape)}`, 'v.shape');
  if (Hq % Hkv !== 0) throw new MobaError('E_SHAPE', `Hq = ${Hq} is not a multiple of Hkv = ${Hkv}: Hq % Hkv must be 0`, 'k.shape');
  if (k.dtype !== q.dtype || v.dtype !== q.dtype) {
    throw new MobaError('E_DTYPE', `dtypes differ: q ${q.dtype}, k ${k.dtype}, v ${v.dtype}; must all be equal`, 'k.dtype');
  }
  return { T, Tk, Hq, Hkv, D, dtype: q.dtype };
}

/** Validates q and k of a routing call (no v: the router never reads values); `qk` as in `validateQkv`. */
export function validateQk(q: TensorLike, k: TensorLike, qk = false): CheckedShape {
  const [T, Hq, D] = check3d('q', q);
  const [Tk, Hkv, Dk] = check3d('k', k);
  if (!qk && Tk !== T) throw new MobaError('E_SHAPE', `k has ${Tk} tokens but q has ${T}: self-attention needs the same T (fewer queries than keys need a { cuSeqlensQ, cuSeqlensK } layout)`, 'k.shape');
  if (Dk !== D) throw new MobaError('E_SHAPE', `head dims differ: q ${D}, k ${Dk}; must be equal`, 'k.shape');
  if (Hq % Hkv !== 0) throw new MobaError('E_SHAPE', `Hq = ${Hq} is not a multiple of Hkv = ${Hkv}: Hq % Hkv must be 0`, 'k.shape');
  if (k.dtype !== q.dtype) throw new MobaError('E_DTYPE', `dtypes differ: q ${q.dtype}, k ${k.dtype}; must be equal`, 'k.dtype');
  return { T, Tk, Hq, Hkv, D, dtype: q.dtype };
}

/** Checks that `t` has exactly `shape` and `dtype`. */
export function expectShape(param: string, t: TensorLike, shape: readonly number[], dtype?: DType): void {
  if (!t || !Array.isArray(t.shape) || t.shape.length !== shape.length || t.shape.some((s, i) => s !== shape[i])) {
    throw new MobaError('E_SHAPE', `${param}.shape = ${t && Array.isArray(t.shape) ? shapeStr(t.shape) : String(t)} is invalid: must be ${shapeStr(shape)}`, `${param}.shape`);
  }
  if (dtype && t.dtype !== dtype) throw new MobaError('E_DTYPE', `${param}.dtype = ${t.dtype} is invalid: must be ${dtype}`, `${param}.dtype`);
}

/** Validates a kconv weight `[Hkv·D, W]` (SPEC §6); returns W. */
export function validateKconvWeight(w: TensorLike, Hkv: number, D: number, maxWidth = 64): number {
  if (!w || !Array.isArray(w.shape) || w.shape.length !== 2 || w.shape[0] !== Hkv * D) {
    throw new MobaError('E_SHAPE', `kconvWeight.shape = ${w && Array.isArray(w.shape) ? shapeStr(w.shape) : String(w)} is invalid: must be [Hkv·D = ${Hkv * D}, W]`, 'kconvWeight.shape');
  }
  return withinCaps('kconvWeight width W', checkInt('kconvWeight width W', w.shape[1], 1), 'maxKconvWidth', maxWidth);
}
