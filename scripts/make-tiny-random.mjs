#!/usr/bin/env node
// Regenerates models/tiny-random: the random-weight model the tests use (the embedded default is
// models/tiny-brown). Run after `npm run build`.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tinyConfig, writeTinyModel } from '../dist/src/model/tiny-checkpoint.js';
import { writeTinyTokenizer } from '../dist/src/tokenizer/make-byte-tokenizer.js';

const dir = join(import.meta.dirname ?? new URL('.', import.meta.url).pathname, '..', 'models', 'tiny-random');
writeTinyTokenizer(dir);
// Only what differs from the test-suite's tinyConfig() (src/model/tiny-checkpoint.ts).
const config = tinyConfig({
  vocab_size: 272,
  hidden_size: 64,
  intermediate_size: 128,
  num_hidden_layers: 8,
  num_attention_heads: 4,
  head_dim: 16,
  layer_group_size: 4,
  moe_intermediate_size: 32,
  moe_shared_expert_intermediate_size: 32,
  q_lora_rank: 32,
  kv_lora_rank: 32,
  qk_nope_head_dim: 16,
  qk_rope_head_dim: 8,
  v_head_dim: 16,
  eos_token_id: 259,
  pad_token_id: 256,
});
writeTinyModel(dir, config, { seed: 20261126, dtype: 'BF16' });
writeFileSync(join(dir, 'generation_config.json'), JSON.stringify({ eos_token_id: [259], pad_token_id: 256 }, null, 2) + '\n');
writeFileSync(
  join(dir, 'README.md'),
  '# tiny-random\n\nRandom bf16 weights of the Bailing MoE v2.5 architecture (8 layers: 6 lightning + 2 MLA, 8 experts\ntop-2 in 4 groups, shared expert, first layer dense) with a byte-level tokenizer. The engine and server tests use it and\n`--load-format dummy` borrows its tokenizer; its output is not language (the embedded default is\nmodels/tiny-brown). Regenerate with\n`npm run build && node scripts/make-tiny-random.mjs`.\n',
);
console.log(`wrote ${dir}`);
