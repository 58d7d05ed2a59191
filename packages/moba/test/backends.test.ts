/**
 * Backend selection: `createBackend` follows `listBackends()` (auto = first available of cuda, webgpu,
 * cpu), unavailable kinds fail with E_UNSUPPORTED naming the kind and the reason, bad kinds with E_RANGE.
 */
import { describe, expect, it } from 'vitest';
import { type BackendKind, MobaError, createBackend, listBackends } from '../src/index.js';

async function rejection(p: Promise<unknown>): Promise<MobaError> {
  const e = await p.then(() => undefined, (err: unknown) => err);
  expect(e).toBeInstanceOf(MobaError);
  return e as MobaError;
}

describe('createBackend / listBackends', () => {
  it('auto picks the first available kind; unavailable kinds say why', async () => {
    const list = await listBackends();
    expect(list.map((b) => b.name)).toEqual(['cuda', 'webgpu', 'cpu']);
    const cpu = list.find((b) => b.name === 'cpu')!;
    expect(cpu).toMatchObject({ available: true, package: '@moba/backend-cpu' });
    expect(cpu.version).toMatch(/^\d+\.\d+\.\d+/);

    const first = list.find((b) => b.available)!;
    const auto = await createBackend('auto', { threads: 1 });
    try {
      expect(auto.name).toBe(first.name);
    } finally {
      await auto.destroy();
    }
    for (const b of list.filter((x) => !x.available)) {
      const e = await rejection(createBackend(b.name));
      expect(e.code).toBe('E_UNSUPPORTED');
      expect(e.message).toContain(`backend '${b.name}'`);
      expect(e.message).toContain(b.reason!);
    }
  });

  it('explicit cpu honours its options; an unknown kind is E_RANGE', async () => {
    const b = await createBackend('cpu', { threads: 1 });
    try {
      expect(b.name).toBe('cpu');
      expect((b as unknown as { threads: number }).threads).toBe(1);
    } finally {
      await b.destroy();
    }
    const e = await rejection(createBackend('tpu' as BackendKind));
    expect(e.code).toBe('E_RANGE');
    expect(e.message).toContain('"tpu"');
  });
});
