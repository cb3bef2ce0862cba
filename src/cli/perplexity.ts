/** bailing perplexity FILE: perplexity of a text file under a model (windowing: engine/perplexity.ts). */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { selectBackend } from '../backend/select.js';
import { perplexityOfIds } from '../engine/perplexity.js';
import { loadModelDir } from '../model/load.js';
import { loadTokenizer } from '../tokenizer/tokenizer.js';
import { InvalidRequestError } from '../util/errors.js';
import { commonOptions, compat, device, modelDir, num } from './args.js';

function progressBar(scored: number, total: number, t0: number): string {
  const width = 30;
  const fill = Math.round((width * scored) / total);
  const tps = (scored * 1000) / Math.max(1, performance.now() - t0);
  return `\r[${'#'.repeat(fill)}${' '.repeat(width - fill)}] ${scored}/${total} tokens, ${tps.toFixed(0)} tok/s`;
}

export async function perplexityCommand(argv: string[]): Promise<void> {
  const { values, positionals } = parseArgs({ args: argv, options: { ...commonOptions, window: { type: 'string' } }, allowPositionals: true });
  if (positionals.length !== 1) throw new InvalidRequestError('perplexity: give exactly one text FILE', 'file');
  let text: string;
  try {
    text = readFileSync(positionals[0], 'utf8');
  } catch (e) {
    throw new InvalidRequestError(`perplexity: cannot read ${positionals[0]}: ${(e as Error).message}`, 'file');
  }
  const dir = modelDir(values);
  const be = selectBackend(device(values), { threads: num(values, 'threads') });
  try {
    const tokenizer = await loadTokenizer(dir);
    const loaded = loadModelDir(dir, be, compat(values));
    const ids = tokenizer.encode(text);
    const window = num(values, 'window') ?? 256;
    const t0 = performance.now();
    const tty = process.stderr.isTTY === true;
    const r = perplexityOfIds(loaded, be, ids, {
      window,
      chunk: num(values, 'max-batch-tokens'),
      onProgress: tty ? (s, total) => process.stderr.write(progressBar(s, total, t0)) : undefined,
    });
    if (tty) process.stderr.write('\n');
    process.stdout.write(
      `perplexity ${r.perplexity.toFixed(4)}\n` +
        `tokens scored ${r.scoredTokens} (${r.tokens} tokens in ${r.windows} windows of ${window})\n` +
        `tokens/s ${(r.scoredTokens / r.seconds).toFixed(1)}\n`,
    );
  } finally {
    be.dispose();
  }
}
