#!/usr/bin/env node
// The package's command. It is committed with its executable bit, so `npx bailing` works in a fresh
// clone: the compiled dist/src/cli/main.js is written by tsc without one.
import '../dist/src/cli/main.js';
