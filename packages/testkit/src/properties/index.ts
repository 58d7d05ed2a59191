/**
 * The property catalogue (STYLE.md R10), as data shared by `runConformance` and `describeConformance`:
 * routing, forward, backward, qk, reach, oracles, kconv, moba, hostile, determinism, validation, memory, cache, golden.
 */
import { PACKAGE_CASES_DIR, PACKAGE_EXT_CASES_DIR } from '../golden.js';
import type { Property } from '../types.js';
import { coreProperties, selectOnly } from './core.js';
import { goldenProperties } from './golden.js';

export { coreProperties } from './core.js';
export { goldenProperty, goldenProperties } from './golden.js';

/**
 * The properties of one run: the whole catalogue plus the golden cases of the package (cases/ and cases/ext/) and of
 * `casesDirs`; with `goldenOnly`, just the golden cases of `casesDirs` (the package's when empty).
 * `only` keeps the properties whose `group: name` contains one of its strings.
 */
export function selectProperties(opts: { casesDirs?: readonly string[]; goldenOnly?: boolean; only?: readonly string[] } = {}): Property[] {
  const dirs = opts.casesDirs ?? [];
  const list = opts.goldenOnly
    ? goldenProperties(dirs.length > 0 ? dirs : [PACKAGE_CASES_DIR])
    : [...coreProperties, ...goldenProperties([PACKAGE_CASES_DIR, PACKAGE_EXT_CASES_DIR, ...dirs])];
  return selectOnly(list, opts.only);
}
