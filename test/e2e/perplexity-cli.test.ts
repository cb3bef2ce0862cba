import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

// dist/test/e2e/perplexity-cli.test.js → package root
const root = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const main = join(root, 'dist', 'src', 'cli', 'main.js');
const model = join(root, 'models', 'tiny-brown');

test('bailing perplexity on the embedded model prints the oracle perplexity of the held-out excerpt', () => {
  const rec = JSON.parse(readFileSync(join(model, 'heldout-ppl.json'), 'utf8')) as { perplexity: number; scored_tokens: number };
  const r = spawnSync(process.execPath, [main, 'perplexity', join(model, 'heldout-excerpt.txt')], { cwd: root, encoding: 'utf8', timeout: 120_000 });
  assert.equal(r.status, 0, r.stderr);
  const ppl = Number(/^perplexity (\S+)$/m.exec(r.stdout)?.[1]);
  assert.ok(Math.abs(ppl - rec.perplexity) / rec.perplexity <= 1e-3, `printed ${ppl} vs oracle ${rec.perplexity}`);
  assert.match(r.stdout, new RegExp(`^tokens scored ${rec.scored_tokens} `, 'm'));
  assert.match(r.stdout, /^tokens\/s \d/m);
});

test('bailing perplexity: a missing file or a bad window is one clear line and exit 1', () => {
  const missing = spawnSync(process.execPath, [main, 'perplexity', '/nonexistent.txt'], { cwd: root, encoding: 'utf8' });
  assert.equal(missing.status, 1);
  assert.match(missing.stderr, /cannot read \/nonexistent.txt/);
  const bad = spawnSync(process.execPath, [main, 'perplexity', join(model, 'heldout-excerpt.txt'), '--window', '1'], { cwd: root, encoding: 'utf8' });
  assert.equal(bad.status, 1);
  assert.match(bad.stderr, /window must be an integer ≥ 2/);
});
