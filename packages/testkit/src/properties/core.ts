/**
 * The property catalogue without the golden cases, free of Node APIs (shared by the Node and browser entries).
 */
import type { Property } from '../types.js';
import { backwardProperties } from './backward.js';
import { cacheProperties } from './cache.js';
import { determinismProperties } from './determinism.js';
import { forwardProperties } from './forward.js';
import { hostileProperties } from './hostile.js';
import { kconvProperties } from './kconv.js';
import { memoryProperties } from './memory.js';
import { mobaProperties } from './moba.js';
import { oracleProperties } from './oracles.js';
import { qkProperties } from './qk.js';
import { reachProperties } from './reach.js';
import { routingProperties } from './routing.js';
import { validationProperties } from './validation.js';

/** Every property except the golden cases. */
export const coreProperties: readonly Property[] = [
  ...routingProperties,
  ...forwardProperties,
  ...backwardProperties,
  ...qkProperties,
  ...reachProperties,
  ...oracleProperties,
  ...kconvProperties,
  ...mobaProperties,
  ...hostileProperties,
  ...determinismProperties,
  ...validationProperties,
  ...memoryProperties,
  ...cacheProperties,
];

/** The properties whose `group: name` contains one of `only`'s strings (all of them when `only` has none). */
export function selectOnly(list: readonly Property[], only: readonly string[] | undefined): Property[] {
  const keep = only?.filter((s) => s.length > 0) ?? [];
  return keep.length === 0 ? [...list] : list.filter((p) => keep.some((s) => `${p.group}: ${p.name}`.includes(s)));
}
