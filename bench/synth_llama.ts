// A Hugging Face Llama folder with LLaMA-2-7B-shaped blocks and random weights, so that the REAL
// pipeline (`lopro quantize`: tokenizer, calibration forwards, Hessians, layers, native export) can
// be timed at 7B layer sizes on the device (issue 5). The fixture models are 512 wide at most.
// Weights: N(0, 1/fan_in) with log-normal row and column scales and 0.2 % outliers ×8 (LLM-like
// statistics, not a trained model: the perplexity means nothing, the timing does); F16, streamed.
// The tokenizer files are copied from --tokenizer-from (vocab_size follows its vocabulary).
//
//   node --import tsx bench/synth_llama.ts --out DIR [--blocks 2] [--hidden 4096] [--mlp 11008]
//        [--heads 32] [--kv-heads 32] [--tokenizer-from ../shared/fixtures/models/base] [--distinct N]
// --distinct N: only N different blocks, block b repeats block b mod N's weights (generated once, written again:
// a 32-block 7B-shaped file is then mostly disk writes; timing does not care).
// --experts E [--topk K]: a Mixtral-shaped model instead (model_type mixtral, block_sparse_moe with a router
// `gate` [E, hidden] and experts w1/w3/w2 of --mlp); the experts of a block share one random draw (the
// generator again; each expert still sees its own routed tokens, so its Hessian and its quantization differ).
//   Mixtral-8x7B: --hidden 4096 --mlp 14336 --heads 32 --kv-heads 8 --experts 8 --topk 2

import * as fs from 'node:fs';
import * as path from 'node:path';
import { SafetensorsWriter } from '../src/engine/io/safetensors_writer';
import { f32ToF16Bits } from '../src/engine/io/dtypes';
import { mulberry32 } from '../src/engine/util/random';

const args = process.argv.slice(2);
const arg = (k: string, d: string) => {
  const i = args.indexOf(`--${k}`);
  return i >= 0 ? args[i + 1] : d;
};
const out = arg('out', '');
if (!out) throw new Error('--out DIR is required');
const blocks = Number(arg('blocks', '2')),
  hidden = Number(arg('hidden', '4096')),
  mlp = Number(arg('mlp', '11008'));
const heads = Number(arg('heads', '32')),
  kvHeads = Number(arg('kv-heads', '32')),
  headDim = hidden / heads;
const distinct = Math.max(1, Math.min(blocks, Number(arg('distinct', String(blocks)))));
const experts = Number(arg('experts', '0')),
  topK = Number(arg('topk', '2'));
const tokDir = arg('tokenizer-from', path.join(__dirname, '..', '..', 'shared', 'fixtures', 'models', 'base'));

const t0 = performance.now();
fs.mkdirSync(out, { recursive: true });
for (const f of ['tokenizer.json', 'tokenizer_config.json']) fs.copyFileSync(path.join(tokDir, f), path.join(out, f));
const vocab = (JSON.parse(fs.readFileSync(path.join(tokDir, 'config.json'), 'utf8')) as { vocab_size: number }).vocab_size;
fs.writeFileSync(
  path.join(out, 'config.json'),
  JSON.stringify(
    {
      ...(experts
        ? { architectures: ['MixtralForCausalLM'], model_type: 'mixtral', num_local_experts: experts, num_experts_per_tok: topK, sliding_window: null, router_jitter_noise: 0.0 }
        : { architectures: ['LlamaForCausalLM'], model_type: 'llama' }),
      hidden_size: hidden,
      intermediate_size: mlp,
      num_hidden_layers: blocks,
      num_attention_heads: heads,
      num_key_value_heads: kvHeads,
      head_dim: headDim,
      vocab_size: vocab,
      max_position_embeddings: 4096,
      rms_norm_eps: 1e-5,
      rope_theta: experts ? 1e6 : 10000,
      hidden_act: 'silu',
      tie_word_embeddings: true,
      attention_bias: false,
      mlp_bias: false,
      torch_dtype: 'float16',
    },
    null,
    1,
  ),
);

