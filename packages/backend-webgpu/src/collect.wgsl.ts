/**
 * Collect (SPEC §3's key-block-major form, FlashMoBA's varlen reformat + segmented sort), all parallel:
 * `count` (one invocation per (t, h, slot); u32 atomics, order-free) → exclusive prefix sums of the counts and
 * of the chunks per list (`scanLocal` per 1024 lists, `scanTop` over the block sums, `scanAdd`) → `scatter`
 * (atomic cursors: arrival order, not deterministic) → `sortLists`: one workgroup per list places each row at
 * its rank: short lists by counting, longer ones sorted in pieces of PIECE rows (bitonic, workgroup memory)
 * then, past one piece, index in its piece plus a binary search in every other piece; so every list comes out
 * ascending and the whole result is deterministic. It also writes `entryOf` (the entry of each (t, h, slot)) and the chunk table.
 * Layout of `collected`: CollectedLayout in launch.ts; its geometry section is written before these run.
 */
import { commonWgsl } from './common.wgsl.js';

export const collectWgsl = /* wgsl */ `
${commonWgsl}
override WG: u32 = 256;     // 256: scanLocal takes 4 lists per invocation
override CM: u32 = 64;      // rows per chunk (CHUNK_ROWS)
const PIECE: u32 = 1024u;   // rows a workgroup sorts at once in workgroup memory
const SHORT: u32 = 128u;    // lists up to this long: each row's rank by counting (no barriers)
const SCAN: u32 = 1024u;    // lists per scanLocal workgroup (4 · WG)
const NONE: u32 = 0xffffffffu;

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> indices: array<i32>;                // [T, Hq, topk]
@group(0) @binding(2) var<storage, read_write> counters: array<atomic<u32>>; // [2 · nLists]: counts, scatter cursors
@group(0) @binding(3) var<storage, read_write> scratch: array<u32>;          // [maxEntries] rows in arrival order, [2 · scan blocks] sums
@group(0) @binding(4) var<storage, read_write> collected: array<u32>;        // CollectedLayout (geometry included)

fn blockBaseOf(t: u32) -> u32 { return collected[P.seqsOff + 4u * collected[P.rowSeqOff + t] + 2u]; }

// The list of entry i = (t, h, slot) of indices, NONE for an unused slot.
fn listOfEntry(i: u32) -> u32 {
  let j = indices[i];
  if (j < 0) { return NONE; }
  let t = i / (P.Hq * P.topk);
  let h = (i / P.topk) % P.Hq;
  return h * P.totalBlocks + blockBaseOf(t) + u32(j);
}

@compute @workgroup_size(WG)
fn count(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let i = itemOf(wid) * WG + lid;
  if (i >= P.maxEntries) { return; }
  let l = listOfEntry(i);
  if (l != NONE) { atomicAdd(&counters[l], 1u); }
}

var<workgroup> scanBuf: array<vec2<u32>, WG>;

// Exclusive prefix of x over the workgroup (Hillis–Steele); the total is left in scanBuf[WG − 1].
fn workgroupScan(x: vec2<u32>, lid: u32) -> vec2<u32> {
  scanBuf[lid] = x;
  workgroupBarrier();
  for (var off = 1u; off < WG; off <<= 1u) {
    var y = vec2<u32>(0u);
    if (lid >= off) { y = scanBuf[lid - off]; }
    workgroupBarrier();
    scanBuf[lid] += y;
    workgroupBarrier();
  }
  return scanBuf[lid] - x;
}

// (rows, chunks) of list l
fn sizesOf(l: u32) -> vec2<u32> {
  if (l >= P.nLists) { return vec2<u32>(0u); }
  let c = atomicLoad(&counters[l]);
  return vec2<u32>(c, (c + CM - 1u) / CM);
}

// Prefix sums inside each run of SCAN lists; the run's totals go to scratch after the rows.
@compute @workgroup_size(WG)
fn scanLocal(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let b = itemOf(wid);
  let l0 = b * SCAN + 4u * lid;
  var v: array<vec2<u32>, 4>;
  var sum = vec2<u32>(0u);
  for (var i = 0u; i < 4u; i++) { v[i] = sizesOf(l0 + i); sum += v[i]; }
  var run = workgroupScan(sum, lid);
  for (var i = 0u; i < 4u; i++) {
    if (l0 + i < P.nLists) {
      collected[l0 + i] = run.x;
      collected[P.chunkOffOff + l0 + i] = run.y;
    }
    run += v[i];
  }
  if (lid == WG - 1u) {
    scratch[P.maxEntries + 2u * b] = scanBuf[WG - 1u].x;
    scratch[P.maxEntries + 2u * b + 1u] = scanBuf[WG - 1u].y;
  }
}

// One workgroup: exclusive prefix of the run totals (each invocation sums a contiguous stretch), and the grand totals.
@compute @workgroup_size(WG)
fn scanTop(@builtin(local_invocation_index) lid: u32) {
  let n = (P.nLists + SCAN - 1u) / SCAN;
  let per = (n + WG - 1u) / WG;
  let a = min(lid * per, n);
  let e = min(a + per, n);
  var s = vec2<u32>(0u);
  for (var i = a; i < e; i++) { s += vec2<u32>(scratch[P.maxEntries + 2u * i], scratch[P.maxEntries + 2u * i + 1u]); }
  var run = workgroupScan(s, lid);
  for (var i = a; i < e; i++) {
    let x = vec2<u32>(scratch[P.maxEntries + 2u * i], scratch[P.maxEntries + 2u * i + 1u]);
    scratch[P.maxEntries + 2u * i] = run.x;
    scratch[P.maxEntries + 2u * i + 1u] = run.y;
    run += x;
  }
  if (lid == WG - 1u) {
    collected[P.nLists] = scanBuf[WG - 1u].x;
    collected[P.chunkOffOff + P.nLists] = scanBuf[WG - 1u].y;
  }
}

@compute @workgroup_size(WG)
fn scanAdd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let l = itemOf(wid) * WG + lid;
  if (l >= P.nLists) { return; }
  let b = l / SCAN;
  collected[l] += scratch[P.maxEntries + 2u * b];
  collected[P.chunkOffOff + l] += scratch[P.maxEntries + 2u * b + 1u];
}

@compute @workgroup_size(WG)
fn scatter(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let i = itemOf(wid) * WG + lid;
  if (i >= P.maxEntries) { return; }
  let l = listOfEntry(i);
  if (l == NONE) { return; }
  let at = atomicAdd(&counters[P.nLists + l], 1u);
  scratch[collected[l] + at] = i / (P.Hq * P.topk);
}

var<workgroup> keys: array<u32, PIECE>;
var<workgroup> listInfo: vec2<u32>; // (first entry, rows) of this workgroup's list

// Bitonic sort of keys[0, n2), n2 a power of two (uniform).
fn bitonic(n2: u32, lid: u32) {
  for (var k = 2u; k <= n2; k <<= 1u) {
    for (var j = k >> 1u; j > 0u; j >>= 1u) {
      workgroupBarrier();
      for (var i = lid; i < n2; i += WG) {
        let o = i ^ j;
        if (o > i) {
          let a = keys[i];
          let b = keys[o];
          if ((a > b) == ((i & k) == 0u)) { keys[i] = b; keys[o] = a; }
        }
      }
    }
  }
  workgroupBarrier();
}

// Rows of scratch[a, a + n) (ascending) smaller than x.
fn lowerBound(a: u32, n: u32, x: u32) -> u32 {
  var lo = 0u;
  var hi = n;
  while (lo < hi) {
    let mid = (lo + hi) / 2u;
    if (scratch[a + mid] < x) { lo = mid + 1u; } else { hi = mid; }
  }
  return lo;
}

// Row t goes to entry e of list l: rows, and entryOf of the slot of t that chose the list's block.
fn emit(l: u32, e: u32, t: u32) {
  collected[P.rowsOff + e] = t;
  let h = l / P.totalBlocks;
  let j = i32(l % P.totalBlocks - blockBaseOf(t));
  let base = (t * P.Hq + h) * P.topk;
  for (var s = 0u; s < P.topk; s++) {
    if (indices[base + s] == j) { collected[P.entryOfOff + base + s] = e; break; }
  }
}

@compute @workgroup_size(WG)
fn sortLists(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let l = itemOf(wid);
  if (l >= P.nLists) { return; }
  if (lid == 0u) { listInfo = vec2<u32>(collected[l], collected[l + 1u] - collected[l]); }
  let info = workgroupUniformLoad(&listInfo);
  let off = info.x;
  let n = info.y;
  if (n == 0u) { return; }
  // -- the list's chunks: (list, first entry) --
  let c0 = collected[P.chunkOffOff + l];
  for (var c = lid; c * CM < n; c += WG) {
    collected[P.chunksOff + 2u * (c0 + c)] = l;
    collected[P.chunksOff + 2u * (c0 + c) + 1u] = off + c * CM;
  }
  // -- short lists: rank = rows below (rows are distinct) --
  if (n <= SHORT) {
    if (lid < n) {
      let x = scratch[off + lid];
      var rank = 0u;
      for (var i = 0u; i < n; i++) { rank += select(0u, 1u, scratch[off + i] < x); }
      emit(l, off + rank, x);
    }
    return;
  }
  // -- sort each piece in workgroup memory --
  let pieces = (n + PIECE - 1u) / PIECE;
  for (var pc = 0u; pc < pieces; pc++) {
    let a = pc * PIECE;
    let m = min(PIECE, n - a);
    var n2 = 1u;
    while (n2 < m) { n2 <<= 1u; }
    for (var i = lid; i < n2; i += WG) { keys[i] = select(NONE, scratch[off + a + i], i < m); }
    bitonic(n2, lid);
    for (var i = lid; i < m; i += WG) {
      if (pieces == 1u) { emit(l, off + i, keys[i]); } else { scratch[off + a + i] = keys[i]; }
    }
    workgroupBarrier();
  }
  if (pieces == 1u) { return; }
  // -- longer lists: rank = index in its piece + rows of every other piece below it (rows are distinct) --
  storageBarrier();
  for (var i = lid; i < n; i += WG) {
    let x = scratch[off + i];
    let pc = i / PIECE;
    var rank = i - pc * PIECE;
    for (var o = 0u; o < pieces; o++) {
      if (o != pc) { rank += lowerBound(off + o * PIECE, min(PIECE, n - o * PIECE), x); }
    }
    emit(l, off + rank, x);
  }
}
`;
