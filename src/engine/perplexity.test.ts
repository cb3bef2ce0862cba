import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CpuBackend } from '../backend/cpu/cpu-backend.js';
import { loadModelDir } from '../model/load.js';
import { loadTokenizer } from '../tokenizer/tokenizer.js';
import { perplexityOfIds, perplexityWindows } from './perplexity.js';

/** models/tiny-brown (the embedded trained model), found from the package root. */
function modelDir(): string {
  const here = dirname(fileURLToPath(import.meta.url));
  for (const base of [process.cwd(), resolve(here, '../../..'), resolve(here, '../..')]) {
    const d = join(base, 'models/tiny-brown');
    if (existsSync(join(d, 'config.json'))) return d;
  }
  throw new Error('models/tiny-brown not found (run from the package root)');
}

interface Recorded {
  window: number;
  tokens: number;
  scored_tokens: number;
  first_ids: number[];
  ids_sum: number;
  perplexity: number;
  unigram_perplexity: number;
}

const DIR = modelDir();
const REC = JSON.parse(readFileSync(join(DIR, 'heldout-ppl.json'), 'utf8')) as Recorded;

test('perplexityWindows: [0,W), [W,2W), …; a 1-token tail scores nothing and is dropped', () => {
  assert.deepEqual(perplexityWindows(10, 4), [0, 4, 8]);
  assert.deepEqual(perplexityWindows(9, 4), [0, 4]);
  assert.deepEqual(perplexityWindows(1, 4), []);
});

test('chunking a window does not change the result (chunk 256 vs 7)', () => {
  const be = new CpuBackend({ threads: 1 });
  const loaded = loadModelDir(DIR, be);
  const ids = Array.from({ length: 90 }, (_, i) => (i * 131 + 7) % loaded.spec.config.vocab_size);
  const a = perplexityOfIds(loaded, be, ids, { window: 40 });
  const b = perplexityOfIds(loaded, be, ids, { window: 40, chunk: 7 });
  assert.equal(a.scoredTokens, 90 - 3);
  assert.ok(Math.abs(a.nll - b.nll) <= 1e-6 * Math.abs(a.nll), `${a.nll} vs ${b.nll}`);
  be.dispose();
});

test('embedded model on the held-out excerpt: the oracle perplexity within 0.1%, far below unigram', async () => {
  const be = new CpuBackend({});
  const tok = await loadTokenizer(DIR);
  const ids = tok.encode(readFileSync(join(DIR, 'heldout-excerpt.txt'), 'utf8'));
  // Same tokenization as the Python tokenizer the oracle used.
  assert.equal(ids.length, REC.tokens);
  assert.deepEqual(ids.slice(0, REC.first_ids.length), REC.first_ids);
  assert.equal(ids.reduce((a, b) => a + b, 0), REC.ids_sum);
  const r = perplexityOfIds(loadModelDir(DIR, be), be, ids, { window: REC.window });
  be.dispose();
  assert.equal(r.scoredTokens, REC.scored_tokens);
  const rel = Math.abs(r.perplexity - REC.perplexity) / REC.perplexity;
  assert.ok(rel <= 1e-3, `perplexity ${r.perplexity} vs oracle ${REC.perplexity} (rel ${rel.toExponential(2)})`);
  assert.ok(r.perplexity < REC.unigram_perplexity / 5, `perplexity ${r.perplexity} vs unigram ${REC.unigram_perplexity}`);
});
