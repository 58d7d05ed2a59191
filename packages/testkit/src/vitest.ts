/**
 * `describeConformance(name, factory, opts?)`: the whole conformance suite as one vitest `describe`,
 * one `it` per property (STYLE.md R8). The backend is made in `beforeAll` and destroyed in `afterAll`;
 * an unavailable backend (factory returns null or throws MobaError E_DEVICE/E_UNSUPPORTED) skips every
 * test with the reason, unless `MOBA_REQUIRE` (comma list of backend names) names it: then it fails.
 */
import { type Backend, MobaError } from '@moba/core';
import { afterAll, beforeAll, describe, it } from 'vitest';
import { selectProperties } from './properties/index.js';
import { capsNotCovered, propertyContext, resolveSettings, runProperty } from './run.js';
import type { ConformanceOptions } from './types.js';

/** Options of `describeConformance`: those of `runConformance` plus a per-test timeout. */
export interface DescribeOptions extends Omit<ConformanceOptions, 'factory' | 'onResult'> {
  /**
   * Timeout of each property's `it` and of the factory's `beforeAll`, in ms. Default: none of its own, so the
   * runner's hang guard applies (ours: vitest.config.ts); a limit near the real time fails on a busy machine.
   */
  timeoutMs?: number;
}

/** A backend factory; `null` (or a MobaError E_DEVICE / E_UNSUPPORTED) means "not available here". */
export type BackendFactory = () => Backend | null | Promise<Backend | null>;

/** Whether `MOBA_REQUIRE` (or `MOBA_REQUIRE_DEVICE`) names this suite: a token of `name` equals an entry. */
export function isRequired(name: string, env: string | undefined = process.env.MOBA_REQUIRE ?? process.env.MOBA_REQUIRE_DEVICE): boolean {
  if (!env) return false;
  const want = env.split(',').map((s) => s.trim().toLowerCase()).filter(Boolean);
  const tokens = name.toLowerCase().split(/[^a-z0-9]+/);
  return want.some((w) => w === name.toLowerCase() || tokens.includes(w));
}

/**
 * Registers the conformance suite for one backend in the current vitest file:
 * `describeConformance('my-backend', () => createMyBackend())`.
 */
export function describeConformance(name: string, factory: BackendFactory, opts: DescribeOptions = {}): void {
  const timeout = opts.timeoutMs;
  const settings = resolveSettings(opts);
  const props = selectProperties({ casesDirs: settings.casesDirs, goldenOnly: opts.goldenOnly ?? false, only: settings.only });
  describe(name, () => {
    let backend: Backend | null = null;
    let unavailable: string | null = null;
    const notCovered = new Set<string>();
    beforeAll(async () => {
      try {
        backend = await factory();
        if (backend === null) unavailable = 'the factory returned null';
      } catch (e) {
        if (!(e instanceof MobaError && (e.code === 'E_DEVICE' || e.code === 'E_UNSUPPORTED'))) throw e;
        unavailable = e.message;
      }
      if (unavailable !== null && isRequired(name)) {
        throw new Error(`backend ${name} is required (MOBA_REQUIRE=${process.env.MOBA_REQUIRE ?? process.env.MOBA_REQUIRE_DEVICE}) but unavailable: ${unavailable}`);
      }
      if (backend) for (const x of capsNotCovered(backend)) notCovered.add(x);
    }, timeout);
    afterAll(async () => {
      await backend?.destroy();
    }, timeout);
    for (const p of props) {
      it(`${p.group}: ${p.name}`, async (t) => {
        if (backend === null) return t.skip(`${name} unavailable: ${unavailable}`);
        const ctx = propertyContext(backend, settings, async () => {
          const b = await factory();
          if (b === null) throw new MobaError('E_DEVICE', `${name} became unavailable`);
          return b;
        }, notCovered);
        const r = await runProperty(p, ctx);
        if (r.skipped) return t.skip(r.message);
        if (!r.ok) throw new Error(r.message);
      }, timeout);
    }
  });
}

export type { ConformanceOptions, Report, PropertyResult, Property } from './types.js';
