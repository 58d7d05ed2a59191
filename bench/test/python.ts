/** The python the bench's torch-script tests run (`$MOBA_PYTHON`, else python3), and `it` that skips visibly without it. */
import { execFileSync } from 'node:child_process';
import { it } from 'vitest';

export const python = process.env.MOBA_PYTHON || 'python3';

const hasPython = ((): boolean => {
  try {
    execFileSync(python, ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
})();

/** `it`, or a visible skip naming the missing interpreter. */
export function pyIt(name: string, fn: () => unknown): void {
  if (hasPython) it(name, async () => void (await fn()));
  else it(name, (t) => t.skip(`${python} not found (install python3 or set MOBA_PYTHON)`));
}
