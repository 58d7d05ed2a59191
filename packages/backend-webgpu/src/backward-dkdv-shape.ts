/**
 * The shape of the dK/dV kernel (backward-dkdv.wgsl.ts): its template constants, its workgroup memory, and the
 * choice of a shape within a budget of workgroup memory (chooseTiles in launch.ts).
 */
/** Template constants (they size register arrays): vec4 dims Dc / 64, rows per invocation, and the rounds. */
export interface DkdvShape {
  readonly oc4: number;
  /** Rows per invocation in S/dP and dQ (M = 16·rw rows per step). */
  readonly rw: number;
  /** Head dims per S/dP round. */
  readonly dk: number;
  /** Rows (dK/dV) and keys (dQ, a multiple of 4) per round of step 3. */
  readonly rc: number;
  readonly vk: number;
}

/** vec4s of workgroup memory in `sm`: max(two S/dP buffers, P + dS + the step-3 stage). */
export function dkdvSm4(s: DkdvShape): number {
  const m = 16 * s.rw;
  const b1 = 2 * s.dk * (m / 4 + 1 + 17);
  return Math.max(2 * b1, m * 33 + (2 * s.rc + s.vk) * 16 * s.oc4);
}

/** Workgroup bytes of the dK/dV kernel: sm, six row arrays, two key arrays, listInfo, passBase (backward-dkdv.wgsl.ts). */
export function dkdvBytes(s: DkdvShape): number {
  return 16 * dkdvSm4(s) + 4 * (6 * 16 * s.rw + 2 * 64) + 12 + 64 /* slack, as launch.ts */;
}

/**
 * The dK/dV kernel's shape: most rows per step, then most rows (and keys) per step-3 round, then 8 dims per S/dP
 * round (16 only where 8 does not fit: on the H200, 8 dims took 115 ms at 32K in the 16-head, D 128, bf16,
 * B 128, top-8 bench configuration against 128 ms for 16, bench/results/2026-11-29-webgpu-h200-round3-ab3.log),
 * such that each round loads at most 4 vec4 per invocation (the prefetch registers).
 */
export function dkdvShape(dc: number, bytes: number): DkdvShape {
  for (const rw of [4, 2, 1]) {
    const m = 16 * rw;
    for (let rc = m; rc >= 1; rc /= 2) {
      const vk = Math.max(4, (rc * 64) / m); // as many step-3 rounds for the keys as for the rows
      if ((2 * rc + vk) * (dc / 4) > 1024) continue;
      for (const dk of [8, 16, 4, 2]) {
        const s = { oc4: dc / 64, rw, dk, rc, vk };
        if (dk * (m / 2 + 32) <= 1024 && dkdvBytes(s) <= bytes) return s;
      }
    }
  }
  throw new Error(`no dK/dV tiles fit ${bytes} bytes of workgroup memory`);
}

/** The chosen dK/dV shape with some fields imposed (the unstable dkdvShape option, to time other shapes); checked. */
export function withDkdv(chosen: DkdvShape, imposed: Partial<DkdvShape>, bytes: number): DkdvShape {
  const s = { ...chosen, ...imposed, oc4: chosen.oc4 };
  const ok = [1, 2, 4].includes(s.rw) && [1, 2, 4, 8, 16, 32].includes(s.dk) && Number.isInteger(s.rc) && s.rc >= 1 && s.rc <= 16 * s.rw
    && s.vk % 4 === 0 && s.vk >= 4 && 64 % s.vk === 0 && dkdvBytes(s) <= bytes;
  if (!ok) throw new Error(`dK/dV shape ${JSON.stringify(s)} is invalid or takes over ${bytes} bytes of workgroup memory`);
  return s;
}
