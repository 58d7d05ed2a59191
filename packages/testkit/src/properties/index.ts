/**
 * The property catalogue (STYLE.md R10), as data shared by `runConformance` and `describeConformance`:
 * routing, forward, backward, oracles, kconv, moba, hostile, determinism, validation, golden.
 */
import { PACKAGE_CASES_DIR } from '../golden.js';
import type { Property } from '../types.js';
import { backwardProperties } from './backward.js';
import { determinismProperties } from './determinism.js';
import { forwardProperties } from './forward.js';
import { goldenProperties } from './golden.js';
import { hostileProperties } from './hostile.js';
import { kconvProperties } from './kconv.js';
import { mobaProperties } from './moba.js';
import { oracleProperties } from './oracles.js';
import { routingProperties } from './routing.js';
import { validationProperties } from './validation.js';

export { goldenProperty, goldenProperties } from './golden.js';

/** Every property except the golden cases. */
export const coreProperties: readonly Property[] = [
  ...routingProperties,
  ...forwardProperties,
  ...backwardProperties,
  ...oracleProperties,
  ...kconvProperties,
  ...mobaProperties,
  ...hostileProperties,
  ...determinismProperties,
  ...validationProperties,
];

/**
 * The properties of one run: the whole catalogue plus the golden cases of the package and of
 * `casesDirs`; with `goldenOnly`, just the golden cases of `casesDirs` (the package's when empty).
 * `only` keeps the properties whose `group: name` contains one of its strings.
 */
export function selectProperties(opts: { casesDirs?: readonly string[]; goldenOnly?: boolean; only?: readonly string[] } = {}): Property[] {
  const dirs = opts.casesDirs ?? [];
  const list = opts.goldenOnly
    ? goldenProperties(dirs.length > 0 ? dirs : [PACKAGE_CASES_DIR])
    : [...coreProperties, ...goldenProperties([PACKAGE_CASES_DIR, ...dirs])];
  const only = opts.only?.filter((s) => s.length > 0) ?? [];
  return only.length === 0 ? list : list.filter((p) => only.some((s) => `${p.group}: ${p.name}`.includes(s)));
}
