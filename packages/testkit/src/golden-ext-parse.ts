/**
 * The extensions of the golden format (golden-format.md "Extensions", cases c13 and later): `requires`, query
 * counts apart from key counts (`seqlens_q`, SPEC §8) and key convolution (`kconv_width`, SPEC §6). Every field
 * is bounded like the base ones (GOLDEN_LIMITS), and an extension field without its `requires` entry (or the
 * reverse) is malformed: reading it without the extension would misread the case.
 */
import { GOLDEN_LIMITS, Malformed, UnsupportedGoldenCaseError, int, numbers } from './golden-fields.js';

/** The extensions this reader supports. */
export const GOLDEN_REQUIREMENTS = ['noncausal', 'kconv', 'seqlens_q'] as const;
export type GoldenRequirement = (typeof GOLDEN_REQUIREMENTS)[number];

/** `requires` (absent: none); an entry this reader does not know is an UnsupportedGoldenCaseError (a visible skip). */
export function parseRequires(v: unknown, file: string): GoldenRequirement[] {
  if (v === undefined) return [];
  if (!Array.isArray(v) || v.some((x) => typeof x !== 'string')) {
    throw new Malformed('requires', `requires = ${JSON.stringify(v)?.slice(0, 60)}, expected a list of strings (a subset of ${GOLDEN_REQUIREMENTS.join(', ')})`);
  }
  const unknown = (v as string[]).filter((x) => !(GOLDEN_REQUIREMENTS as readonly string[]).includes(x));
  if (unknown.length > 0) throw new UnsupportedGoldenCaseError(file, unknown);
  return [...new Set(v as GoldenRequirement[])];
}

/** The query rows of a case: `seqlens_q` (else the keys' own when `requires` lacks seqlens_q). */
export interface GoldenQueries {
  readonly seqlensQ: readonly number[];
  readonly cuSeqlensQ: Int32Array;
  readonly Tq: number;
}

function cumulative(n: readonly number[]): Int32Array {
  const cu = new Int32Array(n.length + 1);
  n.forEach((x, i) => (cu[i + 1] = cu[i]! + x));
  return cu;
}

/** `config.seqlens_q` / `cu_seqlens_q` / `total_tokens_q` against the key counts `seqlens` (each nq_i <= nk_i, Tq >= 1). */
export function parseQueries(c: Record<string, unknown>, seqlens: readonly number[], requires: readonly GoldenRequirement[]): GoldenQueries {
  const given = ['seqlens_q', 'cu_seqlens_q', 'total_tokens_q'].filter((f) => c[f] !== undefined && c[f] !== null);
  if (!requires.includes('seqlens_q')) {
    if (given.length > 0) throw new Malformed(`config.${given[0]}`, `config.${given[0]} is given but requires lacks "seqlens_q" (golden-format.md "Extensions")`);
    return { seqlensQ: seqlens, cuSeqlensQ: cumulative(seqlens), Tq: seqlens.reduce((a, b) => a + b, 0) };
  }
  let nq: number[];
  let from = 'config.seqlens_q';
  if (Array.isArray(c.seqlens_q)) {
    nq = c.seqlens_q.map((x, i) => int(x, `config.seqlens_q[${i}]`, 0));
  } else if (Array.isArray(c.cu_seqlens_q)) {
    from = 'config.cu_seqlens_q';
    const cu = c.cu_seqlens_q.map((x, i) => int(x, `config.cu_seqlens_q[${i}]`, 0));
    if (cu[0] !== 0) throw new Malformed(from, `config.cu_seqlens_q[0] = ${cu[0]}, expected 0`);
    nq = cu.slice(1).map((x, i) => x - cu[i]!);
    if (nq.some((x) => x < 0)) throw new Malformed(from, 'config.cu_seqlens_q decreases');
  } else {
    throw new Malformed('config.seqlens_q', 'requires has "seqlens_q" but config has neither "seqlens_q" nor "cu_seqlens_q"');
  }
  if (nq.length !== seqlens.length) throw new Malformed(from, `${from} describes ${nq.length} sequences but config.seqlens has ${seqlens.length}`);
  nq.forEach((n, i) => {
    if (n > seqlens[i]!) throw new Malformed(from, `${from}: sequence ${i} has ${n} queries but ${seqlens[i]} keys (config.seqlens[${i}]); queries must not outnumber keys (SPEC §8)`);
  });
  const Tq = nq.reduce((a, b) => a + b, 0);
  if (Tq < 1) throw new Malformed(from, `${from} sum to Tq = 0 query rows, expected at least 1`);
  const cu = cumulative(nq);
  if (Array.isArray(c.cu_seqlens_q) && (c.cu_seqlens_q.length !== cu.length || c.cu_seqlens_q.some((x, i) => x !== cu[i]))) {
    throw new Malformed('config.cu_seqlens_q', `config.cu_seqlens_q [${c.cu_seqlens_q.slice(0, 8).join(', ')}${c.cu_seqlens_q.length > 8 ? ', …' : ''}] disagrees with config.seqlens_q [${nq.slice(0, 8).join(', ')}${nq.length > 8 ? ', …' : ''}]`);
  }
  if (c.total_tokens_q !== undefined && c.total_tokens_q !== Tq) throw new Malformed('config.total_tokens_q', `config.total_tokens_q = ${JSON.stringify(c.total_tokens_q)?.slice(0, 40)} but the query counts sum to ${Tq}`);
  return { seqlensQ: nq, cuSeqlensQ: cu, Tq };
}

