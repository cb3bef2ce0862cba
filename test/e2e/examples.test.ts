import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

// dist/test/e2e/examples.test.js → package root; the examples are built by the package's build step.
const root = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const run = (file: string, input?: string): { code: number | null; stdout: string; stderr: string } => {
  const r = spawnSync(process.execPath, [join(root, 'dist', 'examples', file)], { cwd: root, input, encoding: 'utf8', timeout: 120_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
};

test('examples/streaming-chat: two piped turns each stream a reply', () => {
  const r = run('streaming-chat.js', 'Hello there.\nWhat did the jury say?\n');
  assert.equal(r.code, 0, r.stderr);
  assert.equal((r.stdout.match(/^assistant: /gm) ?? []).length, 2, r.stdout);
  assert.equal((r.stdout.match(/\[\d+ tokens, (stop|length)\]/g) ?? []).length, 2, r.stdout);
  assert.match(r.stderr, /model ready/);
});

test('examples/concurrent: three complete, the cancelled one stops early', () => {
  const r = run('concurrent.js');
  assert.equal(r.code, 0, r.stderr);
  const lines = r.stdout.trim().split('\n');
  assert.equal(lines.length, 4, r.stdout);
  for (const i of [0, 1, 2]) assert.match(lines[i], new RegExp(`^${i}: ".+" \\(\\d+ tokens, (stop|length)\\)$`));
  assert.match(lines[3], /^3: cancelled after \d+ tokens$/);
});
