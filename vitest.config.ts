import { defineConfig } from 'vitest/config';

// Sources run without a build: the `@moba/source` export condition points every workspace
// package at its `src/*.ts` (see tsconfig.base.json `customConditions`).
const conditions = ['@moba/source', 'node', 'import', 'module', 'default'];

export default defineConfig({
  resolve: { conditions },
  ssr: { resolve: { conditions, externalConditions: ['@moba/source'] } },
  test: {
    include: ['packages/*/test/**/*.test.ts', 'bench/test/**/*.test.ts'],
    // A hang guard, not a time limit: no test may fail because the machine is busy, so no test sets its own
    // (tighter) timeout and none asserts on elapsed time. One hour per test or hook is far above the slowest real
    // one (a conformance property or a browser suite: tens of seconds on 2 loaded cores) and only stops a run that
    // hangs (a lost device callback, a browser that never answers).
    testTimeout: 3_600_000,
    hookTimeout: 3_600_000,
    pool: 'forks',
    reporters: ['default', './scripts/summary-reporter.ts'],
  },
});
