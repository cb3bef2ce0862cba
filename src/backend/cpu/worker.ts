/** Worker thread of the CPU pool: waits on the control word, runs its job slice, signals done. */
import { receiveMessageOnPort, workerData, type MessagePort } from 'node:worker_threads';
import { runJob } from './run-job.js';
import type { WorkerJob } from './worker-job.js';

const { port, ctrl } = workerData as { port: MessagePort; ctrl: Int32Array };
// Workers are created while the generation is 0; starting from 0 (not a fresh load) means a job
// posted before this script ran is still seen.
let gen = 0;
const scratch = { row: new Float32Array(1024) };
for (;;) {
  Atomics.wait(ctrl, 0, gen);
  gen = Atomics.load(ctrl, 0);
  let msg = receiveMessageOnPort(port);
  while (msg === undefined) msg = receiveMessageOnPort(port);
  try {
    runJob(msg.message as WorkerJob, scratch);
  } catch {
    // Never leave the caller waiting: flag the failure, the pool turns it into an InternalError.
    Atomics.store(ctrl, 2, 1);
  }
  if (Atomics.sub(ctrl, 1, 1) === 1) Atomics.notify(ctrl, 1);
}
