#!/usr/bin/env node
// The `moba` command: runs the built CLI (src/cli.ts → dist/cli.js; build with `pnpm build`).
import '../dist/cli.js';
