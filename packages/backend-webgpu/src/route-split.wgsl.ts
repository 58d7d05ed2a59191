/**
 * Routing top-k with split candidate lists (SPEC §3; FlashMoBA's flash_topk without its serial per-row merge).
 * A workgroup takes 64 query rows of one head and streams the sequence's centroids in tiles of 64, the last
 * (nearest) tile first. Each of the
 * 256 invocations computes a 2 × 8 register tile of S = Q Cᵀ (rows rp and rp + 32, centroids cg·8 … cg·8 + 7 of
 * the tile; head dim staged DK at a time) and offers its 16 scores to two private top-k lists (one per row) held
 * in registers: most candidates are rejected by one comparison with the list's k-th entry. At the end the 8 lists
 * of a row (one per centroid group) are merged pairwise through workgroup memory (MS entries per pass), and one
 * invocation per row writes the selection ascending, −1 padded.
 * Exactness: candidates are ranked by (score, block) — a higher score first, ties to the higher block — a
 * strict order, so the top k is unique and the split lists give exactly the selection of the single-owner
 * kernel (route.wgsl.ts `topk`). Each score is the same f32 FMA chain over d = 0, 1, …, D − 1 as there (padding
 * dims past D add 0 · 0, which can only turn −0 into +0: equal under comparison).
 */
import { commonWgsl } from './common.wgsl.js';
import { routeBindingsWgsl } from './route.wgsl.js';
import type { StorageKind } from './storage.wgsl.js';

/** Private list capacities with a pipeline each: a routing with s competing slots uses the first ≥ s. */
export const SPLIT_CAPACITIES = [8, 16] as const;

const rows = [0, 1];
const range = (n: number): number[] => Array.from({ length: n }, (_, i) => i);

// `body` for list slots I = 0 … kp − 1: unrolled (constant indices: the lists stay in registers on GPUs) or as
// a loop (a much smaller shader, for software adapters whose compilers choke on the unrolled one)
function each(kp: number, unroll: boolean, body: (I: string) => string): string {
  return unroll ? range(kp).map((i) => body(`${i}u`)).join('') : `
  for (var i = 0u; i < ${kp}u; i++) {${body('i')}
  }`;
}

// Insertion of (c, ci) into row r's sorted list: one compare-exchange per slot (the full rank order), unrolled so
// that the lists stay in registers (no dynamic index); slots past `slots` are never touched. Updates the row's
// threshold (kv, ki).
function offerFn(r: number, kp: number, unroll: boolean): string {
  const step = (I: string): string => `
  if (${I} < slots) {
    let v = tv${r}[${I}]; let x = ti${r}[${I}];
    let t = better(c, ci, v, x);
    tv${r}[${I}] = select(v, c, t); ti${r}[${I}] = select(x, ci, t);
    c = select(c, v, t); ci = select(ci, x, t);
    if (${I} + 1u == slots) { kv${r} = tv${r}[${I}]; ki${r} = ti${r}[${I}]; }
  }`;
  return `fn offer${r}(c0: f32, ci0: u32) {
  var c = c0;
  var ci = ci0;${each(kp, unroll, step)}
}`;
}

// The tile's candidates of each row: a mask of those that rank above the list's threshold at the start of the
// tile (most fail this one comparison), then only these are inserted. The rank order is exact (score, then
// block), so the order of insertion does not change the result.
function offerTile(): string {
  return rows.map((r) => `
    {
      let lo = acc[${2 * r}]; let hi = acc[${2 * r + 1}];
      var m = 0u;${range(8).map((c) => `
      if (jb + ${c}u < lim${r} && !isNan(${c < 4 ? 'lo' : 'hi'}[${c & 3}]) && better(${c < 4 ? 'lo' : 'hi'}[${c & 3}], jb + ${c + 1}u, kv${r}, ki${r})) { m |= ${1 << c}u; }`).join('')}
      while (m != 0u) {
        let c = firstTrailingBit(m);
        m &= m - 1u;
        offer${r}(select(lo, hi, c >= 4u)[c & 3u], jb + c + 1u);
      }
    }`).join('');
}

// A writer's list entries [t0, t0 + MS) into the merge buffer (unrolled: static indices into the lists).
function writeLists(kp: number, unroll: boolean): string {
  return rows.map((r) => each(kp, unroll, (I) => `
        if (${I} >= t0 && ${I} < min(t0 + MS, slots)) {
          let p = ((${I} - t0) * 4u + w) * 64u + ${32 * r}u + rp;
          mV[p] = tv${r}[${I}]; mI[p] = ti${r}[${I}];
        }`)).join('');
}

// One row's selection, ascending, −1 padded (the invocation of centroid group 0 holds the merged list).
function writeRow(r: number, kp: number, unroll: boolean): string {
  return `
    if (r0 + rp + ${32 * r}u < r1) {
      var fin: array<u32, ${kp + 1}>;
      var n = 0u;${each(kp, unroll, (I) => `
      if (${I} < slots && ti${r}[${I}] != 0u) { fin[n] = ti${r}[${I}] - 1u; n++; }`)}
      if (causal) { fin[n] = cb${r}; n++; } // after every eligible block (all < cb)
      for (var a = 1u; a < n; a++) {
        let x = fin[a];
        var b = a;
        while (b > 0u && fin[b - 1u] > x) { fin[b] = fin[b - 1u]; b--; }
        fin[b] = x;
      }
      let out = ((r0 + rp + ${32 * r}u) * P.Hq + h) * P.topk;
      for (var i = 0u; i < P.topk; i++) { indices[out + i] = select(-1, i32(fin[min(i, ${kp}u)]), i < n); }
    }`;
}

