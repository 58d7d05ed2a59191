#!/usr/bin/env node
// moba-conformance: runs the MoBA conformance suite on a backend (see src/cli.ts, built into dist/).
import '../dist/cli.js';
