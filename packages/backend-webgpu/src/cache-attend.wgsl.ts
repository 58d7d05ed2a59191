/**
 * KV cache attend (SPEC §3, §4, §8, §9), the second launch of an attend (the routing before it is
 * cache-route.wgsl.ts, the merge after it cache-merge.wgsl.ts):
 *   attend: one workgroup per (query row, query head, selected slot) reading the slot's block of sel `[Tq, Hq, topk]`:
 *           the block's keys in chunks of 64 (one score per invocation), an online softmax in the log2 domain whose
 *           chunk max and sums every invocation computes in the same order, each invocation accumulating its head
 *           dims; the causal mask at t in the own block. Writes the partial (m, l, acc[D]) f32; an empty slot writes
 *           m = −∞, l = 0; a non-finite score l = NaN.
 * Nothing depends on the other rows of the batch: a sequence's result is the same alone or batched.
 */
import { poolBindings, poolGeometry } from './cache-pool.wgsl.js';
import { commonWgsl } from './common.wgsl.js';
import { type StorageKind, tensorRead } from './storage.wgsl.js';

export { ATTEND_HEADER } from './cache-route.wgsl.js';
export const MAX_D = 256;

/** The attend shader for a pool of n buffers per keys and values. */
export function cacheAttendWgsl(kind: StorageKind, n: number): string {
  return /* wgsl */ `
${commonWgsl}

@group(0) @binding(0) var<uniform> P: Params;    // T = Tq, Hq, Hkv, D, blockSize, topk, causal, scaleLog2, nItems
@group(0) @binding(1) var<storage, read> tab: array<u32>;
${tensorRead('q', 2, kind)}
@group(0) @binding(3) var<storage, read> pm: array<f32>;
@group(0) @binding(4) var<storage, read_write> sel: array<i32>;
@group(0) @binding(5) var<storage, read_write> part: array<f32>;
${poolBindings('kp', 6, n, kind, false)}
${poolBindings('vp', 6 + n, n, kind, false)}
${poolGeometry('tab[6]', 'P.blockSize * tab[0]', n)}
fn RS() -> u32 { return tab[0]; }
fn C() -> u32 { return tab[1]; }
// query row r: entry, key position t
fn rowOf(r: u32, f: u32) -> u32 { return tab[tab[2] + 2u * r + f]; }
// entry e: length, first word of its page list
fn ent(e: u32, f: u32) -> u32 { return tab[tab[3] + 2u * e + f]; }
fn pageOf(e: u32, j: u32) -> u32 { return tab[tab[4] + ent(e, 1u) + j]; }

var<workgroup> sS: array<f32, 64>;
var<workgroup> sBlock: i32;

@compute @workgroup_size(64)
fn attend(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let item = itemOf(wid);
  if (item >= P.nItems) { return; }
  let D = P.D;
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
    for (var d = lid; d < D + 2u; d += 64u) { part[po + d] = select(0.0, negInf(), d == 0u); }
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
  var m = negInf();
  var l = 0.0;
  var acc = vec4<f32>(0.0);
  var bad = false;
  let qo = (r * P.Hq + h) * D;
  for (var c0 = p0; c0 < p1; c0 += 64u) {
    let p = c0 + lid;
    var s = negInf();
    if (p < p1) {
      let ko = pbase + (p - p0) * RS();
      var dot = 0.0;
      if ((D & 1u) == 0u) { // two dims per load (one word of 16-bit storage: qo, ko even), in d order
        for (var d = 0u; d < D; d += 2u) { let qq = qAt2(qo + d); let kk = kpAt2(pb, ko + d); dot += qq.x * kk.x; dot += qq.y * kk.y; }
      } else { for (var d = 0u; d < D; d++) { dot += qAt(qo + d) * kpAt(pb, ko + d); } }
      s = dot * P.scaleLog2;
    }
    sS[lid] = s;
    workgroupBarrier();
    let cnt = min(64u, p1 - c0);
    var cm = m;
    for (var i = 0u; i < cnt; i++) {
      bad = bad || notFinite(sS[i]);
      cm = max(cm, sS[i]);
    }
    let alpha = exp2(m - cm);
    l *= alpha;
    acc *= alpha;
    for (var i = 0u; i < cnt; i++) {
      let pe = exp2(sS[i] - cm);
      l += pe;
      let vo = pbase + (c0 + i - p0) * RS();
      for (var u = 0u; u < 4u; u++) {
        let d = lid + 64u * u;
        if (d < D) { acc[u] += pe * vpAt(pb, vo + d); }
      }
    }
    m = cm;
    workgroupBarrier();
  }
  if (lid == 0u) { part[po] = m; part[po + 1u] = select(l, nanF(), bad); }
  for (var u = 0u; u < 4u; u++) {
    let d = lid + 64u * u;
    if (d < D) { part[po + 2u + d] = acc[u]; }
  }
}
`;
}