/** The split top-k shader (entry `topkSplit`) with private lists of `kp` entries (≥ the competing slots). */
export function routeSplitWgsl(kp: number, kind: StorageKind, unroll = true): string {
  return /* wgsl */ `
${commonWgsl}
${routeBindingsWgsl(kind)}
override DK: u32 = 16u;      // head dims per S staging step
override QD: u32 = 0u;       // Q resident in workgroup memory: its dims (≥ D), else 0 (staged DK at a time)
override STAGE4: u32 = 544u; // (QD or DK, + DK) · PITCH
override MS: u32 = 8u;       // list entries per writer and row per merge pass
const PITCH: u32 = 17u;      // vec4 per staged dim: 16 groups of 4 rows (centroids) + 1 (conflict-free stores)
const KP: u32 = ${kp}u;

var<workgroup> stage: array<vec4<f32>, STAGE4>; // Q [QD or DK][PITCH], C [DK][PITCH]: vec4 over 4 rows / centroids
var<workgroup> mV: array<f32, 256u * MS>;       // merge buffer [MS][4 writers][64 rows]
var<workgroup> mI: array<u32, 256u * MS>;

// Private lists of rows rp (0) and rp + 32 (1), best first: score, block + 1 (0: empty, ranked below all)
var<private> tv0: array<f32, KP>;
var<private> ti0: array<u32, KP>;
var<private> tv1: array<f32, KP>;
var<private> ti1: array<u32, KP>;
var<private> kv0: f32; // entry slots − 1 of each list: a candidate must rank above it
var<private> ki0: u32;
var<private> kv1: f32;
var<private> ki1: u32;
var<private> slots: u32;

// a ranks above b: higher score, or equal score and higher block (exact ties go to the higher block)
fn better(av: f32, ai: u32, bv: f32, bi: u32) -> bool { return av > bv || (av == bv && ai > bi); }

${offerFn(0, kp, unroll)}

${offerFn(1, kp, unroll)}

// Q dims [d0, d0 + nd) of rows r0 … r1 − 1 into stage rows [0, nd): vec4 over 4 rows, zeros past the ends
fn stageQ(lid: u32, d0: u32, nd: u32, r0: u32, r1: u32, h: u32) {
  for (var e = lid; e < nd * 16u; e += 256u) {
    let d = d0 + e % nd;
    var x = vec4<f32>(0.0);
    for (var i = 0u; i < 4u; i++) {
      let r = r0 + (e / nd) * 4u + i;
      if (r < r1 && d < P.D) { x[i] = qAt((r * P.Hq + h) * P.D + d); }
    }
    stage[(e % nd) * PITCH + e / nd] = x;
  }
}

// Staging entry e of the C slice at (tile j0, dims d0): dim d0 + e % DK of centroids j0 + (e / DK)·4 … + 3.
fn fetchC(e: u32, j0: u32, d0: u32, tileLimit: u32, base: u32, hk: u32) -> vec4<f32> {
  let d = d0 + e % DK;
  var x = vec4<f32>(0.0);
  for (var i = 0u; i < 4u; i++) {
    let j = j0 + (e / DK) * 4u + i;
    if (e < DK * 16u && j < tileLimit && d < P.D) { x[i] = cent[((base + j) * P.Hkv + hk) * P.D + d]; }
  }
  return x;
}

@compute @workgroup_size(256)
fn topkSplit(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let tile = itemOf(wid);
  let h = wid.z;
  if (tile >= P.nItems) { return; } // uniform: the whole workgroup leaves
  let D = P.D;
  let hk = h / (P.Hq / P.Hkv);
  let qt = queryTile(tile);
  let r0 = qt.r0;
  let r1 = qt.r1;
  let start = qt.start;
  let nBlocks = qt.nBlocks;
  let base = qt.base;
  let causal = P.causal != 0u;
  let rp = lid % 32u; // rows r0 + rp, r0 + rp + 32
  let cg = lid / 32u; // centroids cg·8 … cg·8 + 7 of each tile (one group per 32 invocations: broadcast reads)
  let nSlots = select(P.topk, P.topk - 1u, causal); // causal: the own block is forced
  slots = nSlots;
  let cb0 = (min(r0 + rp, r1 - 1u) - start) / P.blockSize;
  let cb1 = (min(r0 + rp + 32u, r1 - 1u) - start) / P.blockSize;
  // eligible blocks j < lim: causal, those before the row's own block; else all; none for rows past the tile
  let lim0 = select(select(nBlocks, cb0, causal), 0u, r0 + rp >= r1);
  let lim1 = select(select(nBlocks, cb1, causal), 0u, r0 + rp + 32u >= r1);
  // the tile's last row sees most; nothing to score when no slot competes
  let tileLimit = select(select(nBlocks, (r1 - 1u - start) / P.blockSize, causal), 0u, nSlots == 0u);
  ${each(kp, unroll, (I) => `tv0[${I}] = negInf(); tv1[${I}] = negInf(); `)}// ti*: 0 (empty)
  kv0 = negInf(); ki0 = 0u; kv1 = negInf(); ki1 = 0u;
  // Q resident (QD > 0): all its dims staged once, C after them; else Q and C staged DK dims at a time
  let qRes = QD > 0u;
  let cAt = select(DK, QD, qRes); // stage row of C dim d0
  if (qRes && tileLimit > 0u) { stageQ(lid, 0u, QD, r0, r1, h); } // read after the tile loop's first barrier

  // tiles from the last (nearest) to the first: scores that grow toward the row's own block (recency) settle the
  // thresholds early, so later tiles insert little
  let nTiles = (tileLimit + 63u) / 64u;
  var pc = array<vec4<f32>, 2>(); // staging entries lid, lid + 256 of the next C slice
  if (nTiles > 0u) { pc = array<vec4<f32>, 2>(fetchC(lid, (nTiles - 1u) * 64u, 0u, tileLimit, base, hk), fetchC(lid + 256u, (nTiles - 1u) * 64u, 0u, tileLimit, base, hk)); }
  for (var tj = nTiles; tj > 0u; tj--) {
    let j0 = (tj - 1u) * 64u;
    // -- S = Q Cᵀ: rows rp, rp + 32; centroids j0 + cg·8 + c --
    var acc = array<vec4<f32>, 4>(); // [row][centroids 0–3, 4–7], zeroed per tile
    for (var d0 = 0u; d0 < D; d0 += DK) {
      workgroupBarrier();
      let qd0 = select(0u, d0, qRes); // stage row of Q dim d0
      if (!qRes) { stageQ(lid, d0, DK, r0, r1, h); }
      // centroid groups past tileLimit are never read, so not staged (DK · 16 ≤ 512 entries: two per invocation)
      let nC = DK * min(16u, (tileLimit - j0 + 3u) / 4u);
      if (lid < nC) { stage[(cAt + lid % DK) * PITCH + lid / DK] = pc[0]; }
      if (lid + 256u < nC) { stage[(cAt + (lid + 256u) % DK) * PITCH + (lid + 256u) / DK] = pc[1]; }
      workgroupBarrier();
      // the next slice's centroids are loaded while this one is multiplied (latency hidden behind the FMAs)
      let nd0 = select(0u, d0 + DK, d0 + DK < D);
      let more = d0 + DK < D || j0 > 0u;
      let nj0 = select(j0 - 64u, j0, d0 + DK < D);
      if (more) { pc = array<vec4<f32>, 2>(fetchC(lid, nj0, nd0, tileLimit, base, hk), fetchC(lid + 256u, nj0, nd0, tileLimit, base, hk)); }
      if (j0 + cg * 8u < tileLimit && r0 + rp < r1) { // padding: no arithmetic
        for (var dd = 0u; dd < DK; dd++) {
          let qi = (qd0 + dd) * PITCH + rp / 4u;
          let qa = vec4<f32>(stage[qi][rp % 4u]);
          let qb = vec4<f32>(stage[qi + 8u][rp % 4u]);
          let c0 = stage[(cAt + dd) * PITCH + 2u * cg];
          let c1 = stage[(cAt + dd) * PITCH + 2u * cg + 1u];
          acc[0] = fma(qa, c0, acc[0]);
          acc[1] = fma(qa, c1, acc[1]);
          acc[2] = fma(qb, c0, acc[2]);
          acc[3] = fma(qb, c1, acc[3]);
        }
      }
    }
    // -- offer the tile's candidates to the private lists --
    let jb = j0 + cg * 8u;${offerTile()}
  }

  // -- merge the 8 lists of each row: group cg + s into cg, s = 1, 2, 4; MS entries per pass --
  for (var s = 1u; s < 8u; s *= 2u) {
    for (var t0 = 0u; t0 < nSlots; t0 += MS) {
      workgroupBarrier();
      if (cg % (2u * s) == s) {
        let w = cg / (2u * s);${writeLists(kp, unroll)}
      }
      workgroupBarrier();
      if (cg % (2u * s) == 0u) {
        let w = cg / (2u * s);
        for (var t = 0u; t < MS && t0 + t < nSlots; t++) {
          let p = (t * 4u + w) * 64u + rp;
          let v0 = mV[p]; let x0 = mI[p];
          if (x0 != 0u && better(v0, x0, kv0, ki0)) { offer0(v0, x0); }
          let v1 = mV[p + 32u]; let x1 = mI[p + 32u];
          if (x1 != 0u && better(v1, x1, kv1, ki1)) { offer1(v1, x1); }
        }
      }
    }
  }
  // -- the selection, ascending, −1 padded --
  if (cg == 0u) {${writeRow(0, kp, unroll)}${writeRow(1, kp, unroll)}
  }
}
`;
}
