/**
 * The two register-blocked inner loops every attention kernel here is made of (forward, backward,
 * routing and the dense baseline alike): a tile of dot products `S = A Bᵀ` and a tile of
 * accumulations `acc += C V`. Rows are addressed through offset arrays, so gathered (densified)
 * rows cost nothing to form. Each row i only touches its own column range [lo_i, hi_i).
 */

/**
 * `S[i·ss + j] = A[aOff[i] : +D] · B[bOff[j] : +D]` for i < m and j in [lo[i], hi[i]).
 * Rows are processed in pairs on their common column range (2 rows × 4 columns: 8 independent
 * accumulators, 6 loads per 16 flops), the ragged rest row by row.
 */
export function dotTile(
  A: Float32Array, aOff: Int32Array, B: Float32Array, bOff: Int32Array,
  m: number, lo: Int32Array, hi: Int32Array, S: Float64Array, ss: number, D: number,
): void {
  pairedTile(dotRow, dotPair, A, aOff, B, bOff, m, lo, hi, S, ss, D);
}

/** Rows i and i + 1 of `dotTile` on their common columns [j0, j1). */
function dotPair(A: Float32Array, aOff: Int32Array, i: number, B: Float32Array, bOff: Int32Array, j0: number, j1: number, S: Float64Array, ss: number, D: number): void {
  const a = aOff[i], b = aOff[i + 1], sa = i * ss, sb = sa + ss;
  let j = j0;
  for (; j + 4 <= j1; j += 4) {
    const k0 = bOff[j], k1 = bOff[j + 1], k2 = bOff[j + 2], k3 = bOff[j + 3];
    let a0 = 0, a1 = 0, a2 = 0, a3 = 0, b0 = 0, b1 = 0, b2 = 0, b3 = 0;
    for (let d = 0; d < D; d++) {
      const x = A[a + d], y = A[b + d];
      const u0 = B[k0 + d], u1 = B[k1 + d], u2 = B[k2 + d], u3 = B[k3 + d];
      a0 += x * u0; a1 += x * u1; a2 += x * u2; a3 += x * u3;
      b0 += y * u0; b1 += y * u1; b2 += y * u2; b3 += y * u3;
    }
    S[sa + j] = a0; S[sa + j + 1] = a1; S[sa + j + 2] = a2; S[sa + j + 3] = a3;
    S[sb + j] = b0; S[sb + j + 1] = b1; S[sb + j + 2] = b2; S[sb + j + 3] = b3;
  }
  for (; j < j1; j++) {
    const k0 = bOff[j];
    let a0 = 0, b0 = 0;
    for (let d = 0; d < D; d++) {
      const u = B[k0 + d];
      a0 += A[a + d] * u;
      b0 += A[b + d] * u;
    }
    S[sa + j] = a0;
    S[sb + j] = b0;
  }
}

/** Row i of `dotTile` on columns [j0, j1). */
function dotRow(A: Float32Array, aOff: Int32Array, i: number, B: Float32Array, bOff: Int32Array, j0: number, j1: number, S: Float64Array, ss: number, D: number): void {
  const a = aOff[i], sa = i * ss;
  let j = j0;
  for (; j + 4 <= j1; j += 4) {
    const k0 = bOff[j], k1 = bOff[j + 1], k2 = bOff[j + 2], k3 = bOff[j + 3];
    let a0 = 0, a1 = 0, a2 = 0, a3 = 0;
    for (let d = 0; d < D; d++) {
      const x = A[a + d];
      a0 += x * B[k0 + d]; a1 += x * B[k1 + d]; a2 += x * B[k2 + d]; a3 += x * B[k3 + d];
    }
    S[sa + j] = a0; S[sa + j + 1] = a1; S[sa + j + 2] = a2; S[sa + j + 3] = a3;
  }
  for (; j < j1; j++) {
    const k0 = bOff[j];
    let a0 = 0;
    for (let d = 0; d < D; d++) a0 += A[a + d] * B[k0 + d];
    S[sa + j] = a0;
  }
}

/**
 * `acc[accOff[i] : +D] += Σ_{j in [lo[i], hi[i])} C[i·cs + j] · V[vOff[j] : +D]` for i < m.
 * Pairs of rows share their common range (2 rows × 4 columns of V per pass); a column outside a
 * row's range is never read for that row, so a NaN there cannot leak into it through 0 · NaN.
 */
export function axpyTile(
  C: Float64Array, cs: number, V: Float32Array, vOff: Int32Array,
  m: number, lo: Int32Array, hi: Int32Array, acc: Float64Array, accOff: Int32Array, D: number,
): void {
  pairedTile(axpyRow, axpyPair, C, cs, V, vOff, m, lo, hi, acc, accOff, D);
}

