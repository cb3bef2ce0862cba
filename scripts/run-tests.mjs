#!/usr/bin/env node
// Runs every compiled *.test.js under dist/ with node:test. GPU tests skip themselves without a GPU.
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';

// --gpu: only the *.gpu.test.js files (npm run test:gpu); they skip themselves without a device.
const args = process.argv.slice(2);
const gpuOnly = args.includes('--gpu');
const rest = args.filter((a) => a !== '--gpu');
const roots = rest.length ? rest : ['dist'];
const files = [];
const walk = (p) => {
  if (statSync(p).isDirectory()) for (const f of readdirSync(p).sort()) walk(join(p, f));
  else if (p.endsWith(gpuOnly ? '.gpu.test.js' : '.test.js')) files.push(p);
};
for (const r of roots) walk(r);
if (files.length === 0) {
  console.error(`no *.test.js files under ${roots.join(', ')}: run the build first`);
  process.exit(1);
}
const r = spawnSync(process.execPath, ['--test', '--test-reporter=spec', ...files], { stdio: 'inherit' });
process.exit(r.status ?? 1);
