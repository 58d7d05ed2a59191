/**
 * KV cache attend (SPEC §3, §4, §8, §9), the second launch of an attend (the routing before it is
 * cache-route.wgsl.ts, the merge after it cache-merge.wgsl.ts):
 *   attend: one workgroup of 128 invocations per (query row, query head, selected slot) reading the slot's block of
 *           sel `[Tq, Hq, topk]`: the block's keys in chunks of TT ≤ 16 tokens, each chunk's rows staged into
 *           workgroup memory as f32 with consecutive invocations on consecutive words of a row (coalesced; rows
 *           padded to D rounded up to 32, + 8, so the scoring reads no bank twice), each key's dot split over 8
 *           invocations (dims d ≡ k mod 8 in d order, the 8 partials added in a fixed tree order); an online softmax
 *           in the log2 domain whose chunk max and sums every invocation computes in the same token order, each
 *           invocation accumulating its head dims d ≡ lid mod 128 from the value rows (a row read by consecutive
 *           invocations: coalesced); the causal mask at t in the own block. D is a constant of the variant. Writes
 *           the partial (m, l, acc[D]) f32; an empty slot writes m = −∞, l = 0; a non-finite score l = NaN.
 *           The pool buffer of a block is uniform per workgroup (a block lives in one page), so the block's chunk
 *           loop is generated once per pool binding inside one switch on it: every copy loads from kp{b} / vp{b}
 *           directly, no branch per element load, the same arithmetic in the same order as one buffer (bitwise).
 * Nothing depends on the other rows of the batch: a sequence's result is the same alone or batched.
 */
import { poolBindings, poolGeometry, poolRead, poolRead2 } from './cache-pool.wgsl.js';
import { commonWgsl } from './common.wgsl.js';
import { type StorageKind, tensorRead } from './storage.wgsl.js';

export { ATTEND_HEADER } from './cache-route.wgsl.js';
export const MAX_D = 256;

/** Invocations of an attend workgroup. */
export const ATTEND_WG = 128;

/** The staged key row stride (f32): D rounded up to 32, + 8 (8 lanes of 4 tokens per subgroup: distinct banks). */
function rowStride(D: number): number {
  return Math.ceil(D / 32) * 32 + 8;
}

/**
 * Whether the attend reads its key pages as 16-byte vec4s: every key row of a head 16-byte aligned (RS·elemBytes
 * and D·elemBytes multiples of 16, so the page and head offsets are too); otherwise 4-byte words.
 */
export function attendVec4(kind: StorageKind, RS: number, D: number): boolean {
  const eb = kind === 'f32' ? 4 : 2;
  return (RS * eb) % 16 === 0 && (D * eb) % 16 === 0;
}

/**
 * The attend shader for head dim D and a pool of n buffers per keys and values (vec4 key loads: attendVec4; `early`:
 * each chunk's value elements loaded into registers before its keys are staged).
 */
