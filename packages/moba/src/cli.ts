/**
 * Entry point of the `moba` command (bin/moba.js imports the built copy of this file): runs `main()`
 * on the process arguments and sets the exit code. See main.ts for the commands.
 */
import { main } from './main.js';

process.exitCode = await main(process.argv.slice(2), { stdout: process.stdout, stderr: process.stderr });
