import { defineConfig } from 'vitest/config';

// Sources run without a build: the `@moba/source` export condition points every workspace
// package at its `src/*.ts` (see tsconfig.base.json `customConditions`).
const conditions = ['@moba/source', 'node', 'import', 'module', 'default'];

export default defineConfig({
  resolve: { conditions },
  ssr: { resolve: { conditions, externalConditions: ['@moba/source'] } },
  test: {
    include: ['packages/*/test/**/*.test.ts', 'bench/test/**/*.test.ts'],
    testTimeout: 120_000,
    hookTimeout: 120_000,
    pool: 'forks',
    reporters: ['default', './scripts/summary-reporter.ts'],
  },
});
