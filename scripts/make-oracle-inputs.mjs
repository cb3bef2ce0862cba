#!/usr/bin/env node
// Writes the oracle's input model directories (tiny-configs.ts oracleVariants + prompt.json) under
// test/fixtures/oracle/. Run after `npm run build`; then run tools/oracle/make_fixtures.py on a
// torch machine (tools/oracle/README.md). BAILING_DIST overrides the build folder (default dist).
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';

const root = resolve(import.meta.dirname ?? new URL('.', import.meta.url).pathname, '..');
const dist = resolve(process.env.BAILING_DIST ?? join(root, 'dist'));
const { writeOracleInputs } = await import(pathToFileURL(join(dist, 'src/model/oracle-inputs.js')).href);
const out = resolve(process.argv[2] ?? join(root, 'test', 'fixtures', 'oracle'));
const names = writeOracleInputs(out);
console.log(`wrote ${names.join(', ')} under ${out}`);
