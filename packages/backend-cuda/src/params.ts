/**
 * Kernel parameters for cuLaunchKernel: `kernelParams` is an array of pointers, one per kernel argument,
 * each pointing at that argument's value. We keep one native block that never moves: `slots` 8-byte
 * value slots followed by `slots` pointers, pointer i = address of slot i (written once). A launch writes
 * its values into the slots (`packParams`, pure) and passes the pointer array's address; the driver
 * copies the values during the call, so the block is reused by the next launch.
 */
import { MobaError } from '@moba/core';

export type KernelArg =
  | { readonly kind: 'ptr'; readonly value: bigint }
  | { readonly kind: 'i32'; readonly value: number }
  | { readonly kind: 'i64'; readonly value: number }
  | { readonly kind: 'f32'; readonly value: number };

export const ptr = (value: bigint): KernelArg => ({ kind: 'ptr', value });
export const i32 = (value: number): KernelArg => ({ kind: 'i32', value });
export const i64 = (value: number): KernelArg => ({ kind: 'i64', value });
export const f32 = (value: number): KernelArg => ({ kind: 'f32', value });

export const SLOT_BYTES = 8;
export const MAX_ARGS = 32;

/** Writes each argument into its 8-byte slot of `values` (little-endian, as the GPU reads it). */
export function packParams(args: readonly KernelArg[], values: DataView): void {
  if (args.length > MAX_ARGS || args.length * SLOT_BYTES > values.byteLength) {
    throw new MobaError('E_DEVICE', `kernel has ${args.length} arguments: at most ${Math.min(MAX_ARGS, values.byteLength / SLOT_BYTES)} supported`, 'launch');
  }
  args.forEach((a, i) => {
    const o = i * SLOT_BYTES;
    values.setBigUint64(o, 0n, true);
    switch (a.kind) {
      case 'ptr': values.setBigUint64(o, a.value, true); break;
      case 'i32':
        if (!Number.isInteger(a.value) || a.value < -(2 ** 31) || a.value >= 2 ** 31) throw new MobaError('E_RANGE', `kernel argument ${i} = ${a.value} does not fit in int32`, 'launch');
        values.setInt32(o, a.value, true);
        break;
      case 'i64':
        if (!Number.isSafeInteger(a.value)) throw new MobaError('E_RANGE', `kernel argument ${i} = ${a.value} is not a safe integer`, 'launch');
        values.setBigInt64(o, BigInt(a.value), true);
        break;
      case 'f32': values.setFloat32(o, a.value, true); break;
    }
  });
}

/** The pointer array of a block at native address `base`: pointer i = base + 8·i (its slot). */
export function writeSlotPointers(base: bigint, pointers: DataView, slots = MAX_ARGS): void {
  for (let i = 0; i < slots; i++) pointers.setBigUint64(i * 8, base + BigInt(i * SLOT_BYTES), true);
}
