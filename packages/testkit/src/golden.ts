/**
 * Golden cases (golden-format.md): JSON files with inputs, config and results of an independent f64
 * implementation. `loadGoldenCase` parses one file, tolerating missing optional fields and failing
 * with a message naming the file and the field for malformed ones.
 */
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { basename, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { type GoldenCase, malformedGoldenCase, parseGoldenCase, parseGoldenJson } from './golden-parse.js';

export type { GoldenCase, GoldenExpected } from './golden-parse.js';

/** The cases shipped with the package (`cases/`, beside `src/` and `dist/`). */
export const PACKAGE_CASES_DIR = fileURLToPath(new URL('../cases/', import.meta.url));
/** The public extension examples (golden-format.md "Extensions": non-causal, kconv, fewer queries than keys). */
export const PACKAGE_EXT_CASES_DIR = fileURLToPath(new URL('../cases/ext/', import.meta.url));

/** The `*.json` files of a folder, sorted (a file path is returned as is). */
export function listGoldenCases(dir: string): string[] {
  const abs = resolve(dir);
  if (statSync(abs).isFile()) return [abs];
  return readdirSync(abs).filter((f) => f.endsWith('.json')).sort().map((f) => join(abs, f));
}

/** Parses and checks one golden case file (JSON, also with the bare NaN / Infinity tokens Python writes). */
export function loadGoldenCase(file: string): GoldenCase {
  let json: unknown;
  try {
    json = parseGoldenJson(readFileSync(file, 'utf8'));
  } catch (e) {
    throw malformedGoldenCase(file, e);
  }
  return parseGoldenCase(json, file, basename(file, '.json'));
}
