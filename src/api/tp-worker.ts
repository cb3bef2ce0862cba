/**
 * A tensor-parallel rank ≥ 1 (tp.ts): forked by rank 0 with a TpInit over IPC. Loads its shards
 * on GPU `rank`, joins the NCCL communicator, then runs every step frame rank 0 writes to its FIFO.
 * Exits when rank 0 says so, when the IPC channel closes, or (watchdog thread, within 100 ms) when
 * rank 0 is gone while this thread is stuck in a GPU wait. A follower needs no NCCL abort of its
 * own: when any rank dies, rank 0's watcher SIGKILLs the others (tp-guard.ts), and a killed process
 * gives its GPU back through the driver whatever its kernels were waiting on; only rank 0, the
 * process that lives on (server, exit code), aborts its communicator and exits normally.
 */
import { createReadStream } from 'node:fs';
import { Worker } from 'node:worker_threads';
import { CudaBackend } from '../backend/cuda/cuda-backend.js';
import { Nccl } from '../backend/cuda/nccl.js';
import { HybridCache } from '../cache/hybrid-cache.js';
import { engineSizes } from '../engine/open.js';
import { loadDummyDir } from '../engine/open-dummy.js';
import { FrameReader, StepFollower } from '../engine/tp-step.js';
import { cacheGeometry } from '../model/cache-spec.js';
import { buildSpec, parseConfig } from '../model/config.js';
import { dummySource } from '../model/dummy-source.js';
import { Model } from '../model/forward.js';
import { loadModelDir } from '../model/load.js';
import { loadWeights } from '../model/weights.js';
import type { TpInit } from './tp.js';

function start(init: TpInit): void {
  const parent = process.ppid;
  // Kills this process if rank 0 disappears, even while the main thread is blocked in a CUDA call.
  new Worker(`setInterval(() => { if (process.ppid !== ${parent}) process.kill(${process.pid}, 'SIGKILL'); }, 100);`, { eval: true }).unref();
  const frames = new FrameReader();
  const queued: Int32Array[] = [];
  let follower: StepFollower | null = null;
  // Open the FIFO first: rank 0's open for writing waits for it.
  createReadStream(init.fifo).on('data', (chunk) =>
    frames.push(chunk as Buffer, (w) => {
      if (follower) follower.run(w);
      else queued.push(w);
    }),
  );
  const shard = { rank: init.rank, size: init.size };
  const nccl = Nccl.open();
  const id = new Uint8Array(Buffer.from(init.ncclId, 'base64'));
  const src = init.source;
  const be = new CudaBackend({ device: init.rank, dummyWeights: src.dummySeed !== undefined ? { seed: src.dummySeed } : undefined, matmulInputs: src.matmulInputs, tp: () => ({ nccl, comm: nccl.commInitRank(init.size, id, init.rank), rank: init.rank, size: init.size }) });
  let loaded;
  if (src.dir) loaded = (src.dummySeed !== undefined ? loadDummyDir : loadModelDir)(src.dir, be, init.open.compat ?? 'default', undefined, shard);
  else {
    const { config, naming } = parseConfig(src.config);
    const spec = buildSpec(config, naming, init.open.compat ?? 'default', shard);
    loaded = { spec, weights: loadWeights(spec, dummySource(spec), be) };
  }
  const z = engineSizes(loaded.spec.config, init.open);
  const model = new Model(be, loaded.spec, loaded.weights, z.maxBatchTokens, z.maxSampleRows, z.blockSize);
  const cache = new HybridCache(be, cacheGeometry(loaded.spec), { maxSeqs: z.maxSeqs, numBlocks: z.numBlocks, blockSize: z.blockSize, kvCacheDtype: z.kvCacheDtype });
  be.sync();
  follower = new StepFollower(model, cache);
  for (const w of queued.splice(0)) follower.run(w);
  process.send!({ type: 'ready' });
}

process.on('message', (m: TpInit | { type: 'exit' }) => {
  if ('type' in m) {
    if (m.type === 'exit') process.exit(0);
    return;
  }
  try {
    start(m);
  } catch (e) {
    process.send!({ type: 'error', message: (e as Error).stack ?? String(e) });
    process.exit(1);
  }
});
process.on('disconnect', () => process.exit(0));
