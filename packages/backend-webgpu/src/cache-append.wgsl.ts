/**
 * KV cache append (SPEC §9, §6), two entry points of one shader:
 *   write:  one invocation per (new token row, pair of channels): k' = k + SiLU(Σ_ℓ w_ℓ ⊙ k_{t−ℓ}) with the taps
 *           before this append read from the sequence's kconv state (zero before the sequence start), k' and v
 *           stored into (page = pages[floor(pos / B)], slot pos % B), rounded to the cache's dtype.
 *   finish: one invocation per (page touched, channel): adds the page's new keys, as stored, to its f32 sum in
 *           position order (no float atomics: deterministic) and writes the centroid sum / B when the page
 *           completes; and one per (sequence, channel): the new kconv state (the last W − 1 raw keys).
 * Pages are `[B, RS]` rows in the pool's buffers (cache-pool.wgsl.ts; RS = the channels C = Hkv·D, padded to even
 * for 16-bit storage so that a word never spans two tokens); meta is `[pages, 2, C]` f32 (sum, centroid); kst is the f32 weight `[C, W]` then the state
 * `[maxSequences, W − 1, C]`.
 */
import { poolBindings, poolGeometry } from './cache-pool.wgsl.js';
import { commonWgsl } from './common.wgsl.js';
import { type StorageKind, tensorRead } from './storage.wgsl.js';

/** Words of the append table's header (cache.ts writes them in this order). */
export const APPEND_HEADER = ['nEntries', 'RS', 'C', 'nTasks', 'entriesOff', 'rowsOff', 'tasksOff', 'stateOff', 'ppb'] as const;

/** The append shader for a pool of n buffers per keys and values. */
export function cacheAppendWgsl(kind: StorageKind, n: number): string {
  return /* wgsl */ `
${commonWgsl}
override WG: u32 = 64;

@group(0) @binding(0) var<uniform> P: Params;          // T = rows, blockSize, width = W (0: no kconv), nItems
@group(0) @binding(1) var<storage, read> tab: array<u32>;
${tensorRead('k', 2, kind)}
${tensorRead('v', 3, kind)}
@group(0) @binding(4) var<storage, read_write> pm: array<f32>;
@group(0) @binding(5) var<storage, read_write> kst: array<f32>;
${poolBindings('kp', 6, n, kind, true)}
${poolBindings('vp', 6 + n, n, kind, true)}
${poolGeometry('tab[8]', 'P.blockSize * tab[1]', n)}
fn nEntries() -> u32 { return tab[0]; }
fn RS() -> u32 { return tab[1]; }
fn C() -> u32 { return tab[2]; }
fn nTasks() -> u32 { return tab[3]; }
// entry e: slot, first row, count, pos0
fn ent(e: u32, f: u32) -> u32 { return tab[tab[4] + 4u * e + f]; }
// row r: entry, page
fn rowOf(r: u32, f: u32) -> u32 { return tab[tab[5] + 2u * r + f]; }
// task i: entry, page, first position, end position
fn task(i: u32, f: u32) -> u32 { return tab[tab[6] + 4u * i + f]; }
fn stateAt(slot: u32, i: u32, c: u32) -> u32 { return tab[7] + (slot * (P.width - 1u) + i) * C() + c; }

// The raw key at sequence position p (i32: before the start reads zero) of entry e.
fn rawKey(e: u32, p: i32, c: u32) -> f32 {
  if (p < 0) { return 0.0; }
  let pos0 = i32(ent(e, 3u));
  if (p >= pos0) { return kAt((ent(e, 1u) + u32(p - pos0)) * C() + c); }
  return kst[stateAt(ent(e, 0u), u32(p - pos0 + i32(P.width) - 1), c)];
}

fn sigmoid(z: f32) -> f32 { return 1.0 / (1.0 + exp(-z)); }

// k' of row r (entry e, position pos), channel c: the kconv op's arithmetic (kconv.wgsl.ts), same order.
fn convKey(r: u32, e: u32, pos: u32, c: u32) -> f32 {
  let x = kAt(r * C() + c);
  let W = P.width;
  if (W == 0u) { return x; }
  var z = 0.0;
  for (var l = 0u; l < W; l++) {
    if (pos < l) { break; }
    z += kst[c * W + (W - 1u - l)] * rawKey(e, i32(pos) - i32(l), c);
  }
  return x + z * sigmoid(z);
}

@compute @workgroup_size(WG)
fn write(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let item = itemOf(wid) * WG + lid;
  if (item >= P.nItems) { return; }
  let pairs = (C() + 1u) / 2u;
  let r = item / pairs;
  let c = 2u * (item % pairs);
  let e = rowOf(r, 0u);
  let page = rowOf(r, 1u);
  if (!inGroup(page)) { return; }
  let pos = ent(e, 3u) + r - ent(e, 1u);
  let pb = poolBuf(page);
  let dst = poolBase(page) + (pos % P.blockSize) * RS() + c;
  let two = c + 1u < C();
  let k0 = convKey(r, e, pos, c);
  var k1 = 0.0;
  var v1 = 0.0;
  if (two) { k1 = convKey(r, e, pos, c + 1u); v1 = vAt(r * C() + c + 1u); }
  kpStore2(pb, dst, k0, k1, two);
  vpStore2(pb, dst, vAt(r * C() + c), v1, two);
}

@compute @workgroup_size(WG)
fn finish(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let item = itemOf(wid) * WG + lid;
  if (item >= P.nItems) { return; }
  let B = P.blockSize;
  let c = item % C();
  let i = item / C();
  if (i < nTasks()) {
    let page = task(i, 1u);
    if (!inGroup(page)) { return; }
    let p0 = task(i, 2u);
    let p1 = task(i, 3u);
    let at = page * 2u * C() + c;
    var s = select(pm[at], 0.0, p0 % B == 0u); // a page starting here starts from zero (pages are reused)
    let pb = poolBuf(page);
    let base = poolBase(page) + c;
    for (var p = p0; p < p1; p++) { s += kpAt(pb, base + (p % B) * RS()); }
    pm[at] = s;
    if (p1 % B == 0u) { pm[at + C()] = s / f32(B); }
    return;
  }
  let e = i - nTasks();
  if (P.width < 2u || P.mode != 0u) { return; } // the state: in the first group's dispatch
  // new state[j] = raw key at L − (W − 1) + j; old state[j'] holds pos0 − (W − 1) + j', so it reads j + count ≥ j:
  // ascending j never reads a word it already overwrote
  let count = ent(e, 2u);
  let L = i32(ent(e, 3u) + count);
  let slot = ent(e, 0u);
  for (var j = 0u; j < P.width - 1u; j++) {
    let p = L - i32(P.width - 1u) + i32(j);
    var x = 0.0;
    if (p >= i32(ent(e, 3u))) { x = kAt((ent(e, 1u) + u32(p) - ent(e, 3u)) * C() + c); }
    else if (p >= 0) { x = kst[stateAt(slot, j + count, c)]; }
    kst[stateAt(slot, j, c)] = x;
  }
}
`;
}
