/** The exit watchdog's thread (watchdog.ts): wait until armed, sleep, then kill the process. */
import { writeSync } from 'node:fs';
import { workerData } from 'node:worker_threads';

const { ctrl: ctrlBuf, why: whyBuf } = workerData as { ctrl: SharedArrayBuffer; why: SharedArrayBuffer };
const ctrl = new Int32Array(ctrlBuf);
Atomics.wait(ctrl, 0, 0); // until armed
const ms = Atomics.load(ctrl, 1);
Atomics.wait(ctrl, 2, 0, ms); // nothing ever notifies slot 2: a plain sleep
const why = Buffer.from(new Uint8Array(whyBuf)).toString('utf8').replace(/\0+$/, '');
writeSync(2, `bailing: ${why}: still running ${ms} ms after it should have exited; killing the process\n`);
process.kill(process.pid, 'SIGKILL');
