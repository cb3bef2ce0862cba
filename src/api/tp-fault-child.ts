/**
 * Run by tp.gpu.test.ts in a process of its own (what it checks is that this process ends): start
 * a tensor-parallel group, run a few steps, stop one follower, start a step (eager, or a replayed
 * decode graph) that waits on it in a collective, kill the follower a second later, and check that
 * the step throws TpRankError, that shutdown finishes and that the other followers are gone. Prints
 * one `RESULT {json}` line, then returns without process.exit: the process must end by itself.
 *   node dist/src/api/tp-fault-child.js DIR SIZE VICTIM eager|graph
 */
import { spawn } from 'node:child_process';
import { HybridCache } from '../cache/hybrid-cache.js';
import { engineSizes, type OpenOptions } from '../engine/open.js';
import { cacheGeometry } from '../model/cache-spec.js';
import { Model } from '../model/forward.js';
import { loadModelDir } from '../model/load.js';
import type { StepBatch } from '../model/step.js';
import { alive } from './tp-guard.js';
import { TpGroup, TpRankError } from './tp.js';

const [dir, sizeArg, victimArg, mode] = process.argv.slice(2);
const size = Number(sizeArg), victim = Number(victimArg), graphs = mode === 'graph';
if (!dir || !(size >= 2) || !(victim >= 1 && victim < size) || (mode !== 'eager' && mode !== 'graph')) throw new Error('usage: tp-fault-child DIR SIZE VICTIM eager|graph');
const OPEN: OpenOptions = { maxBatchTokens: 64, maxSeqs: 4, blockSize: 16, cacheTokens: 4096 };
const T0 = Date.now();
const note = (s: string): void => void process.stderr.write(`[tp-fault-child ${size} ${mode} +${Date.now() - T0} ms] ${s}\n`);

const group = await TpGroup.start(size, { dir }, OPEN, () => {});
const { spec, weights } = loadModelDir(dir, group.be, 'default', undefined, { rank: 0, size });
const z = engineSizes(spec.config, OPEN);
const model = new Model(group.be, spec, weights, z.maxBatchTokens, z.maxSampleRows, z.blockSize, group);
const cache = new HybridCache(group.be, cacheGeometry(spec), { maxSeqs: z.maxSeqs, numBlocks: z.numBlocks, blockSize: z.blockSize });
const seq = cache.allocSeq()!;
cache.reserve(seq, 32);
let at = 0;
const run = (ids: number[]): void => {
  const n = ids.length;
  const batch: StepBatch = { ids: Int32Array.from(ids), positions: Int32Array.from({ length: n }, (_, j) => at + j), seqs: [{ seq, start: 0, len: n, ctxStart: at }], sampleRows: Int32Array.of(n - 1) };
  at += n;
  if (graphs) model.step(batch, cache);
  else model.forward(batch, cache);
};
run([1, 2, 3, 4, 5]);
const st = group.be.graphs!.stats;
for (let i = 0; i < 4; i++) run([7]); // graphs: eager warm-up, capture, replays
const replays = st.replays;
note(`group of ${size} up, ${replays} replays so far; stopping rank ${victim}`);

// The stopped rank still takes the frame (its FIFO has room) but never runs it: rank 0's collective
// (and the other followers') waits on it until it is killed, by a process of its own, a second later.
const pid = group.pids[victim - 1];
process.kill(pid, 'SIGSTOP');
spawn('sh', ['-c', `sleep 1; kill -9 ${pid}`], { stdio: 'ignore', detached: true }).unref();
const t0 = Date.now();
let error: unknown = null;
try {
  run([8]);
} catch (e) {
  error = e;
}
const detectMs = Date.now() - t0;
const replayed = st.replays - replays;
note(`step ended after ${detectMs} ms: ${String(error)}`);
const t1 = Date.now();
await group.shutdown();
note('shutdown done');
const shutdownMs = Date.now() - t1;
const others = group.pids.filter((p) => alive(p));
const result = {
  size,
  victim,
  mode,
  error: error instanceof TpRankError ? 'TpRankError' : error instanceof Error ? `${error.name}: ${error.message}` : String(error),
  message: error instanceof Error ? error.message : '',
  detectMs,
  replayedInFailedStep: replayed,
  replaysBefore: replays,
  aborted: group.aborted,
  shutdownMs,
  othersAlive: others.length,
};
process.stdout.write(`RESULT ${JSON.stringify(result)}\n`);
