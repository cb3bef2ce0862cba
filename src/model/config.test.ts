import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ModelLoadError, UnsupportedError } from '../util/errors.js';
import { buildSpec, parseConfig } from './config.js';
import { tinyConfig } from './tiny-checkpoint.js';

function rejects(over: Record<string, unknown>, field: string, pattern: RegExp, cls: new (...a: never[]) => Error = ModelLoadError): void {
  assert.throws(
    () => parseConfig(tinyConfig(over), 'cfg/config.json'),
    (e: unknown) => {
      assert.ok(e instanceof cls, `expected ${cls.name}, got ${String(e)}`);
      const msg = (e as Error).message;
      assert.ok(msg.includes('cfg/config.json'), `message names the file: ${msg}`);
      assert.ok(msg.includes(field), `message names ${field}: ${msg}`);
      assert.match(msg, pattern);
      return true;
    },
  );
}

test('a complete config parses with every default filled and derived dims', () => {
  const { config, naming } = parseConfig(tinyConfig({ rope_theta: undefined, rms_norm_eps: undefined, norm_topk_prob: undefined, layer_group_size: 2 }));
  assert.equal(naming, 'bailing');
  assert.equal(config.rope_theta, 10000);
  assert.equal(config.rms_norm_eps, 1e-5);
  assert.equal(config.norm_topk_prob, true); // vLLM's default when absent
  const spec = buildSpec(config, naming);
  assert.deepEqual(spec.layers.map((l) => l.mixer), ['lightning', 'mla', 'lightning', 'mla']);
  assert.deepEqual(spec.layers.map((l) => l.ffn), ['dense', 'moe', 'moe', 'moe']);
  assert.equal(spec.linearRotaryDim, 4);
  assert.equal(spec.mlaInvFreq.length, 2);
  assert.equal(spec.sharedFfn, 16);
  assert.equal(spec.decay[1], null);
});

test('validation errors name the field, expected and found', () => {
  rejects({ group_norm_size: 3 }, 'group_norm_size', /not divisible/);
  rejects({ n_group: 3 }, 'n_group', /num_experts 8 is not divisible by n_group 3/);
  rejects({ topk_group: null }, 'topk_group', /both be set/);
  rejects({ topk_group: 5 }, 'topk_group', /exceeds n_group/);
  rejects({ num_experts_per_tok: 5, topk_group: 1 }, 'num_experts_per_tok', /cannot be chosen/);
  rejects({ score_function: 'softmax' }, 'score_function', /expected \("sigmoid", true\)/);
  rejects({ score_function: 'sigmoid', moe_router_enable_expert_bias: false }, 'score_function', /expected/);
  rejects({ score_function: 'relu' }, 'score_function', /"sigmoid" or "softmax"/);
  rejects({ architectures: ['LlamaForCausalLM'], model_type: 'llama' }, 'architectures', /unsupported architecture/);
  rejects({ architectures: ['BailingMoeLinearV2ForCausalLM'], model_type: 'bailing_moe_linear', num_key_value_heads: 3 }, 'num_key_value_heads', /not a multiple/);
  rejects({ hidden_size: undefined }, 'hidden_size', /required field "hidden_size" is missing/);
  rejects({ num_experts: undefined }, 'num_experts', /missing/);
  rejects({ hidden_size: 'big' }, 'hidden_size', /expected a number/);
  rejects({ num_hidden_layers: 2.5 }, 'num_hidden_layers', /integer/);
  rejects({ rope_scaling: { rope_type: 'yarn', factor: 4 } }, 'rope_scaling', /yarn.*not supported/);
  rejects({ first_k_dense_replace: 1, intermediate_size: null }, 'intermediate_size', /required/);
  rejects({ quantization_config: { quant_method: 'fp8' } }, 'quantization_config', /fp8/, UnsupportedError);
  assert.throws(() => parseConfig([1, 2]), ModelLoadError);
});

test('transformers-port naming: bailing2_5_moe with its own keys', () => {
  const { config, naming } = parseConfig({
    ...tinyConfig({ model_type: 'bailing2_5_moe', head_dim: 4, attention_bias: true, linear_key_value_heads: 4, rope_parameters: { rope_theta: 5000 } }),
    rope_theta: undefined,
    moe_router_enable_expert_bias: undefined,
    score_function: undefined,
  });
  assert.equal(naming, 'transformers');
  assert.equal(config.head_dim, 8); // hidden/heads, not the port's overwritten head_dim
  assert.equal(config.rope_theta, 5000);
  assert.equal(config.moe_router_enable_expert_bias, true);
  assert.equal(config.score_function, 'sigmoid');
  assert.equal(config.use_qkv_bias, true);
  assert.throws(() => parseConfig(tinyConfig({ model_type: 'bailing2_5_moe', linear_key_value_heads: 2 })), /linear-attention heads \(2\)/);
  const lt = parseConfig(tinyConfig({ layer_types: ['linear_attention', 'linear_attention', 'full_attention', 'linear_attention'] }));
  assert.deepEqual(buildSpec(lt.config, lt.naming).layers.map((l) => l.mixer), ['lightning', 'lightning', 'mla', 'lightning']);
});

test('eos ids, rope scaling and the slope decay of each lightning layer', () => {
  const { config, naming } = parseConfig(tinyConfig({ eos_token_id: [3, 4], rope_scaling: { type: 'linear', factor: 2 } }));
  assert.deepEqual(config.eos_token_id, [3, 4]);
  const spec = buildSpec(config, naming);
  const plain = buildSpec(parseConfig(tinyConfig()).config, 'bailing');
  assert.ok(Math.abs(spec.linearInvFreq[1] * 2 - plain.linearInvFreq[1]) < 1e-12, 'linear scaling halves the frequencies');
  // Layer 0 of 4 with the official (l-1) rule: factor 1 + 1/3 + 1e-5; H = 4 → slopes 2^-2, 2^-4, 2^-6, 2^-8.
  const d0 = plain.decay[0]!;
  assert.ok(Math.abs(d0[0] - 0.25 * (1 + 1 / 3 + 1e-5)) < 1e-7);
  assert.ok(Math.abs(d0[3] - 2 ** -8 * (1 + 1 / 3 + 1e-5)) < 1e-9);
});
