#!/usr/bin/env node
/**
 * bailing CLI: generate | chat | inspect | perplexity | serve | bench serve — a thin layer over the
 * public API (src/api). Errors from bad input print one line (no stack) and exit 1; anything else
 * is a bug and prints its stack.
 */
import { parseArgs } from 'node:util';
import { createInterface } from 'node:readline';
import { loadModel, type BailingModel, type ChatMessage } from '../api/model.js';
import type { ChunkStream } from '../api/stream.js';
import { BailingError, InvalidRequestError } from '../util/errors.js';
import { commonOptions, loadOptions, samplingOptionsOf, samplingOptions } from './args.js';
import { ExitWatchdog } from './watchdog.js';
import { inspectCommand } from './inspect.js';
import { perplexityCommand } from './perplexity.js';
import { benchCommand } from './bench-serve.js';
import { serveCommand } from './serve.js';

const USAGE = `bailing — Bailing MoE v2.5 (Ling/Ring 2.5, Ling 2.6) inference in TypeScript

usage:
  bailing generate [PROMPT] [options]   complete PROMPT (or stdin) and stream the text
  bailing chat [options]                interactive chat with the model's chat template
  bailing inspect [options]             layer plan, parameters, cache and memory estimate
  bailing perplexity FILE [options]     perplexity of a text file (--window N tokens, default 256)
  bailing serve [options]               OpenAI-compatible HTTP server (bailing serve --help)
  bailing bench serve [options]         load-test a running server (bailing bench serve --help)

model and runtime:
  --model DIR              Hugging Face model directory (default: the embedded tiny model)
  --device cpu|cuda|auto   backend (default auto: a usable CUDA GPU, else the CPU)
  --compat default|vllm    semantics: the official model code (default) or vLLM's exactly
  --threads N              CPU threads (default: all cores)
  --max-model-len N        context length (default min(max_position_embeddings, 4096))
  --max-batch-tokens N     tokens per forward step (default 8192 on cuda, 256 on cpu)
  --tp N                   tensor parallel over N GPUs (with --device cuda; one process per GPU)
  --load-format dummy      random weights of the config's shapes made on the GPU (benchmarks;
                           --device cuda; the model dir needs only config.json)
  --kv-cache-dtype auto|bf16|f32
                           MLA latent / GQA KV cache values (default auto: bf16 on cuda, f32 on cpu)
  --matmul-inputs f32|bf16 weight-matmul inputs: bf16 (default on cuda: rounded to bf16, fp32
                           accumulation, a bf16 engine's numerics) or f32 (default on cpu; on cuda
                           f32-faithful split GEMMs, equal to the CPU to ~1e-10, ~1.6x slower prefill)

sampling (generate, chat):
  --max-tokens N --temperature T --top-k K --top-p P --min-p P --seed S
  --repetition-penalty R --presence-penalty P --frequency-penalty F --stop STR (repeatable) --ignore-eos

inspect:
  --batch N --context N    memory estimate for N sequences of N tokens (default 1, 4096)
`;

async function open(values: Record<string, string | boolean | string[] | undefined>): Promise<BailingModel> {
  const t0 = performance.now();
  const m = await loadModel(loadOptions(values));
  const i = m.info;
  process.stderr.write(
    `loaded ${i.dir}: ${i.layers.length} layers, ${i.inspect.params.total.toLocaleString()} parameters, device ${i.device}, compat ${i.compat} (${(performance.now() - t0).toFixed(0)} ms)\n`,
  );
  return m;
}

/** Stream one completion to stdout; report counts and speed on stderr. */
type Streamed = { readonly text?: string; readonly content?: string; readonly tokenIds: readonly number[] };
type Finished = { readonly promptTokens: number; readonly completionTokens: number; readonly finishReason: string };

