/**
 * Launcher of device sampling (src/ops/sample/sample.cu; contract and host reference in
 * src/ops/sample/sample.ts): one 1024-thread block per row, then a download of the tokens (and
 * the logprob block when a row asks), never of the logits. Scratch: the penalised/tempered
 * logits and their exps, [R, V] f32 each, grown once and reused.
 */
import type { SampleRowsArgs, SampleRowsResult } from '../backend.js';
import type { Tensor } from '../../tensor/tensor.js';
import { SAMPLE_LP_STRIDE, checkSampleRows } from '../../ops/sample/sample.js';
import type { CudaContext } from './context.js';

const FILE = 'src/ops/sample/sample.cu';
const THREADS = 1024;
/** Per-warp 256-bucket histograms of u64 plus the merged one (sample.cu). */
const SMEM = (THREADS / 32 + 1) * 256 * 8;

export function cudaSampleRows(c: CudaContext, logits: Tensor, a: SampleRowsArgs): SampleRowsResult {
  const [R, V] = checkSampleRows(logits, a);
  if (R === 0) return { tokens: new Int32Array(0), logprobs: a.logprobs ? new Float64Array(0) : null };
  const z = c.scratch('sample-z', R * V * 4);
  const e = c.scratch('sample-e', R * V * 4);
  const tok = c.scratch('sample-tok', R * 4);
  const lp = c.scratch('sample-lp', R * SAMPLE_LP_STRIDE * 8);
  const params = c.hostArg('sample-params', a.params);
  // Empty lists still need a valid address (never read: the rows' lengths are 0).
  const pt = c.hostArg('sample-pen-tok', a.penTokens.length > 0 ? a.penTokens : new Int32Array(1));
  const pc = c.hostArg('sample-pen-cnt', a.penCounts.length > 0 ? a.penCounts : new Int32Array(1));
  const k = c.kernel(FILE, 'sample_rows', 'ppppppppi');
  c.launch(k, [R, 1, 1], THREADS, SMEM, [c.ptr(logits), z, e, params, pt, pc, tok, lp, V]);
  const tokens = new Int32Array(R);
  c.driver.dtoh(tokens, tok, c.stream);
  let logprobs: Float64Array | null = null;
  if (a.logprobs) {
    logprobs = new Float64Array(R * SAMPLE_LP_STRIDE);
    c.driver.dtoh(logprobs, lp, c.stream);
  }
  return { tokens, logprobs };
}
