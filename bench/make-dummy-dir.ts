/**
 * A model directory for `--load-format dummy`: only config.json, for a benchmark geometry
 * (bench/geometry.ts). `bailing serve --device cuda --load-format dummy` makes the weights on the
 * GPU and, with no tokenizer here, uses the shipped tiny-random's byte-level one.
 *   node dist/bench/make-dummy-dir.js DIR [flash|ring-mini]
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { flashCutConfig, ringMiniConfig } from './geometry.js';

const [dir, geometry = 'flash'] = process.argv.slice(2);
if (!dir) throw new Error('usage: make-dummy-dir DIR [flash|ring-mini]');
mkdirSync(dir, { recursive: true });
writeFileSync(join(dir, 'config.json'), JSON.stringify(geometry === 'ring-mini' ? ringMiniConfig() : flashCutConfig(), null, 2) + '\n');
process.stdout.write(`wrote ${join(dir, 'config.json')} (${geometry})\n`);