/** t0: when the request was made (time to first token counts from there). */
async function streamOut<C extends Streamed, R extends Finished>(t0: number, stream: ChunkStream<C, R>): Promise<void> {
  let first = 0;
  for await (const c of stream) {
    if (!first && c.tokenIds.length > 0) first = performance.now();
    process.stdout.write(c.text ?? c.content ?? '');
  }
  const r = await stream.result;
  const t1 = performance.now();
  const decodeTps = r.completionTokens > 1 ? ((r.completionTokens - 1) * 1000) / (t1 - (first || t1)) : 0;
  process.stderr.write(
    `\n[${r.promptTokens} prompt tokens, ${r.completionTokens} generated, finish ${r.finishReason}; ` +
      `first token ${((first || t1) - t0).toFixed(0)} ms, ${decodeTps.toFixed(1)} tok/s]\n`,
  );
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

async function generateCommand(argv: string[], watchdog: ExitWatchdog): Promise<void> {
  const { values, positionals } = parseArgs({ args: argv, options: { ...commonOptions, ...samplingOptions }, allowPositionals: true });
  if (values.help) return void process.stdout.write(USAGE);
  const prompt = positionals.length > 0 ? positionals.join(' ') : process.stdin.isTTY ? '' : await readStdin();
  if (prompt.length === 0) throw new BailingError('generate: give a prompt as an argument or on stdin');
  const options = samplingOptionsOf(values, { maxTokens: 64, temperature: 0.7 });
  const m = await open(values);
  await using(m, watchdog, async () => {
    process.stdout.write(prompt);
    await streamOut(performance.now(), m.generate(prompt, options));
  });
}

/**
 * Run fn, then dispose the model. On an error the exit watchdog is armed first: disposing after a
 * device or tensor-parallel failure may block in native code, and the CLI must still exit.
 */
async function using(m: BailingModel, watchdog: ExitWatchdog, fn: () => Promise<void>): Promise<void> {
  try {
    await fn();
  } catch (e) {
    watchdog.arm(15_000, 'exit after an error');
    throw e;
  } finally {
    await m.dispose();
  }
}

async function chatCommand(argv: string[], watchdog: ExitWatchdog): Promise<void> {
  const { values } = parseArgs({ args: argv, options: { ...commonOptions, ...samplingOptions, system: { type: 'string' } }, allowPositionals: false });
  if (values.help) return void process.stdout.write(USAGE);
  const options = samplingOptionsOf(values, { maxTokens: 256, temperature: 0.7 });
  const m = await open(values);
  const history: ChatMessage[] = values.system ? [{ role: 'system', content: values.system }] : [];
  const tty = process.stdin.isTTY === true;
  const rl = createInterface({ input: process.stdin, output: tty ? process.stdout : undefined, terminal: tty });
  if (tty) process.stderr.write('chat: type a message, /reset to clear the history, /exit or Ctrl-D to quit\n');
  const prompt = (): void => (tty ? rl.setPrompt('> ') : undefined, tty ? rl.prompt() : undefined);
  await using(m, watchdog, async () => {
    try {
      prompt();
      for await (const line of rl) {
        const text = line.trim();
        if (text === '/exit') break;
        if (text === '/reset') {
          history.splice(values.system ? 1 : 0);
          prompt();
          continue;
        }
        if (text.length === 0) {
          prompt();
          continue;
        }
        history.push({ role: 'user', content: text });
        let stream;
        const t0 = performance.now();
        try {
          stream = m.chat(history, options);
        } catch (e) {
          // A conversation grown past the context is the user's to fix, not a reason to exit.
          if (!(e instanceof InvalidRequestError)) throw e;
          process.stderr.write(`${e.message}; /reset to start over\n`);
          history.pop();
          prompt();
          continue;
        }
        await streamOut(t0, stream);
        const r = await stream.result;
        history.push({ role: 'assistant', content: r.content });
        prompt();
      }
    } finally {
      rl.close();
    }
  });
}

async function main(argv: string[], watchdog: ExitWatchdog): Promise<void> {
  const [cmd, ...rest] = argv;
  switch (cmd) {
    case 'generate':
      return generateCommand(rest, watchdog);
    case 'chat':
      return chatCommand(rest, watchdog);
    case 'inspect':
      return inspectCommand(rest);
    case 'perplexity':
      return perplexityCommand(rest);
    case 'serve':
      return serveCommand(rest, watchdog);
    case 'bench':
      return benchCommand(rest);
    case undefined:
    case '-h':
    case '--help':
    case 'help':
      process.stdout.write(USAGE);
      return;
    default:
      throw new BailingError(`unknown command "${cmd}"; try: bailing --help`);
  }
}

// Started first so it can act later even if the main thread gets stuck in native code (watchdog.ts).
const watchdog = new ExitWatchdog();
main(process.argv.slice(2), watchdog).catch((e: unknown) => {
  if (e instanceof BailingError || (e instanceof Error && 'code' in e && String((e as { code: unknown }).code).startsWith('ERR_PARSE_ARGS'))) {
    process.stderr.write(`bailing: ${e.message}\n`);
    process.exit(1);
  }
  process.stderr.write(`bailing: internal error: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
  watchdog.arm(15_000, 'exit after an internal error');
  process.exit(2);
});
