// HandleTable: the device-handle bookkeeping every backend shares (disposed → E_DEVICE, foreign → E_UNSUPPORTED).
import { describe, expect, it } from 'vitest';
import { HandleTable, MobaError, checkRoutingLayout } from '../src/index.js';

function error(fn: () => unknown): MobaError {
  try { fn(); } catch (e) { if (e instanceof MobaError) return e; throw e; }
  throw new Error('did not throw');
}

describe('HandleTable', () => {
  it('maps handles to values and refuses foreign ones with E_UNSUPPORTED naming the backend', () => {
    const t = new HandleTable<string>('CPU');
    const h = Object.freeze({ backend: 'cpu' });
    t.add(h, 'data');
    expect(t.get('q', h)).toBe('data');
    const e = error(() => t.get('k', { backend: 'webgpu' }));
    expect(e.code).toBe('E_UNSUPPORTED');
    expect(e.param).toBe('k');
    expect(e.message).toBe('[E_UNSUPPORTED] k is not a tensor of this CPU backend (backend: webgpu): upload it first');
    expect(error(() => t.get('v', null)).message).toContain('(backend: undefined)');
    expect(error(() => t.get('v', 3)).code).toBe('E_UNSUPPORTED');
  });

  it('free returns the value once, then get gives E_DEVICE; clear forgets everything', () => {
    const t = new HandleTable<number[]>('CUDA');
    const h = {};
    const v = [1, 2];
    t.add(h, v);
    expect(t.free(h)).toBe(v);
    expect(t.free(h)).toBeUndefined(); // idempotent
    expect(t.free({})).toBeUndefined();
    expect(t.free(undefined)).toBeUndefined();
    const e = error(() => t.get('tensor', h));
    expect([e.code, e.param, e.message]).toEqual(['E_DEVICE', 'tensor', '[E_DEVICE] tensor was disposed']);
    const h2 = {};
    t.add(h2, [3]);
    t.clear();
    expect(t.peek(h2)).toBeUndefined();
    expect(error(() => t.get('q', h2)).code).toBe('E_UNSUPPORTED');
  });

  it('a routing table words its messages for routings and shares the freed set with its sibling', () => {
    const tensors = new HandleTable<string>('WebGPU');
    const routings = new HandleTable<string>('WebGPU', 'routing', tensors);
    const r = { backend: 'webgpu' };
    routings.add(r, 'store');
    expect(error(() => routings.get('routing', { backend: 'cpu' })).message)
      .toBe('[E_UNSUPPORTED] routing was not made by this WebGPU backend (backend: cpu)');
    expect(tensors.free(r)).toBeUndefined(); // not a tensor: nothing freed
    expect(routings.free(r)).toBe('store');
    expect(error(() => routings.get('routing', r)).message).toBe('[E_DEVICE] routing was disposed');
    expect(error(() => tensors.get('q', r)).code).toBe('E_DEVICE'); // a disposed routing passed as a tensor
  });
});

describe('checkRoutingLayout', () => {
  it('passes the store through for the same cuSeqlens and gives E_RANGE otherwise', () => {
    const cu0 = Int32Array.from([0, 4, 8]);
    const store = { cuSeqlensQ: cu0, cuSeqlensK: cu0 };
    expect(checkRoutingLayout(store, Int32Array.from([0, 4, 8]), Int32Array.from([0, 4, 8]))).toBe(store);
    for (const cu of [[0, 8], [0, 4, 9]]) {
      const e = error(() => checkRoutingLayout(store, Int32Array.from(cu), Int32Array.from(cu)));
      expect([e.code, e.param]).toEqual(['E_RANGE', 'routing']);
      expect(e.message).toBe(`[E_RANGE] routing was made for cuSeqlens [0, 4, 8], not cuSeqlens [${cu.join(', ')}]`);
    }
  });

  it('compares query and key boundaries apart (SPEC §8)', () => {
    const store = { cuSeqlensQ: Int32Array.from([0, 1, 2]), cuSeqlensK: Int32Array.from([0, 4, 8]) };
    expect(checkRoutingLayout(store, Int32Array.from([0, 1, 2]), Int32Array.from([0, 4, 8]))).toBe(store);
    const e = error(() => checkRoutingLayout(store, Int32Array.from([0, 4, 8]), Int32Array.from([0, 4, 8])));
    expect(e.message).toBe('[E_RANGE] routing was made for cuSeqlensQ [0, 1, 2], cuSeqlensK [0, 4, 8], not cuSeqlens [0, 4, 8]');
  });
});
