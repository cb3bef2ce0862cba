/**
 * Inputs of the PyTorch oracle (tools/oracle): every variant of tiny-configs.ts `oracleVariants`
 * (the v2.5 tiny variants and the Ring-linear ones, at hidden 16 / vocab 48) written as a model
 * directory (config.json + safetensors, shards for port and lean) plus prompt.json with
 * seeded token ids. tools/oracle/make_fixtures.py reads these and writes the expected outputs
 * (<semantics>.safetensors / <semantics>.json) next to them; src/model/oracle.test.ts compares.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Prng } from '../util/prng.js';
import { writeTinyModel } from './tiny-checkpoint.js';
import { oracleVariants } from './tiny-configs.js';

/** Prompt length: past vLLM's 256-token prefill block (spec §4.6), so the quirk is exercised. */
export const ORACLE_PROMPT_TOKENS = 300;

export interface OraclePrompt {
  readonly seed: number;
  readonly ids: number[];
}

/** Seeded prompt of n ids in [0, vocab). */
export function oraclePrompt(vocab: number, seed: number, n = ORACLE_PROMPT_TOKENS): OraclePrompt {
  const rng = new Prng(seed);
  return { seed, ids: Array.from({ length: n }, () => rng.int(vocab)) };
}

/** Write root/<variant>/{config.json, model safetensors, prompt.json}; returns the variant names. */
export function writeOracleInputs(root: string): string[] {
  return oracleVariants.map((v, i) => {
    const dir = join(root, v.name);
    writeTinyModel(dir, v.config, v.opts);
    const vocab = Number(v.config.vocab_size);
    writeFileSync(join(dir, 'prompt.json'), JSON.stringify(oraclePrompt(vocab, 7000 + i)) + '\n');
    return v.name;
  });
}