/** The key convolution of a case: width 0 when off. */
export interface GoldenKconv {
  readonly kconvWidth: number;
  /** `[heads_kv·head_dim, W]`, PyTorch's depthwise Conv1d layout (SPEC §6). */
  readonly kconvWeight?: Float64Array;
  /** Expected convolved keys `[Tk, heads_kv, head_dim]`. */
  readonly kConv?: Float64Array;
  /** Expected gradient of the weight `[heads_kv·head_dim, W]`. */
  readonly dkconvWeight?: Float64Array;
}

/** `config.kconv_width`, `inputs.kconv_weight`, `expected.k_conv`, `expected.dkconv_weight` (Tk key rows). */
export function parseKconv(
  c: Record<string, unknown>, inp: Record<string, unknown>, ex: Record<string, unknown>, requires: readonly GoldenRequirement[],
  sizes: { Tk: number; Hkv: number; D: number },
): GoldenKconv {
  const on = c.kconv_width !== undefined && c.kconv_width !== null;
  if (!requires.includes('kconv')) {
    if (on) throw new Malformed('config.kconv_width', `config.kconv_width = ${JSON.stringify(c.kconv_width)?.slice(0, 40)} is given but requires lacks "kconv" (golden-format.md "Extensions")`);
    return { kconvWidth: 0 };
  }
  if (!on) throw new Malformed('config.kconv_width', 'requires has "kconv" but config.kconv_width is missing or null');
  const W = int(c.kconv_width, 'config.kconv_width', 1, GOLDEN_LIMITS.kconvWidth);
  const C = sizes.Hkv * sizes.D;
  const wWhy = ` = heads_kv·head_dim (${C}) × kconv_width (${W})`;
  const kconvWeight = numbers(inp.kconv_weight, 'inputs.kconv_weight', C * W, wWhy);
  const kWhy = ` = Tk (${sizes.Tk}) × heads_kv (${sizes.Hkv}) × head_dim (${sizes.D})`;
  return {
    kconvWidth: W,
    kconvWeight,
    ...(ex.k_conv !== undefined ? { kConv: numbers(ex.k_conv, 'expected.k_conv', sizes.Tk * C, kWhy) } : {}),
    ...(ex.dkconv_weight !== undefined ? { dkconvWeight: numbers(ex.dkconv_weight, 'expected.dkconv_weight', C * W, wWhy) } : {}),
  };
}

/** `config.causal` (default true); `requires: ["noncausal"]` needs it false. */
export function parseCausal(c: Record<string, unknown>, requires: readonly GoldenRequirement[]): boolean {
  const causal = c.causal === undefined ? true : c.causal;
  if (typeof causal !== 'boolean') throw new Malformed('config.causal', `config.causal = ${JSON.stringify(c.causal)?.slice(0, 40)}, expected true or false`);
  if (requires.includes('noncausal') && causal) throw new Malformed('config.causal', 'requires has "noncausal" but config.causal is not false');
  return causal;
}
