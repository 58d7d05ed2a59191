/**
 * Golden-case properties (golden-format.md), one per file: the file is read and parsed when the property
 * runs, and checked by `goldenCaseProperty` (golden-case.ts, shared with the browser entry).
 */
import { basename } from 'node:path';
import { listGoldenCases, loadGoldenCase } from '../golden.js';
import type { Property } from '../types.js';
import { goldenCaseProperty } from './golden-case.js';

/** One property per golden case file. */
export function goldenProperty(file: string): Property {
  return goldenCaseProperty(basename(file), () => loadGoldenCase(file));
}

/** Golden properties for every case file of the given folders (or single files). */
export function goldenProperties(dirs: readonly string[]): Property[] {
  return dirs.flatMap((dir) => listGoldenCases(dir).map(goldenProperty));
}
