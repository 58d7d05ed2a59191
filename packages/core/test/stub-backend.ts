// A minimal BackendShell for core's own tests: tensors are host copies, routings their indices; the stages
// that compute are not needed here and throw.
import {
  type Capabilities, type CheckedProblem, type DeviceTensor, type HostTensor, BackendShell, hostTensor,
} from '../src/index.js';

export class StubBackend extends BackendShell<HostTensor, Int32Array> {
  readonly name = 'stub';
  constructor(readonly caps: Capabilities) {
    super('stub');
  }

  protected async doUpload(t: HostTensor): Promise<HostTensor> {
    return hostTensor(t.dtype, t.shape, t.data.slice());
  }
  protected async doDownload(_t: DeviceTensor, h: HostTensor): Promise<HostTensor> {
    return h;
  }
  protected async doRoute(p: CheckedProblem): Promise<Int32Array> {
    return new Int32Array(p.shape.T * p.shape.Hq * p.cfg.topk).fill(-1);
  }
  protected async doRoutingFromIndices(indices: Int32Array): Promise<Int32Array> {
    return indices.slice();
  }
  protected async doRoutingIndices(_r: unknown, i: Int32Array): Promise<Int32Array> {
    return i.slice();
  }
  protected doForward(): never {
    throw new Error('not in the stub');
  }
  protected doBackward(): never {
    throw new Error('not in the stub');
  }
  protected doKconv(): never {
    throw new Error('not in the stub');
  }
  protected doKconvBackward(): never {
    throw new Error('not in the stub');
  }
  protected bytesOf(h: HostTensor): number {
    return h.data.byteLength;
  }
  protected routingBytesOf(i: Int32Array): number {
    return i.byteLength;
  }
  protected async doSync(): Promise<void> {}
  protected freeTensor(): void {}
  protected freeRouting(): void {}
  protected async doDestroy(): Promise<void> {}
}
