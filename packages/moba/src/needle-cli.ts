/**
 * PLACEHOLDER (wt-ana branch only): `moba analyze --synthetic needle` is written by another helper; this stub only
 * gives analyze-cli.ts the signature to compile against and is replaced by that helper's version at merge.
 */
import { UsageError } from '@moba/testkit';

interface Io {
  readonly stdout: { write(s: string): unknown };
  readonly stderr: { write(s: string): unknown; readonly isTTY?: boolean };
}

/** PLACEHOLDER: always a usage error. */
export async function needleCommand(_argv: readonly string[], _io: Io, _version?: string): Promise<number> {
  throw new UsageError('--synthetic needle is not in this build (placeholder src/needle-cli.ts)');
}
