#!/usr/bin/env node
/**
 * bailing CLI: generate | chat | inspect | serve | bench serve. The only layer that picks a backend. Errors from bad
 * input print one line (no stack) and exit 1; anything else is a bug and prints its stack.
 */
import { parseArgs } from 'node:util';
import { createInterface } from 'node:readline';
import { setImmediate as tick } from 'node:timers/promises';
import { selectBackend } from '../backend/select.js';
import type { Engine, GenerateResult } from '../engine/engine.js';
import { openModel, type OpenedModel } from '../engine/open.js';
import { resolveSamplingParams, type SamplingParams } from '../engine/sampler.js';
import type { ChatMessage } from '../tokenizer/tokenizer.js';
import { BailingError } from '../util/errors.js';
import { commonOptions, compat, device, modelDir, num, samplingInput, samplingOptions } from './args.js';
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
  --device cpu|cuda|auto   backend (default cpu)
  --compat default|vllm    semantics: the official model code (default) or vLLM's exactly
  --threads N              CPU threads (default: all cores)
  --max-model-len N        context length (default min(max_position_embeddings, 4096))
  --max-batch-tokens N     tokens per forward step (default 256)

sampling (generate, chat):
  --max-tokens N --temperature T --top-k K --top-p P --min-p P --seed S
  --repetition-penalty R --presence-penalty P --frequency-penalty F --stop STR (repeatable) --ignore-eos

inspect:
  --batch N --context N    memory estimate for N sequences of N tokens (default 1, 4096)
`;

async function open(values: Record<string, string | boolean | string[] | undefined>): Promise<OpenedModel> {
  const be = selectBackend(device(values), { threads: num(values, 'threads') });
  const t0 = performance.now();
  const m = await openModel(modelDir(values), be, {
    compat: compat(values),
    maxModelLen: num(values, 'max-model-len'),
    maxBatchTokens: num(values, 'max-batch-tokens'),
    seed: Date.now() >>> 0,
  });
  const c = m.loaded.spec.config;
  process.stderr.write(
    `loaded ${m.loaded.dir}: ${c.num_hidden_layers} layers, hidden ${c.hidden_size}, ${c.num_experts} experts, compat ${m.loaded.spec.semantics.compat}` +
      `${m.loaded.weights.setAside.length ? `, ${m.loaded.weights.setAside.length} MTP tensors set aside` : ''} (${(performance.now() - t0).toFixed(0)} ms)\n`,
  );
  return m;
}

/** Run the engine until `done` settles, yielding so streamed text reaches stdout. */
async function drive(engine: Engine, done: Promise<GenerateResult>): Promise<GenerateResult> {
  let finished = false;
  void done.then(() => (finished = true));
  while (!finished) {
    engine.step();
    await tick();
  }
  return done;
}

async function generateOnce(m: OpenedModel, promptIds: number[], params: SamplingParams): Promise<GenerateResult> {
  const t0 = performance.now();
  let first = 0;
  const res = await drive(
    m.engine,
    m.engine.submit({
      promptIds,
      params: { ...params, maxTokens: params.maxTokens ?? m.maxModelLen },
      onDelta: (text) => {
        if (!first) first = performance.now();
        process.stdout.write(text);
      },
    }),
  );
  const t1 = performance.now();
  const decodeTps = res.tokenIds.length > 1 ? ((res.tokenIds.length - 1) * 1000) / (t1 - (first || t1)) : 0;
  process.stderr.write(
    `\n[${res.promptTokens} prompt tokens, ${res.tokenIds.length} generated, finish ${res.finishReason}; ` +
      `first token ${((first || t1) - t0).toFixed(0)} ms, ${decodeTps.toFixed(1)} tok/s]\n`,
  );
  return res;
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

async function generateCommand(argv: string[]): Promise<void> {
  const { values, positionals } = parseArgs({ args: argv, options: { ...commonOptions, ...samplingOptions }, allowPositionals: true });
  if (values.help) return void process.stdout.write(USAGE);
  const prompt = positionals.length > 0 ? positionals.join(' ') : process.stdin.isTTY ? '' : await readStdin();
  if (prompt.length === 0) throw new BailingError('generate: give a prompt as an argument or on stdin');
  const m = await open(values);
  const params = resolveSamplingParams(samplingInput(values, { maxTokens: 64, temperature: 0.7 }), { vocabSize: m.loaded.spec.config.vocab_size });
  process.stdout.write(prompt);
  await generateOnce(m, m.tokenizer.encode(prompt), params);
  disposeBackend(m);
}

async function chatCommand(argv: string[]): Promise<void> {
  const { values } = parseArgs({ args: argv, options: { ...commonOptions, ...samplingOptions, system: { type: 'string' } }, allowPositionals: false });
  if (values.help) return void process.stdout.write(USAGE);
  const m = await open(values);
  const params = resolveSamplingParams(samplingInput(values, { maxTokens: 256, temperature: 0.7 }), { vocabSize: m.loaded.spec.config.vocab_size });
  const history: ChatMessage[] = values.system ? [{ role: 'system', content: values.system }] : [];
  const tty = process.stdin.isTTY === true;
  const rl = createInterface({ input: process.stdin, output: tty ? process.stdout : undefined, terminal: tty });
  if (tty) process.stderr.write('chat: type a message, /reset to clear the history, /exit or Ctrl-D to quit\n');
  const prompt = (): void => (tty ? rl.setPrompt('> ') : undefined, tty ? rl.prompt() : undefined);
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
    const rendered = m.tokenizer.applyChatTemplate(history, { addGenerationPrompt: true });
    const ids = m.tokenizer.encode(rendered, { addSpecialTokens: false });
    if (ids.length >= m.maxModelLen) {
      process.stderr.write(`the conversation (${ids.length} tokens) no longer fits the context (${m.maxModelLen}); /reset to start over\n`);
      history.pop();
      prompt();
      continue;
    }
    const res = await generateOnce(m, ids, params);
    history.push({ role: 'assistant', content: res.text });
    prompt();
  }
  rl.close();
  disposeBackend(m);
}

function disposeBackend(m: OpenedModel): void {
  m.engine.model.be.dispose();
}

async function main(argv: string[]): Promise<void> {
  const [cmd, ...rest] = argv;
  switch (cmd) {
    case 'generate':
      return generateCommand(rest);
    case 'chat':
      return chatCommand(rest);
    case 'inspect':
      return inspectCommand(rest);
    case 'perplexity':
      return perplexityCommand(rest);
    case 'serve':
      return serveCommand(rest);
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

main(process.argv.slice(2)).catch((e: unknown) => {
  if (e instanceof BailingError || (e instanceof Error && 'code' in e && String((e as { code: unknown }).code).startsWith('ERR_PARSE_ARGS'))) {
    process.stderr.write(`bailing: ${e.message}\n`);
    process.exit(1);
  }
  process.stderr.write(`bailing: internal error: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
  process.exit(2);
});
