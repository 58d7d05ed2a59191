/**
 * @moba/testkit: the MoBA conformance suite. `runConformance(backend)` → Report without a test
 * runner; `describeConformance` lives in `@moba/testkit/vitest`. Also exported: the property
 * catalogue, the problem generators, the checks, the golden-case loader and the reference backend.
 */
export { runConformance, runProperty, resolveSettings, capsNotCovered, summaryLine, DEFAULT_SEED, DEFAULT_NUM_RUNS, MAX_NUM_RUNS, SEED_RANGE, type ResolvedSettings } from './run.js';
export { coreProperties, selectProperties, goldenProperty, goldenProperties } from './properties/index.js';
export { type ConformanceOptions, type Property, type PropertyContext, type PropertyResult, type Report, Skip } from './types.js';
export { type Problem, type ProblemSpec, makeProblem, specArb, randomRouting, describeSpec, cuSeqlensOf, headDims, supportsHeadDim } from './problem.js';
export { referencePair, attentionChecks } from './checks.js';
export { routingErrors, scoreEps, type RoutingCheckOptions } from './routing-checks.js';
export { type GoldenCase, type GoldenExpected, loadGoldenCase, listGoldenCases, PACKAGE_CASES_DIR, PACKAGE_EXT_CASES_DIR } from './golden.js';
export { GOLDEN_LIMITS, GOLDEN_REQUIREMENTS, type GoldenRequirement, MalformedGoldenCaseError, UnsupportedGoldenCaseError } from './golden-parse.js';
export {
  type QkSpec, type QkProblem, type QkFullProblem, makeQkProblem, makeQkFullProblem, qkSpecArb, randomQkRouting, describeQkSpec, rowsAt, embedRows,
} from './qk-problem.js';
export { createReferenceBackend, type ReferenceBackendOptions, type ReferenceCacheFactory } from './reference-backend.js';
export { ReferenceCache, referencePageBytes } from './reference-cache.js';
export { UsageError, type FlagSpec, type FlagSpecs, type Parsed, type ParseResult, parseFlags, flagHelp, didYouMean, checkOutputFile, checkOutputDir, checkInputPath, reportError } from './args.js';
