import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync, statSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { cudaUnavailableReason } from '../../src/backend/cuda/cuda-backend.js';

// dist/test/e2e/cli.test.js → package root
const root = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const main = join(root, 'dist', 'src', 'cli', 'main.js');

function run(args: string[], input?: string): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [main, ...args], { cwd: root, input, encoding: 'utf8', timeout: 60_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

test('generate on the embedded model: streams the prompt and a continuation, reports stats', () => {
  const a = run(['generate', 'The jury said', '--max-tokens', '12', '--temperature', '0', '--ignore-eos', '--threads', '1']);
  assert.equal(a.code, 0, a.stderr);
  assert.ok(a.stdout.startsWith('The jury said'));
  assert.ok(a.stdout.length > 'The jury said'.length);
  assert.match(a.stderr, /12 generated, finish length/);
  // Greedy is deterministic.
  const b = run(['generate', 'The jury said', '--max-tokens', '12', '--temperature', '0', '--ignore-eos', '--threads', '1']);
  assert.equal(b.stdout, a.stdout);
});

test('the package command runs: bin target is executable and `npx bailing` (the README command) works', () => {
  const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { bin: Record<string, string> };
  const bin = join(root, pkg.bin['bailing']!);
  assert.ok((statSync(bin).mode & 0o111) !== 0, `${bin} is not executable`);
  const r = spawnSync('npx', ['--no-install', 'bailing', 'generate', 'The jury said', '--max-tokens', '3', '--temperature', '0', '--threads', '1'], {
    cwd: root, encoding: 'utf8', timeout: 60_000,
  });
  assert.equal(r.status, 0, r.stderr);
  assert.ok(r.stdout.startsWith('The jury said'), r.stdout);
});

test('generate reads the prompt from stdin; seeds reproduce sampled text', () => {
  const args = ['generate', '--max-tokens', '10', '--temperature', '1', '--seed', '7', '--ignore-eos'];
  const a = run(args, 'Once upon');
  const b = run(args, 'Once upon');
  assert.equal(a.code, 0, a.stderr);
  assert.equal(a.stdout, b.stdout);
});

test('chat applies the template over piped turns', () => {
  const r = run(['chat', '--max-tokens', '5', '--temperature', '0', '--ignore-eos'], 'hello\nhow are you\n');
  assert.equal(r.code, 0, r.stderr);
  assert.equal((r.stderr.match(/5 generated/g) ?? []).length, 2, r.stderr);
});

test('inspect prints the layer plan and memory figures', () => {
  const r = run(['inspect', '--batch', '4', '--context', '1024']);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /lightning/i);
  assert.match(r.stdout, /mla/i);
  const j = run(['inspect', '--json']);
  assert.equal(j.code, 0, j.stderr);
  assert.doesNotThrow(() => JSON.parse(j.stdout));
});

test('bad input gives one clear line and exit code 1', () => {
  const missing = run(['generate', 'x', '--model', '/nonexistent/model']);
  assert.equal(missing.code, 1);
  assert.match(missing.stderr, /--model \/nonexistent\/model: no such directory/);
  if (cudaUnavailableReason() !== null) {
    // No GPU here: fail at start naming what is missing, in one line.
    const cuda = run(['generate', 'x', '--device', 'cuda']);
    assert.equal(cuda.code, 1);
    assert.match(cuda.stderr, /^bailing: --device cuda: no usable CUDA GPU: .*\n$/);
  }
  const temp = run(['generate', 'x', '--temperature', '-1']);
  assert.equal(temp.code, 1);
  assert.match(temp.stderr, /temperature/);
  const unknown = run(['frobnicate']);
  assert.equal(unknown.code, 1);
  assert.match(unknown.stderr, /unknown command/);
  const badFlag = run(['generate', 'x', '--nope']);
  assert.equal(badFlag.code, 1);
});
