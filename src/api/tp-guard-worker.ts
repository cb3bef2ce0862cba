/** The watcher thread of tp-guard.ts: its own binding of libnccl, the communicator by address. */
import { workerData } from 'node:worker_threads';
import { Nccl } from '../backend/cuda/nccl.js';
import { runWatcher, type GuardData } from './tp-guard.js';

const data = workerData as GuardData;
const nccl = Nccl.open();
runWatcher(data, () => nccl.abortAt(BigInt(data.comm)));
