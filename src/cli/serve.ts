/** `bailing serve`: load the model through the library API and run the OpenAI-compatible server on it. */
import { basename } from 'node:path';
import { parseArgs } from 'node:util';
import { loadModel } from '../api/model.js';
import { BailingServer } from '../server/server.js';
import { InvalidRequestError } from '../util/errors.js';
import { createLogger, type LogLevel } from '../util/logger.js';
import { commonOptions, loadOptions, modelDir, num } from './args.js';
import type { ExitWatchdog } from './watchdog.js';

export const SERVE_USAGE = `usage: bailing serve [--model DIR] [options]

  --host ADDR                    bind address (default 127.0.0.1)
  --port N                       port (default 8000; 0 picks a free one)
  --api-key KEY                  require "Authorization: Bearer KEY" on /v1/*, /tokenize, /detokenize
  --served-model-name NAME       model id in the API (default: the model directory's name)
  --max-num-seqs N               concurrent sequences (state slots; default 16)
  --max-num-batched-tokens N     tokens per step: decodes + prefill chunks (default 8192 on cuda, 256 on cpu)
  --max-model-len N              context length (default min(max_position_embeddings, 4096))
  --cache-tokens N               MLA latent cache size in tokens (default max-num-seqs × max-model-len)
  --max-body-bytes N             larger request bodies get 413 (default 4194304)
  --log-level debug|info|warn|error|silent   (default info; one line per request at info)
  --device, --compat, --threads, --tp, --load-format, --kv-cache-dtype, --matmul-inputs
                                 as for generate
`;

/** How long SIGTERM waits for in-flight requests before aborting them. */
const DRAIN_MS = 30_000;

const LEVELS: readonly LogLevel[] = ['debug', 'info', 'warn', 'error', 'silent'];

export async function serveCommand(argv: string[], watchdog: ExitWatchdog): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      ...commonOptions,
      host: { type: 'string', default: '127.0.0.1' },
      port: { type: 'string' },
      'api-key': { type: 'string' },
      'served-model-name': { type: 'string' },
      'max-num-seqs': { type: 'string' },
      'max-num-batched-tokens': { type: 'string' },
      'cache-tokens': { type: 'string' },
      'max-body-bytes': { type: 'string' },
      'log-level': { type: 'string', default: 'info' },
      seed: { type: 'string' },
    },
    allowPositionals: false,
  });
  if (values.help) return void process.stdout.write(SERVE_USAGE);
  const level = values['log-level'] as LogLevel;
  if (!LEVELS.includes(level)) throw new InvalidRequestError(`--log-level must be one of ${LEVELS.join(', ')}, got "${level}"`, 'log-level');
  const logger = createLogger(level);
  const dir = modelDir(values);
  const t0 = performance.now();
  const m = await loadModel(
    loadOptions(values, {
      maxNumSeqs: num(values, 'max-num-seqs') ?? 16,
      maxBatchTokens: num(values, 'max-num-batched-tokens') ?? num(values, 'max-batch-tokens'),
      cacheTokens: num(values, 'cache-tokens'),
      seed: num(values, 'seed') ?? Date.now() >>> 0,
    }),
  );
  const server = new BailingServer(m, {
    modelName: values['served-model-name'] ?? basename(dir),
    host: values.host,
    port: num(values, 'port') ?? 8000,
    apiKey: values['api-key'] ?? null,
    maxBodyBytes: num(values, 'max-body-bytes'),
    logger,
  });
  const addr = await server.listen();
  const c = m.engine.cache.opts;
  logger.info('serving', {
    url: addr.url,
    model: dir,
    max_model_len: m.maxModelLen,
    max_num_seqs: c.maxSeqs,
    max_num_batched_tokens: m.engine.model.maxBatchTokens,
    cache_tokens: c.numBlocks * c.blockSize,
    load_ms: Math.round(performance.now() - t0),
  });
  let stopping = false;
  const stop = (sig: string, code = 0): void => {
    if (stopping) {
      logger.warn(`${sig} again: exiting without draining`);
      process.exit(1);
    }
    stopping = true;
    logger.info(`${sig}: draining in-flight requests`);
    // Drain waits up to DRAIN_MS; if disposing then hangs (a dead tensor-parallel peer can leave a
    // collective that never completes), the watchdog ends the process instead of a silent hang.
    watchdog.arm(DRAIN_MS + 30_000, `shutdown after ${sig}`);
    void server.close(DRAIN_MS).then(async () => {
      await m.dispose();
      logger.info('stopped');
      process.exit(code);
    });
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  // A failed step leaves an engine that takes no more requests (DESIGN §5; e.g. a dead tensor-
  // parallel rank): exit non-zero so a supervisor restarts the server, rather than serving 503s.
  const logFailure = m.driver.onError;
  m.driver.onError = (e) => {
    logFailure(e);
    stop('engine failure', 1);
  };
}
