/**
 * The WGSL prelude every kernel of this backend starts with: one uniform `Params` struct (filled by
 * `params()` in launch.ts, same word order), the geometry buffer accessors, numeric helpers, and the 16-bit
 * storage helpers (storage.wgsl.ts).
 */
import { storageWgsl } from './storage.wgsl.js';

/**
 * For the attention kernels that read the collected routing (\`collected\`): the key row of a query row r among
 * the rows of global block g is r + rowShift(g) (SPEC §8; geometry.ts); 0 for self-attention (QK false).
 */
export const rowShiftWgsl = /* wgsl */ `
fn rowShift(g: u32) -> u32 {
  if (QK) { return collected[P.qShiftOff + collected[P.blocksOff + 4u * g + 2u]]; }
  return 0u;
}
`;

export const commonWgsl = /* wgsl */ `
struct Params {
  T: u32, Hq: u32, Hkv: u32, D: u32,
  blockSize: u32, topk: u32, causal: u32, gridX: u32,
  nItems: u32, seqsOff: u32, rowSeqOff: u32, qTilesOff: u32,
  blocksOff: u32, totalBlocks: u32, scaleLog2: f32,
  scale: f32, nSeqs: u32, width: u32, mode: u32,
  negInfBits: u32,  // 0xff800000: −∞ must come from a runtime value (constant expressions reject it)
  nanBits: u32,     // 0x7fc00000: a quiet NaN, likewise
  // the collected routing (collect.wgsl.ts): Hq · totalBlocks lists, word offsets of its sections
  nLists: u32, maxEntries: u32, rowsOff: u32, entryOfOff: u32,
  chunksOff: u32, chunkOffOff: u32,
  // one pass of the attention kernels: query heads [hLo, hHi) and, of their entries, those whose chunk starts
  // in base + [passE0, passE0 + passCap), base = the first entry of head hLo (passWhole = 1: all of them);
  // a pass's partials are stored at entry − base − passE0
  passE0: u32, passCap: u32, hLo: u32, hHi: u32,
  passWhole: u32,
  accHeads: u32,    // heads of an f32 accumulation window (accIndex)
  qShiftOff: u32,   // fewer queries than keys (geometry.ts): per sequence the query-to-key row shift
}

// Fewer queries than keys (SPEC §8): the attention kernels' specialization (launch.ts sets it for such layouts
// only; self-attention compiles with the shift folded to 0).
override QK: bool = false;

const LOG2E: f32 = 1.4426950408889634;  // 1 / ln 2: scores are kept in the log2 domain (exp2 is the native op)
const LN2: f32 = 0.6931471805599453;

fn negInf() -> f32 { return bitcast<f32>(P.negInfBits); }

// NaN test on the bits: a compiler may fold "x != x" away under fast-math assumptions.
fn isNan(x: f32) -> bool { return (bitcast<u32>(x) & 0x7fffffffu) > 0x7f800000u; }
fn isNan4(x: vec4<f32>) -> vec4<bool> { return (bitcast<vec4<u32>>(x) & vec4<u32>(0x7fffffffu)) > vec4<u32>(0x7f800000u); }
// NaN or ±∞ (docs/api.md, "Non-finite values": both poison what they reach), likewise on the bits.
fn notFinite(x: f32) -> bool { return (bitcast<u32>(x) & 0x7fffffffu) >= 0x7f800000u; }
fn notFinite4(x: vec4<f32>) -> vec4<bool> { return (bitcast<vec4<u32>>(x) & vec4<u32>(0x7fffffffu)) >= vec4<u32>(0x7f800000u); }

// Per-entry partials (forward o, dQ partials) are stored with the head dim padded to a multiple of 4 (zeros),
// so that the merges read them as vec4.
fn paddedD() -> u32 { return (P.D + 3u) / 4u * 4u; }

// The backward's work buffer: (lse, Δ) [T, Hq, 2], then the dQ partials from this word on (a vec4 boundary).
fn dqPartialsOffset() -> u32 { return (2u * P.T * P.Hq + 3u) / 4u * 4u; }

// A quiet NaN from bits. WGSL lets compilers assume no NaN (lavapipe's exp2 and max() turn NaN into finite
// values), so NaN inputs are tracked with isNan() on raw scores and written back explicitly.
fn nanF() -> f32 { return bitcast<f32>(P.nanBits); }

// An f32 accumulation window for a 16-bit output split across passes (forward.ts, backward.ts): element i of
// a [T, heads, D] tensor lives at (t · accHeads + head % accHeads) · D + d of an f32 [T, accHeads, D] buffer.
fn accIndex(i: u32, heads: u32) -> u32 {
  let row = i / P.D;
  return ((row / heads) * P.accHeads + (row % heads) % P.accHeads) * P.D + i % P.D;
}
${storageWgsl}
// Work items beyond 65535 workgroups are folded into y; the launcher sets P.gridX to the x extent.
fn itemOf(wid: vec3<u32>) -> u32 { return wid.x + wid.y * P.gridX; }
`;
