// The argument checks of the one-call API: moba()'s inputs and config and mobaBackward()'s gradient name the
// parameter at fault, unknown keys and nulls are refused, and a failed call leaves nothing uploaded behind.
import { describe, expect, it } from 'vitest';
import {
  type Backend, type Capabilities, type DeviceTensor, type HostTensor, type MobaConfig, type MobaInputs, MobaError,
  checkKconv, checkProblem, hostTensor, moba, mobaBackward,
} from '../src/index.js';

const caps: Capabilities = {
  dtypes: ['f32', 'f16', 'bf16'], maxHeadDim: 64, maxTopk: 8, maxBlockSize: 64, nonCausal: true, kconv: true,
  maxKconvWidth: 8, memoryBytes: 1 << 24, deterministic: true,
};

/** A backend that checks every call as the shell does and computes nothing; `live` counts tensors not disposed. */
function fakeBackend(): Backend & { live: Set<unknown> } {
  const live = new Set<unknown>();
  const dev = (dtype: DeviceTensor['dtype'], shape: readonly number[]): DeviceTensor => {
    const t = { backend: 'fake', dtype, shape };
    live.add(t);
    return t;
  };
  const routing = { backend: 'fake', T: 0, Hq: 0, topk: 0, blockSize: 0, causal: true };
  const no = (): never => { throw new Error('not used by these tests'); };
  return {
    name: 'fake', caps, live,
    upload: async (t: HostTensor) => dev(t.dtype, t.shape),
    download: no,
    route: async (q, k, layout, cfg) => { checkProblem(caps, q, k, null, layout, cfg); return routing; },
    routingFromIndices: no,
    routingIndices: no,
    forward: async (q, k, v, _r, layout, cfg) => {
      const p = checkProblem(caps, q, k, v, layout, cfg);
      return { out: dev(q.dtype, q.shape), lse: dev('f32', [p.shape.T, p.shape.Hq]) };
    },
    backward: async (q, k, v) => ({ dq: dev(q.dtype, q.shape), dk: dev(k.dtype, k.shape), dv: dev(v.dtype, v.shape) }),
    kconv: async (k, w, layout) => { checkKconv(caps, k, w, layout); return dev(k.dtype, k.shape); },
    kconvBackward: async (k, w) => ({ dk: dev(k.dtype, k.shape), dw: dev(w.dtype, w.shape) }),
    sync: async () => {},
    memoryStats: () => ({ liveBytes: 0, liveTensors: live.size, liveRoutings: 0, scratchBytes: 0, pooledBytes: 0, peakBytes: 0 }),
    resetPeakMemory: () => {},
    dispose: (...items) => { for (const x of items) live.delete(x); },
    destroy: async () => {},
  } as Backend & { live: Set<unknown> };
}

const T = 8;
const inputs = (): MobaInputs => ({
  q: hostTensor('f32', [T, 2, 4]), k: hostTensor('f32', [T, 1, 4]), v: hostTensor('f32', [T, 1, 4]), cuSeqlens: Int32Array.of(0, T),
});
const cfg: MobaConfig = { blockSize: 4, topk: 2 };

async function rejection(p: Promise<unknown>): Promise<MobaError> {
  try {
    await p;
  } catch (e) {
    if (e instanceof MobaError) return e;
    throw e;
  }
  throw new Error('did not reject');
}

describe('moba() and mobaBackward() arguments', () => {
  it('a null or missing q, k, v or dOut names that parameter', async () => {
    for (const name of ['q', 'k', 'v'] as const) {
      const b = fakeBackend();
      const e = await rejection(moba(b, { ...inputs(), [name]: null as unknown as HostTensor }, cfg));
      expect(e.param).toBe(name);
      expect(e.code).toBe('E_SHAPE');
      expect(e.message).toContain(`${name} = null`);
      expect(b.live.size).toBe(0);
    }
    const b = fakeBackend();
    const res = await moba(b, inputs(), cfg);
    const e = await rejection(mobaBackward(b, res.ctx, null as unknown as HostTensor));
    expect([e.code, e.param]).toEqual(['E_SHAPE', 'dOut']);
    res.ctx.dispose();
  });

  it('kconvWeight that is not a tensor (0, null, a number array) is refused naming kconvWeight, not taken as "no kconv"', async () => {
    for (const w of [0, null, false, '', [1, 2, 3]]) {
      const b = fakeBackend();
      const e = await rejection(moba(b, { ...inputs(), kconvWeight: w as unknown as HostTensor }, cfg));
      expect(e.param).toMatch(/^kconvWeight/);
      expect(['E_RANGE', 'E_SHAPE']).toContain(e.code);
      expect(b.live.size).toBe(0);
    }
    const b = fakeBackend();
    const res = await moba(b, { ...inputs(), kconvWeight: undefined }, cfg); // undefined: no kconv
    expect(res.ctx.kUsed).toBe(res.ctx.k);
    res.ctx.dispose();
  });

  it('unknown input and config keys are E_RANGE with a suggestion; null config values are refused', async () => {
    const b = fakeBackend();
    const w = hostTensor('f32', [4, 3]);
    let e = await rejection(moba(b, { ...inputs(), kconvWieght: w } as MobaInputs, cfg));
    expect([e.code, e.param]).toEqual(['E_RANGE', 'kconvWieght']);
    expect(e.message).toContain("unknown moba() input 'kconvWieght' (did you mean 'kconvWeight'?)");
    e = await rejection(moba(b, inputs(), { ...cfg, casual: false } as MobaConfig));
    expect(e.message).toContain("unknown config key 'casual' (did you mean 'causal'?)");
    for (const key of ['scale', 'causal'] as const) {
      e = await rejection(moba(b, inputs(), { ...cfg, [key]: null } as unknown as MobaConfig));
      expect([e.code, e.param]).toEqual(['E_RANGE', key]);
    }
    expect(b.live.size).toBe(0);
    e = await rejection(moba(b, null as unknown as MobaInputs, cfg));
    expect(e.code).toBe('E_RANGE');
  });
});
