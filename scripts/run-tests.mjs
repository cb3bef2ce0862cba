#!/usr/bin/env node
// Runs every compiled *.test.js under dist/ with node:test. GPU tests skip themselves without a GPU.
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';

const roots = process.argv.slice(2).length ? process.argv.slice(2) : ['dist'];
const files = [];
const walk = (p) => {
  if (statSync(p).isDirectory()) for (const f of readdirSync(p).sort()) walk(join(p, f));
  else if (p.endsWith('.test.js')) files.push(p);
};
for (const r of roots) walk(r);
if (files.length === 0) {
  console.error(`no *.test.js files under ${roots.join(', ')}: run the build first`);
  process.exit(1);
}
const r = spawnSync(process.execPath, ['--test', '--test-reporter=spec', ...files], { stdio: 'inherit' });
process.exit(r.status ?? 1);
