/**
 * PLACEHOLDER (wt-ana branch only): the tensor file readers are written by another helper; this stub only gives
 * `moba analyze` the signature to compile against and is replaced by that helper's version at merge.
 */
import { type HostTensor, MobaError } from '@moba/core';

export interface TensorSpec {
  readonly path: string;
  readonly format?: 'npy' | 'safetensors' | 'raw';
  readonly name?: string;
  readonly dtype?: 'f32' | 'f16' | 'bf16';
  readonly shape?: readonly number[];
}

/** PLACEHOLDER: always throws; the real reader comes from the io helper's branch. */
export function readTensor(spec: TensorSpec): HostTensor {
  throw new MobaError('E_UNSUPPORTED', `reading ${spec.path}: the tensor file readers are not in this build (placeholder src/io/index.ts)`, 'path');
}
