/**
 * `timeBackend` times every op from an idle device to the op's completion on the device: recorded through
 * `wrapBackend` on a real (reference) backend, each timed op reads sync, start, the op, sync, end — so no
 * queued work escapes a phase and no earlier work is charged to it.
 */
import { describe, expect, it } from 'vitest';
import { type Backend, Rng, hostTensor, moba, mobaBackward, timeBackend, wrapBackend } from '@moba/core';
import { createReferenceBackend } from '../src/reference-backend.js';

/** `inner` with `>name` / `<name` logged around every async member (dispose is synchronous and left out). */
function recorded(inner: Backend, log: string[]): Backend {
  const around = <A extends unknown[], R>(name: string, f: (...a: A) => Promise<R>) => async (...a: A): Promise<R> => {
    log.push(`>${name}`);
    const r = await f(...a);
    log.push(`<${name}`);
    return r;
  };
  return wrapBackend(inner, {
    // generic in the dtype, so written out rather than through `around`
    upload: async (t) => { log.push('>upload'); const r = await inner.upload(t); log.push('<upload'); return r; },
    download: async (t) => { log.push('>download'); const r = await inner.download(t); log.push('<download'); return r; },
    route: around('route', (q, k, l, c) => inner.route(q, k, l, c)),
    routingIndices: around('routingIndices', (r) => inner.routingIndices(r)),
    forward: around('forward', (q, k, v, r, l, c) => inner.forward(q, k, v, r, l, c)),
    backward: around('backward', (q, k, v, o, lse, g, r, l, c) => inner.backward(q, k, v, o, lse, g, r, l, c)),
    kconv: around('kconv', (k, w, l) => inner.kconv(k, w, l)),
    kconvBackward: around('kconvBackward', (k, w, g, l) => inner.kconvBackward(k, w, g, l)),
    sync: around('sync', () => inner.sync()),
  });
}

describe('timeBackend', () => {
  it('encloses every timed op between two device syncs, through a whole moba() + mobaBackward()', async () => {
    const log: string[] = [];
    const inner = createReferenceBackend();
    const ms = new Map<string, number>();
    const b = timeBackend(recorded(inner, log), {
      start: (op) => log.push(`[${op}`),
      end: (op, t) => {
        log.push(`${op}]`);
        ms.set(op, (ms.get(op) ?? 0) + t);
      },
    });
    const rng = new Rng(7);
    const T = 40, Hq = 2, Hkv = 1, D = 8, W = 3;
    const t = (dims: number[], std = 1) => hostTensor('f32', dims, rng.normals(dims.reduce((a, c) => a * c, 1), std));
    const [q, k, v, dOut] = [await b.upload(t([T, Hq, D])), await b.upload(t([T, Hkv, D])), await b.upload(t([T, Hkv, D])), await b.upload(t([T, Hq, D]))];
    const res = await moba(b, { q, k, v, cuSeqlens: Int32Array.of(0, 25, T), kconvWeight: t([Hkv * D, W], 0.3) }, { blockSize: 8, topk: 2 });
    const g = await mobaBackward(b, res.ctx, dOut);
    await b.download(g.dq);
    await b.routingIndices(res.routing);

    const ops: string[] = [];
    for (let i = 0; i < log.length; i += 8) {
      const op = log[i + 2]!.slice(1);
      ops.push(op);
      expect(log.slice(i, i + 8), `events ${i}..${i + 7}`).toEqual(['>sync', '<sync', `[${op}`, `>${op}`, `<${op}`, '>sync', '<sync', `${op}]`]);
    }
    expect(ops).toEqual(expect.arrayContaining(['upload', 'kconv', 'route', 'forward', 'backward', 'kconvBackward', 'download', 'routingIndices']));
    expect(log.length % 8).toBe(0);
    for (const op of ops) expect(ms.get(op)).toBeGreaterThanOrEqual(0);
    await inner.destroy();
  });

  it('sync() of a destroyed backend rejects with E_DEVICE', async () => {
    const b = createReferenceBackend();
    await b.sync();
    await b.destroy();
    await expect(b.sync()).rejects.toMatchObject({ code: 'E_DEVICE' });
  });
});
