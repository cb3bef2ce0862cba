import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const watchdog = fileURLToPath(new URL('./watchdog.js', import.meta.url));
const run = (body: string): ReturnType<typeof spawnSync> =>
  spawnSync(process.execPath, ['--input-type=module', '-e', `import { ExitWatchdog } from ${JSON.stringify(watchdog)}; const w = new ExitWatchdog(); const keep = setInterval(() => {}, 1000); await w.ready; clearInterval(keep); ${body}`], { encoding: 'utf8', timeout: 20_000 });

test('the exit watchdog kills a process whose main thread is blocked, and never delays a normal exit', () => {
  // Armed for 300 ms, then the main thread blocks for 30 s (as in a native call that never returns).
  const blocked = run(`w.arm(300, 'test'); Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 30000);`);
  assert.equal(blocked.signal, 'SIGKILL', `expected a kill, got status ${blocked.status} signal ${blocked.signal}`);
  assert.match(String(blocked.stderr), /bailing: test: still running 300 ms after it should have exited/);
  const t0 = Date.now();
  const armed = run(`w.arm(10000, 'test');`);
  assert.equal(armed.status, 0);
  const idle = run(``);
  assert.equal(idle.status, 0);
  assert.ok(Date.now() - t0 < 8000, 'a normal exit does not wait for the watchdog');
});