const u = mulberry32(1234);
const gauss = () => Math.sqrt(-2 * Math.log(u() || 1e-12)) * Math.cos(2 * Math.PI * u());
// The matrices' values draw from 2^16 standard normal samples by a 32-bit xorshift (its low 16 bits pick the sample,
// the high 16 the 0.2 % outliers): the same statistics as a Box–Muller draw per value, about 4× faster, and this
// generator was most of a device call's minute spent making the 7B-shaped files (2026-12-08: values changed then).
const NORMAL = Float32Array.from({ length: 1 << 16 }, gauss);
let xs = 0x9e3779b9;
const OUTLIER_BELOW = Math.round(0.002 * (1 << 16));
const linears: [string, number, number][] = [
  ['self_attn.q_proj', hidden, hidden],
  ['self_attn.k_proj', kvHeads * headDim, hidden],
  ['self_attn.v_proj', kvHeads * headDim, hidden],
  ['self_attn.o_proj', hidden, hidden],
];
if (experts) {
  linears.push(['block_sparse_moe.gate', experts, hidden]);
  for (let e = 0; e < experts; e++)
    linears.push([`block_sparse_moe.experts.${e}.w1`, mlp, hidden], [`block_sparse_moe.experts.${e}.w3`, mlp, hidden], [`block_sparse_moe.experts.${e}.w2`, hidden, mlp]);
} else linears.push(['mlp.gate_proj', mlp, hidden], ['mlp.up_proj', mlp, hidden], ['mlp.down_proj', hidden, mlp]);
const specs = [{ name: 'model.embed_tokens.weight', dtype: 'F16' as const, shape: [vocab, hidden] }];
for (let b = 0; b < blocks; b++) {
  specs.push({ name: `model.layers.${b}.input_layernorm.weight`, dtype: 'F16', shape: [hidden] });
  for (const [n, r, c] of linears) specs.push({ name: `model.layers.${b}.${n}.weight`, dtype: 'F16', shape: [r, c] });
  specs.push({ name: `model.layers.${b}.post_attention_layernorm.weight`, dtype: 'F16', shape: [hidden] });
}
specs.push({ name: 'model.norm.weight', dtype: 'F16', shape: [hidden] });
const w = SafetensorsWriter.create(path.join(out, 'model.safetensors'), specs, { format: 'pt', generator: 'lopro bench/synth_llama.ts (random, 7B-shaped)' });

/** Chunks of the first `distinct` blocks' matrices, by "b mod distinct/linear name", for the repeats. */
const repeats = new Map<string, Uint16Array[]>();

/** rows×cols F16, written in ≤ 32 MiB row chunks. */
function writeMatrix(name: string, rows: number, cols: number, std: number): void {
  const m = /^model\.layers\.(\d+)\.(.*)$/.exec(name);
  // A block's experts share expert 0's draw; blocks past --distinct repeat an earlier block.
  const local = m?.[2].replace(/experts\.\d+\./, 'experts.0.');
  const key = m && (distinct < blocks || /experts\.\d+\./.test(m[2])) ? `${Number(m[1]) % distinct}/${local}` : undefined;
  const again = key ? repeats.get(key) : undefined;
  if (again) {
    for (const buf of again) w.writeChunk(name, buf);
    return;
  }
  const kept: Uint16Array[] = [];
  if (key) repeats.set(key, kept);
  const colScale = Float32Array.from({ length: cols }, () => Math.exp(0.4 * gauss()));
  const step = Math.max(1, Math.floor((32 << 20) / (2 * cols)));
  for (let r0 = 0; r0 < rows; r0 += step) {
    const n = Math.min(step, rows - r0),
      buf = new Uint16Array(n * cols);
    for (let i = 0; i < n; i++) {
      const rs = std * Math.exp(0.3 * gauss());
      for (let j = 0; j < cols; j++) {
        xs ^= xs << 13;
        xs ^= xs >>> 17;
        xs ^= xs << 5;
        const outlier = xs >>> 16 < OUTLIER_BELOW ? 8 : 1;
        buf[i * cols + j] = f32ToF16Bits(NORMAL[xs & 0xffff] * rs * colScale[j] * outlier);
      }
    }
    w.writeChunk(name, buf);
    if (key) kept.push(buf);
  }
}
const ones = (n: number) => new Uint16Array(n).fill(f32ToF16Bits(1));

for (const s of specs) {
  if (s.name.endsWith('norm.weight')) w.writeTensor(s.name, ones(s.shape[0]));
  else if (s.name === 'model.embed_tokens.weight') writeMatrix(s.name, s.shape[0], s.shape[1], 1);
  else writeMatrix(s.name, s.shape[0], s.shape[1], 1 / Math.sqrt(s.shape[1]));
}
w.finish();
const bytes = fs.statSync(path.join(out, 'model.safetensors')).size;
process.stdout.write(
  `synth_llama: ${out}: ${blocks} blocks (${distinct} distinct)${experts ? `, ${experts} experts (top-${topK})` : ''}, hidden ${hidden}, mlp ${mlp}, vocab ${vocab}, ${(bytes / 1e9).toFixed(2)} GB F16 in ${((performance.now() - t0) / 1000).toFixed(1)} s\n`,
);