export function cacheAttendWgsl(kind: StorageKind, n: number, D: number, vec4 = false, early = false): string {
  const S = rowStride(D);
  const TT = Math.min(16, Math.floor(3072 / S)); // tokens per chunk: 8 scoring invocations each, ≤ 12 KiB staged
  const EPV = kind === 'f32' ? 4 : 8; // elements per vec4
  const NV = D / EPV; // vec4s per key row (vec4 variant)
  const L = Math.ceil((TT * NV) / ATTEND_WG); // vec4 loads per invocation per chunk, all issued before any is used
  const dec = kind === 'f16' ? 'decodeF16' : 'decodeBf16';
  const unpack = kind === 'f32'
    ? [0, 1, 2, 3].map((j) => `kf[o + ${j}u] = kv[i][${j}];`).join(' ')
    : [0, 1, 2, 3].map((j) => `kf[o + ${2 * j}u] = ${dec}(kv[i][${j}] & 0xffffu); kf[o + ${2 * j + 1}u] = ${dec}(kv[i][${j}] >> 16u);`).join('\n        ');
  const stage4 = (b: number): string => `var kv: array<vec4<${kind === 'f32' ? 'f32' : 'u32'}>, ${L}>;
    for (var i = 0u; i < ${L}u; i++) {
      let x = lid + WG * i;
      if (x < cnt * ${NV}u) { let tok = x / ${NV}u; kv[i] = kp${b}[(pbase + (c0 + tok - p0) * RS()) / ${EPV}u + x - tok * ${NV}u]; }
    }
    for (var i = 0u; i < ${L}u; i++) {
      let x = lid + WG * i;
      if (x < cnt * ${NV}u) {
        let tok = x / ${NV}u;
        let o = tok * S + ${EPV}u * (x - tok * ${NV}u);
        ${unpack}
      }
    }`;
  // the chunk's key rows staged with consecutive invocations on consecutive words (vec4s) of a row (coalesced)
  const stage = (b: number): string => vec4 ? stage4(b) : D % 2 === 0
    ? `for (var x = lid; x < cnt * (D / 2u); x += WG) {
      let tok = x / (D / 2u);
      let w = x - tok * (D / 2u);
      let ki = pbase + (c0 + tok - p0) * RS() + 2u * w;
      ${poolRead2('kp', b, kind, 'ki', 'kk')}
      kf[tok * S + 2u * w] = kk.x;
      kf[tok * S + 2u * w + 1u] = kk.y;
    }`
    : `for (var x = lid; x < cnt * D; x += WG) {
      let tok = x / D;
      let d = x - tok * D;
      let ki = pbase + (c0 + tok - p0) * RS() + d;
      kf[tok * S + d] = ${poolRead('kp', b, kind, 'ki')};
    }`;
  // the block's chunks reading binding b directly (generated once per binding: no branch per load)
  // early V: the chunk's value elements of this invocation loaded into registers before the keys are staged, so
  // both reads are in flight together (the products and sums below are unchanged: bitwise the late variant)
  const vEarly = (b: number): string => `var vv: array<f32, ${TT * Math.ceil(D / ATTEND_WG)}>;
    for (var i = 0u; i < TT; i++) {
      if (i < cnt) {
        let vo = pbase + (c0 + i - p0) * RS();
        for (var u = 0u; u < NA; u++) { let d = lid + WG * u; if (d < D) { let vi = vo + d; vv[i * NA + u] = ${poolRead('vp', b, kind, 'vi')}; } }
      }
    }`;
  const vUse = (b: number): string => early
    ? `for (var u = 0u; u < NA; u++) { let d = lid + WG * u; if (d < D) { acc[u] += pe * vv[i * NA + u]; } }`
    : `let vo = pbase + (c0 + i - p0) * RS();
        for (var u = 0u; u < NA; u++) { let d = lid + WG * u; if (d < D) { let vi = vo + d; acc[u] += pe * ${poolRead('vp', b, kind, 'vi')}; } }`;
  const chunks = (b: number): string => `for (var c0 = p0; c0 < p1; c0 += TT) {
    let cnt = min(TT, p1 - c0);
    ${early ? vEarly(b) : ''}
    ${stage(b)}
    workgroupBarrier();
    if (tk < TT) {
      var dot = 0.0;
      for (var i = 0u; i < NQ; i++) { let d = pt + 8u * i; if (d < D) { dot += qr[i] * kf[tk * S + d]; } }
      ps[lid] = dot;
    }
    workgroupBarrier();
    // every invocation: the chunk's scores (the 8 partials in a fixed order), max and sums in token order
    var sc: array<f32, TT>;
    var cm = m;
    for (var i = 0u; i < TT; i++) {
      let q8 = 8u * i;
      let s = (((ps[q8] + ps[q8 + 1u]) + (ps[q8 + 2u] + ps[q8 + 3u])) + ((ps[q8 + 4u] + ps[q8 + 5u]) + (ps[q8 + 6u] + ps[q8 + 7u]))) * P.scaleLog2;
      sc[i] = select(negInf(), s, i < cnt);
      if (i < cnt) { bad = bad || notFinite(s); }
      cm = max(cm, sc[i]);
    }
    let alpha = exp2(m - cm);
    l *= alpha;
    for (var u = 0u; u < NA; u++) { acc[u] *= alpha; }
    for (var i = 0u; i < TT; i++) {
      if (i < cnt) {
        let pe = exp2(sc[i] - cm);
        l += pe;
        ${vUse(b)}
      }
    }
    m = cm;
  }`;
  // the buffer index is uniform per workgroup (its block lives in one page): one switch around the whole block
  const perBuffer = n === 1 ? chunks(0) : `switch pb {
${Array.from({ length: n }, (_, b) => `  ${b === n - 1 ? 'default' : `case ${b}u`}: {
  ${chunks(b)}
  }`).join('\n')}
  }`;
  return /* wgsl */ `
${commonWgsl}
const WG: u32 = ${ATTEND_WG}u;
const D: u32 = ${D}u;
const S: u32 = ${S}u;
const TT: u32 = ${TT}u;
const NQ: u32 = ${Math.ceil(D / 8)}u;
const NA: u32 = ${Math.ceil(D / ATTEND_WG)}u;

@group(0) @binding(0) var<uniform> P: Params;    // T = Tq, Hq, Hkv, D, blockSize, topk, causal, scaleLog2, nItems
@group(0) @binding(1) var<storage, read> tab: array<u32>;
${tensorRead('q', 2, kind)}
@group(0) @binding(3) var<storage, read> pm: array<f32>;
@group(0) @binding(4) var<storage, read_write> sel: array<i32>;
@group(0) @binding(5) var<storage, read_write> part: array<f32>;
${vec4 ? Array.from({ length: n }, (_, b) => `@group(0) @binding(${6 + b}) var<storage, read> kp${b}: array<vec4<${kind === 'f32' ? 'f32' : 'u32'}>>;`).join('\n') : poolBindings('kp', 6, n, kind, false)}
${poolBindings('vp', 6 + n, n, kind, false)}
${poolGeometry('tab[6]', 'P.blockSize * tab[0]', n)}
fn RS() -> u32 { return tab[0]; }
fn C() -> u32 { return tab[1]; }
// query row r: entry, key position t
fn rowOf(r: u32, f: u32) -> u32 { return tab[tab[2] + 2u * r + f]; }
// entry e: length, first word of its page list
fn ent(e: u32, f: u32) -> u32 { return tab[tab[3] + 2u * e + f]; }
fn pageOf(e: u32, j: u32) -> u32 { return tab[tab[4] + ent(e, 1u) + j]; }

var<workgroup> kf: array<f32, ${TT * S}>;   // [TT, S] the chunk's keys as f32 (rows padded: no bank conflicts)
var<workgroup> ps: array<f32, ${8 * TT}>;  // [TT, 8] partial dots
var<workgroup> sBlock: i32;
var<private> qr: array<f32, NQ>;

@compute @workgroup_size(${ATTEND_WG})
fn attend(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let item = itemOf(wid);
  if (item >= P.nItems) { return; }
  let B = P.blockSize;
  let r = item / (P.Hq * P.topk);
  let h = (item / P.topk) % P.Hq;
  let kvh = h / (P.Hq / P.Hkv);
  let causal = P.causal != 0u;
  let e = rowOf(r, 0u);
  let t = rowOf(r, 1u);
  if (lid == 0u) { sBlock = sel[(r * P.Hq + h) * P.topk + item % P.topk]; }
  let j = workgroupUniformLoad(&sBlock);
  let po = item * (D + 2u);
  if (j < 0) {
    if (P.mode != 0u) { return; } // written by the first group's dispatch
    for (var d = lid; d < D + 2u; d += WG) { part[po + d] = select(0.0, negInf(), d == 0u); }
    return;
  }
  let len = ent(e, 0u);
  let page = pageOf(e, u32(j));
  if (!inGroup(page)) { return; }
  let pb = poolBuf(page);
  let pbase = poolBase(page) + kvh * D;
  let p0 = u32(j) * B;
  var p1 = min(p0 + B, len);
  if (causal && u32(j) == t / B) { p1 = t + 1u; } // the own block, masked at t
  let tk = lid >> 3u; // scoring: token tk of the chunk, dims pt, pt + 8, ...
  let pt = lid & 7u;
  let qo = (r * P.Hq + h) * D;
  for (var i = 0u; i < NQ; i++) { let d = pt + 8u * i; if (d < D) { qr[i] = qAt(qo + d); } }
  var m = negInf();
  var l = 0.0;
  var acc = array<f32, NA>();
  var bad = false;
  ${perBuffer}
  if (lid == 0u) { part[po] = m; part[po + 1u] = select(l, nanF(), bad); }
  for (var u = 0u; u < NA; u++) {
    let d = lid + WG * u;
    if (d < D) { part[po + 2u + d] = acc[u]; }
  }
}
`;
}
