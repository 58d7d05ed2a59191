/**
 * The staging of the dK/dV kernel (backward-dkdv.wgsl.ts, whose constants and arrays it uses): each round's
 * global loads go into registers (`load1`, `load2`, issued before the previous round's arithmetic), and from
 * there into workgroup memory (`store1`, `store2`, after it). Step 1 stages Qᵀ, dOᵀ, Kᵀ, Vᵀ (DK dims, vec4
 * over rows or keys); step 3 stages whole rows of dO and Q (RC rows) and of K (VK keys), vec4 over dims.
 * Also the kernel's only accesses to q, k, v, dOut, dk and dv (loadQ … addDv).
 */
export const dkdvStageWgsl = /* wgsl */ `
// Loads round (dims d0 .. + DK) of step 1: vec4 e < 2·DK·M/4 is 4 rows × 1 dim of q, then dO; the rest
// 4 keys × 1 dim of k, then v (dims fastest across invocations, so that loads coalesce).
fn load1(t: Tile, nr: u32, d0: u32, pre: ptr<function, array<vec4<f32>, PF1>>, lid: u32) {
  for (var u = 0u; u < PF1; u++) {
    let e = lid + 256u * u;
    var x = vec4<f32>(0.0);
    if (e < DK * M / 2u) {
      let f = e % (DK * M / 4u);
      let d = d0 + f % DK;
      for (var i = 0u; i < 4u; i++) {
        let r = (f / DK) * 4u + i;
        if (r < nr && d < P.D) { // (select() would load both)
          if (e < DK * M / 4u) { x[i] = loadQ(rowAt[r] + d); } else { x[i] = loadDo(rowAt[r] + d); }
        }
      }
    } else if (e < N1) {
      let f = (e - DK * M / 2u) % (16u * DK);
      let d = d0 + f % DK;
      for (var i = 0u; i < 4u; i++) {
        let c = t.c0 + (f / DK) * 4u + i;
        if (c < t.c1 && d < P.D) {
          let at = (c * P.Hkv + t.hk) * P.D + d;
          if (e < DK * M / 2u + 16u * DK) { x[i] = loadK(at); } else { x[i] = loadV(at); }
        }
      }
    }
    (*pre)[u] = x;
  }
}

// Stores a step-1 round into the buffer at base, transposed (vec4 over rows or keys); flags NaN and ±∞ (stored as 0).
fn store1(base: u32, pre: ptr<function, array<vec4<f32>, PF1>>, lid: u32) {
  for (var u = 0u; u < PF1; u++) {
    let e = lid + 256u * u;
    var x = (*pre)[u];
    if (e < DK * M / 2u) {
      let w = e / (DK * M / 4u); // 0: q, 1: dO
      let f = e % (DK * M / 4u);
      for (var i = 0u; i < 4u; i++) { if (notFinite(x[i])) { atomicOr(&rowIn[(f / DK) * 4u + i], 1u << w); x[i] = 0.0; } }
      sm[base + (w * DK + f % DK) * QS + f / DK] = x;
    } else if (e < N1) {
      let w = (e - DK * M / 2u) / (16u * DK); // 0: k, 1: v
      let f = (e - DK * M / 2u) % (16u * DK);
      for (var i = 0u; i < 4u; i++) { if (notFinite(x[i])) { atomicOr(&keyIn[(f / DK) * 4u + i], 1u << w); x[i] = 0.0; } }
      sm[base + 2u * DK * QS + (w * DK + f % DK) * KS + f / DK] = x;
    }
  }
}

// Loads round j of step 3: rows j·RC .. + RC − 1 of dO, then of q, then keys j·VK .. + VK − 1 of k, whole rows.
fn load2(t: Tile, nr: u32, j: u32, pre: ptr<function, array<vec4<f32>, PF2>>, lid: u32) {
  for (var u = 0u; u < PF2; u++) {
    let e = lid + 256u * u;
    let d = (e % D4) * 4u;
    var x = vec4<f32>(0.0);
    if (e < 2u * RC * D4) {
      let r = j * RC + (e % (RC * D4)) / D4;
      for (var i = 0u; i < 4u; i++) {
        if (r < nr && d + i < P.D) {
          if (e < RC * D4) { x[i] = loadDo(rowAt[r] + d + i); } else { x[i] = loadQ(rowAt[r] + d + i); }
        }
      }
    } else if (e < N2) {
      let c = t.c0 + j * VK + (e - 2u * RC * D4) / D4;
      for (var i = 0u; i < 4u; i++) {
        if (c < t.c1 && d + i < P.D) { x[i] = loadK((c * P.Hkv + t.hk) * P.D + d + i); }
      }
    }
    (*pre)[u] = x;
  }
}

// Stores a step-3 round (non-finite values already flagged by step 1: replaced by 0).
fn store2(pre: ptr<function, array<vec4<f32>, PF2>>, lid: u32) {
  for (var u = 0u; u < PF2; u++) {
    let e = lid + 256u * u;
    if (e < N2) { sm[S2 + e] = select((*pre)[u], vec4<f32>(0.0), notFinite4((*pre)[u])); }
  }
}

// Every read of q, k, v, dOut and write of dk, dv goes through these.
fn loadQ(i: u32) -> f32 { return qAt(i); }
fn loadK(i: u32) -> f32 { return kAt(i); }
fn loadV(i: u32) -> f32 { return vAt(i); }
fn loadDo(i: u32) -> f32 { return dOutAt(i); }
// dk[i] += x (the earlier passes' sum); NaN when bad or already NaN.
fn addDk(i: u32, x: f32, bad: bool) { let o = dkAt(i); dkPut(i, select(o + x, nanF(), bad || isNan(o))); }
fn addDv(i: u32, x: f32, bad: bool) { let o = dvAt(i); dvPut(i, select(o + x, nanF(), bad || isNan(o))); }
`;
