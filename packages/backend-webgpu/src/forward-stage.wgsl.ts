/**
 * The forward kernel's staging (forward.wgsl.ts declares the bindings, workgroup arrays and constants these
 * functions use): S = Q Kᵀ for one key tile, and O += P V, with register prefetch: the next slice's global
 * loads are issued before the arithmetic on the current slice, so their latency overlaps it (two vec4s of Q
 * and two of K per invocation: DK·16 ≤ 512; four of V: VK·DC/4 ≤ 1024). On the H200 this made the kernel 1.4–1.8× faster than loading each slice after
 * the barrier (bench/results/2026-11-30-webgpu-h200-round3.md).
 */
export const forwardStageWgsl = /* wgsl */ `
// 4 rows of one dim of Q (staging entry e of the slice at d0); a non-finite value is flagged and zeroed when stored.
fn fetchQ(e: u32, d0: u32, h: u32, nRows: u32) -> vec4<f32> {
  let D = P.D;
  let d = d0 + e % DK;
  var x = vec4<f32>(0.0);
  for (var i = 0u; i < 4u; i++) {
    let r = (e / DK) * 4u + i;
    if (r < nRows && d < D) { x[i] = qAt((rowIds[r] * P.Hq + h) * D + d); }
  }
  return x;
}

fn fetchK(e: u32, d0: u32, hk: u32, p0: u32, b1: u32) -> vec4<f32> {
  let D = P.D;
  let d = d0 + e % DK;
  var x = vec4<f32>(0.0);
  for (var i = 0u; i < 4u; i++) {
    let c = (e / DK) * 4u + i;
    if (p0 + c < b1 && d < D) { x[i] = kAt(((p0 + c) * P.Hkv + hk) * D + d); }
  }
  return x;
}

fn putQ(e: u32, x: vec4<f32>) {
  var y = x;
  for (var i = 0u; i < 4u; i++) {
    if (notFinite(y[i])) { atomicOr(&rowBad[(e / DK) * 4u + i], 1u); y[i] = 0.0; }
  }
  stage[(e % DK) * (M / 4u) + e / DK] = y;
}

fn putK(e: u32, x: vec4<f32>) {
  var y = x;
  for (var i = 0u; i < 4u; i++) {
    if (notFinite(y[i])) { atomicOr(&keyBad[(e / DK) * 4u + i], 1u); y[i] = 0.0; }
  }
  stage[DK * (M / 4u) + (e % DK) * (TN / 4u) + e / DK] = y;
}

// S = Q Kᵀ for the chunk's rows and keys [p0, p0 + TN) (raw dot products): s[i][j] = row ty·4 + i, key tx·4 + j.
// Staging also sets keyBad bit 0 for a NaN in k and rowBad bit 0 for a NaN in q.
fn scoreTile(h: u32, hk: u32, nRows: u32, p0: u32, b1: u32, kEnd: u32, lid: u32) -> mat4x4<f32> {
  let tx = lid % 16u;
  let ty = lid / 16u;
  let nq = DK * ((nRows + 3u) / 4u);                      // staging entries of Q per slice
  let nk = DK * min(TN / 4u, (kEnd - p0 + 3u) / 4u);      // and of K
  var qa = array<vec4<f32>, 2>(fetchQ(lid, 0u, h, nRows), fetchQ(lid + 256u, 0u, h, nRows));
  var ka = array<vec4<f32>, 2>(fetchK(lid, 0u, hk, p0, b1), fetchK(lid + 256u, 0u, hk, p0, b1));
  workgroupBarrier(); // previous users of stage, keyBad, red are done
  if (lid < TN) { atomicStore(&keyBad[lid], 0u); }
  var s = mat4x4<f32>();
  for (var d0 = 0u; d0 < DC; d0 += DK) {
    workgroupBarrier();
    if (lid < nq) { putQ(lid, qa[0]); }
    if (lid + 256u < nq) { putQ(lid + 256u, qa[1]); }
    if (lid < nk) { putK(lid, ka[0]); }
    if (lid + 256u < nk) { putK(lid + 256u, ka[1]); }
    workgroupBarrier();
    if (d0 + DK < DC) {
      qa = array<vec4<f32>, 2>(fetchQ(lid, d0 + DK, h, nRows), fetchQ(lid + 256u, d0 + DK, h, nRows));
      ka = array<vec4<f32>, 2>(fetchK(lid, d0 + DK, hk, p0, b1), fetchK(lid + 256u, d0 + DK, hk, p0, b1));
    }
    if (ty * 4u < nRows && p0 + tx * 4u < kEnd) { // an if, not continue: the loop has barriers and must stay uniform
      for (var dd = 0u; dd < DK; dd++) {
        let a = stage[dd * (M / 4u) + ty];
        let b = stage[DK * (M / 4u) + dd * (TN / 4u) + tx];
        s[0] = fma(vec4<f32>(a.x), b, s[0]);
        s[1] = fma(vec4<f32>(a.y), b, s[1]);
        s[2] = fma(vec4<f32>(a.z), b, s[2]);
        s[3] = fma(vec4<f32>(a.w), b, s[3]);
      }
    }
  }
  return s;
}

// 4 dims of V for staging entry e (key v0 + e / (DC/4)) of the slice at v0 (keys counted from p0).
fn fetchV(e: u32, v0: u32, n: u32, hk: u32, p0: u32, b1: u32) -> vec4<f32> {
  let D = P.D;
  let c = e / (DC / 4u);
  let d = (e % (DC / 4u)) * 4u;
  var x = vec4<f32>(0.0);
  if (e < n && p0 + v0 + c < b1) {
    let at = ((p0 + v0 + c) * P.Hkv + hk) * D + d;
    if ((D & 1u) == 0u && d + 4u <= D) { // even D: two aligned pairs (one word each in 16-bit storage)
      x = vec4<f32>(vAt2(at), vAt2(at + 2u));
    } else {
      for (var i = 0u; i < 4u; i++) {
        if (d + i < D) { x[i] = vAt(at + i); }
      }
    }
  }
  return x;
}

fn fetchV4(lid: u32, v0: u32, kLeft: u32, hk: u32, p0: u32, b1: u32) -> array<vec4<f32>, 4> {
  let n = min(VK, kLeft) * (DC / 4u);
  return array<vec4<f32>, 4>(fetchV(lid, v0, n, hk, p0, b1), fetchV(lid + 256u, v0, n, hk, p0, b1),
    fetchV(lid + 512u, v0, n, hk, p0, b1), fetchV(lid + 768u, v0, n, hk, p0, b1));
}

// O += P V over keys [p0, min(p0 + TN, kEnd)); pt[j] = P of key tx·4 + j for rows ty·4 .. + 3. P goes through
// workgroup memory PH keys at a time, V VK keys at a time. Staging V sets keyBad bit 1 for a NaN in v.
fn accumulatePV(o: ptr<function, array<mat4x4<f32>, OC4>>, pt: mat4x4<f32>, hk: u32, p0: u32, b1: u32, kEnd: u32, nRows: u32, lid: u32) {
  let tx = lid % 16u;
  let ty = lid / 16u;
  var va = fetchV4(lid, 0u, kEnd - p0, hk, p0, b1);
  for (var k0 = 0u; k0 < TN; k0 += PH) {
    workgroupBarrier(); // stage, ps and red are free
    let c = tx * 4u;
    if (c >= k0 && c < k0 + PH) { // PH is a multiple of 4: the invocation's 4 keys go together
      ps[(c - k0) * (M / 4u) + ty] = pt[0];
      ps[(c - k0 + 1u) * (M / 4u) + ty] = pt[1];
      ps[(c - k0 + 2u) * (M / 4u) + ty] = pt[2];
      ps[(c - k0 + 3u) * (M / 4u) + ty] = pt[3];
    }
    for (var v0 = k0; v0 < min(k0 + PH, kEnd - p0); v0 += VK) { // no stage past the last unmasked key
      workgroupBarrier();
      let n = min(VK, kEnd - p0 - v0) * (DC / 4u);
      for (var j = 0u; j < 4u; j++) {
        let e = lid + 256u * j;
        if (e < n) {
          var y = va[j];
          for (var i = 0u; i < 4u; i++) {
            if (notFinite(y[i])) { atomicOr(&keyBad[v0 + e / (DC / 4u)], 2u); y[i] = 0.0; }
          }
          stage[e] = y;
        }
      }
      workgroupBarrier();
      let vNext = v0 + VK;
      if (vNext < min(k0 + PH, kEnd - p0)) {
        va = fetchV4(lid, vNext, kEnd - p0 - vNext, hk, p0, b1);
      } else if (k0 + PH < TN && k0 + PH < kEnd - p0) {
        va = fetchV4(lid, k0 + PH, kEnd - p0 - k0 - PH, hk, p0, b1);
      }
      if (ty * 4u < nRows) { // a full run of VK keys gets a constant trip count
        if (kEnd - p0 - v0 >= VK) {
          for (var c = 0u; c < VK; c++) { pvKey(o, v0 - k0 + c, c, tx, ty); }
        } else {
          for (var c = 0u; c < kEnd - p0 - v0; c++) { pvKey(o, v0 - k0 + c, c, tx, ty); }
        }
      }
    }
  }
  workgroupBarrier(); // keyBad bit 1 complete
}
`;
