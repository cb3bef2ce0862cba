/**
 * The dead-rank watcher's protocol on the CPU (tp-guard.ts): detection of a dead rank by a thread
 * of its own, the other ranks killed, the main thread's call in flight waited for (the gate's
 * lock) before the abort, the abort run once, a closed watcher doing nothing. The abort here is a
 * function that reports whether it ran under the watcher's lock (no NCCL on a CPU machine; the
 * real ncclCommAbort path runs in tp.gpu.test.ts).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { GATE_ABORTED, GATE_CLOSED, GATE_FAILED, GATE_LOCK, LOCK_CALL, LOCK_FREE } from '../backend/cuda/nccl.js';
import { alive, TpGuard } from './tp-guard.js';

const guardModule = new URL('./tp-guard.js', import.meta.url).href;
// The watcher thread with a stand-in abort: returns 7 when it runs holding the gate's lock, -1 otherwise.
const thread = new URL(
  'data:text/javascript,' +
    encodeURIComponent(`import { workerData } from 'node:worker_threads';
import { runWatcher } from ${JSON.stringify(guardModule)};
const w = new Int32Array(workerData.words);
runWatcher(workerData, () => (Atomics.load(w, ${GATE_LOCK}) === 2 ? 7 : -1));`),
);

function ranks(k: number): ChildProcess[] {
  return Array.from({ length: k }, () => spawn('sleep', ['30'], { stdio: 'ignore' }));
}
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
async function until(cond: () => boolean, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  while (!cond() && Date.now() < end) await sleep(5);
  return cond();
}

test('tp guard: a dead rank is seen by the watcher thread, the others are killed, the abort waits for a call in flight', async () => {
  const rs = ranks(3);
  const g = TpGuard.start(
    rs.map((r) => r.pid!),
    0n,
    { thread },
  );
  // The main thread is inside a call on the communicator (it holds the lock).
  assert.equal(Atomics.compareExchange(g.words, GATE_LOCK, LOCK_FREE, LOCK_CALL), LOCK_FREE);
  rs[1].kill('SIGKILL');
  assert.ok(g.waitFor(GATE_FAILED, 5000), `state ${g.state}`);
  assert.equal(g.deadRank, 2);
  assert.ok(await until(() => !alive(rs[0].pid) && !alive(rs[2].pid), 5000), 'the other ranks were killed');
  await sleep(50);
  assert.equal(g.state, GATE_FAILED, 'no abort while a call is in flight');
  Atomics.store(g.words, GATE_LOCK, LOCK_FREE);
  assert.ok(g.waitFor(GATE_ABORTED, 5000), `state ${g.state}`);
  assert.equal(g.abortResult, 7, 'the abort ran holding the lock');
  assert.equal(g.close(), false, 'a failed group cannot be closed cleanly');
  assert.equal(g.state, GATE_ABORTED);
});

test('tp guard: the main thread asks for the abort; a closed watcher ignores deaths', async () => {
  const rs = ranks(2);
  const g = TpGuard.start(
    rs.map((r) => r.pid!),
    0n,
    { thread },
  );
  await sleep(20);
  g.fail();
  assert.ok(g.waitFor(GATE_ABORTED, 5000), `state ${g.state}`);
  assert.equal(g.deadRank, 0);
  assert.equal(g.abortResult, 7);
  assert.ok(await until(() => rs.every((r) => !alive(r.pid)), 5000), 'ranks killed');

  const qs = ranks(1);
  const h = TpGuard.start(
    qs.map((r) => r.pid!),
    0n,
    { thread },
  );
  await sleep(20);
  assert.equal(h.close(), true);
  qs[0].kill('SIGKILL');
  await sleep(100);
  assert.equal(h.state, GATE_CLOSED);
  assert.equal(h.deadRank, 0);
  assert.equal(h.waitFor(GATE_FAILED, 100), false);
});