/** Rows i and i + 1 of `axpyTile` on their common columns [j0, j1). */
function axpyPair(C: Float64Array, cs: number, i: number, V: Float32Array, vOff: Int32Array, j0: number, j1: number, acc: Float64Array, accOff: Int32Array, D: number): void {
  const ca = i * cs, cb = ca + cs, oa = accOff[i], ob = accOff[i + 1];
  let j = j0;
  for (; j + 4 <= j1; j += 4) {
    const p0 = C[ca + j], p1 = C[ca + j + 1], p2 = C[ca + j + 2], p3 = C[ca + j + 3];
    const q0 = C[cb + j], q1 = C[cb + j + 1], q2 = C[cb + j + 2], q3 = C[cb + j + 3];
    const v0 = vOff[j], v1 = vOff[j + 1], v2 = vOff[j + 2], v3 = vOff[j + 3];
    for (let d = 0; d < D; d++) {
      const w0 = V[v0 + d], w1 = V[v1 + d], w2 = V[v2 + d], w3 = V[v3 + d];
      acc[oa + d] += p0 * w0 + p1 * w1 + p2 * w2 + p3 * w3;
      acc[ob + d] += q0 * w0 + q1 * w1 + q2 * w2 + q3 * w3;
    }
  }
  for (; j < j1; j++) {
    const p0 = C[ca + j], q0 = C[cb + j], v0 = vOff[j];
    for (let d = 0; d < D; d++) {
      const w = V[v0 + d];
      acc[oa + d] += p0 * w;
      acc[ob + d] += q0 * w;
    }
  }
}

/** Row i of `axpyTile` on columns [j0, j1). */
function axpyRow(C: Float64Array, cs: number, i: number, V: Float32Array, vOff: Int32Array, j0: number, j1: number, acc: Float64Array, accOff: Int32Array, D: number): void {
  const ca = i * cs, oa = accOff[i];
  let j = j0;
  for (; j + 4 <= j1; j += 4) {
    const p0 = C[ca + j], p1 = C[ca + j + 1], p2 = C[ca + j + 2], p3 = C[ca + j + 3];
    const v0 = vOff[j], v1 = vOff[j + 1], v2 = vOff[j + 2], v3 = vOff[j + 3];
    for (let d = 0; d < D; d++) acc[oa + d] += p0 * V[v0 + d] + p1 * V[v1 + d] + p2 * V[v2 + d] + p3 * V[v3 + d];
  }
  for (; j < j1; j++) {
    const p0 = C[ca + j], v0 = vOff[j];
    for (let d = 0; d < D; d++) acc[oa + d] += p0 * V[v0 + d];
  }
}

/**
 * Row i (or rows i and i + 1) of a tile on columns [j0, j1): `x`/`xo` address the left operand's rows, `z`/`zo`
 * the output's (an offset array or a row stride each).
 */
type RowOp<X, XO, ZO> = (x: X, xo: XO, i: number, Y: Float32Array, yOff: Int32Array, j0: number, j1: number, z: Float64Array, zo: ZO, D: number) => void;

/**
 * The row pairing both tiles share: rows in pairs on their common column range (`pair`), the ragged rest and
 * an odd last row by `row`; a pair with no common column is two single rows.
 */
function pairedTile<X, XO, ZO>(
  row: RowOp<X, XO, ZO>, pair: RowOp<X, XO, ZO>, x: X, xo: XO, Y: Float32Array, yOff: Int32Array,
  m: number, lo: Int32Array, hi: Int32Array, z: Float64Array, zo: ZO, D: number,
): void {
  let i = 0;
  for (; i + 1 < m; i += 2) {
    const j0 = Math.max(lo[i], lo[i + 1]);
    const j1 = Math.min(hi[i], hi[i + 1]);
    if (j0 >= j1) {
      row(x, xo, i, Y, yOff, lo[i], hi[i], z, zo, D);
      row(x, xo, i + 1, Y, yOff, lo[i + 1], hi[i + 1], z, zo, D);
      continue;
    }
    pair(x, xo, i, Y, yOff, j0, j1, z, zo, D);
    for (let r = i; r <= i + 1; r++) {
      row(x, xo, r, Y, yOff, lo[r], j0, z, zo, D);
      row(x, xo, r, Y, yOff, j1, hi[r], z, zo, D);
    }
  }
  if (i < m) row(x, xo, i, Y, yOff, lo[i], hi[i], z, zo, D);
}

const LOG2E = Math.LOG2E;
const LN2 = Math.LN2;
/** 1.5·2^52: adding and subtracting it rounds a double to the nearest integer without a call. */
const ROUND = 6755399441055744;
/** 2^n for n in [-1100, 63], indexed by n + 1100. */
const POW2 = Float64Array.from({ length: 1164 }, (_, i) => 2 ** (i - 1100));

/**
 * exp(x) to ~1e-8 relative error, about twice as fast as Math.exp in V8 (the softmax's exp is a
 * fifth of the attention time otherwise): exp(x) = 2^n · e^t with n = round(x·log2 e) and
 * t = (x·log2 e − n)·ln 2 in [−0.35, 0.35], e^t by its degree-7 Taylor polynomial (Estrin form).
 * -inf gives 0, NaN gives NaN, and arguments outside the table fall back to Math.exp.
 */
export function fastExp(x: number): number {
  const y = x * LOG2E;
  if (!(y > -1074 && y < 63)) return y !== y ? NaN : y > 0 ? Math.exp(x) : 0;
  const n = y + ROUND - ROUND;
  const t = (y - n) * LN2;
  const t2 = t * t;
  const p = 1 + t + t2 * (1 / 2 + t * (1 / 6) + t2 * (1 / 24 + t * (1 / 120) + t2 * (1 / 720 + t * (1 / 5040))));
  return p * POW2[n + 1100];
}
