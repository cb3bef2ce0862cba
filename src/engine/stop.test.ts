import { test } from 'node:test';
import assert from 'node:assert/strict';
import { StopMatcher } from './stop.js';
import { Prng } from '../util/prng.js';

function run(stops: string[], chunks: string[]): { text: string; stop: string | null; perChunk: string[] } {
  const m = new StopMatcher(stops);
  const perChunk: string[] = [];
  let stop: string | null = null;
  for (const c of chunks) {
    const r = m.push(c);
    perChunk.push(r.text);
    if (r.stop !== null) {
      stop = r.stop;
      break;
    }
  }
  if (stop === null) perChunk.push(m.flush());
  return { text: perChunk.join(''), stop, perChunk };
}

test('no stop strings: everything passes straight through', () => {
  assert.deepEqual(run([], ['ab', 'c']).perChunk, ['ab', 'c', '']);
});

test('stop string inside one chunk: text before it, stop excluded', () => {
  assert.deepEqual(run(['STOP'], ['hello STOP world']), { text: 'hello ', stop: 'STOP', perChunk: ['hello '] });
});

test('stop string split across chunks is held back, then cut', () => {
  const r = run(['</answer>'], ['The result', ' is 4</', 'ans', 'wer> trailing']);
  assert.equal(r.text, 'The result is 4');
  assert.equal(r.stop, '</answer>');
  assert.deepEqual(r.perChunk, ['The result', ' is 4', '', '']);
});

test('a false start is released once it cannot match', () => {
  const r = run(['abc'], ['xa', 'b', 'd', 'e']);
  assert.equal(r.stop, null);
  assert.deepEqual(r.perChunk, ['x', '', 'abd', 'e', '']);
});

test('held text is flushed at the end when no stop completes', () => {
  const r = run(['###'], ['value ##']);
  assert.deepEqual(r.perChunk, ['value ', '##']);
});

test('earliest of several stops wins; pushes after a stop return nothing', () => {
  const m = new StopMatcher(['world', 'lo w']);
  assert.deepEqual(m.push('hello world'), { text: 'hel', stop: 'lo w' });
  assert.ok(m.stopped);
  assert.deepEqual(m.push('more'), { text: '', stop: null });
  assert.equal(m.flush(), '');
});

test('single-character chunks reproduce the one-shot result (random texts)', () => {
  const rng = new Prng(11);
  const stops = ['ab', 'bba', '中文', '😀x'];
  for (let k = 0; k < 300; k++) {
    let s = '';
    for (let i = rng.int(20); i >= 0; i--) s += ['a', 'b', 'x', '中', '文', '😀'][rng.int(6)];
    const whole = run(stops, [s]);
    const chars = run(stops, [...s]);
    assert.equal(chars.text, whole.text, s);
    assert.equal(chars.stop !== null, whole.stop !== null, s);
    // Emitted text never contains a stop string.
    for (const st of stops) assert.ok(!chars.text.includes(st));
  }
});
