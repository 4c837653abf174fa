// Small seeded Llama-family checkpoints for the model-level hostile corpus: a Hugging Face folder
// (config.json, model.safetensors or shards + index, the tiny fixture's tokenizer) small enough that
// a whole quantize run (2 blocks, hidden 64, 4 windows of 32 tokens) takes well under a second.
// Every tensor comes from one seeded generator, so two folders built from the same spec are
// byte-identical: "variant gives the same output as the base model" is a meaningful check.

import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { writeSafetensorsAtomic, writeShardIndex, type TensorData } from '../../../src/engine/io/safetensors_writer';
import { mulberry32 } from '../../../src/engine/util/random';

export const ROOT = resolve(__dirname, '../../..');
export const TINY = join(ROOT, 'fixtures/tiny');
/** The fixture tokenizer's id space (its vocab + added tokens). */
export const TOKENIZER_IDS = 4096;

export interface SynthSpec {
  hidden: number;
  inter: number;
  layers: number;
  heads: number;
  kvHeads: number;
  /** Embedding rows (and config vocab_size unless the config is mutated). */
  vocab: number;
  tied: boolean;
  /** Explicit head_dim in config.json (else hidden / heads). */
  headDim?: number;
  seed: number;
}

export const BASE_SPEC: Readonly<SynthSpec> = Object.freeze({ hidden: 64, inter: 160, layers: 2, heads: 4, kvHeads: 2, vocab: TOKENIZER_IDS, tied: true, seed: 7 });

/** Deterministic PRNG (mulberry32). */
export const rng = mulberry32;

export type Json = Record<string, unknown>;

export function synthConfig(s: SynthSpec): Json {
  const c: Json = {
    architectures: ['LlamaForCausalLM'],
    model_type: 'llama',
    hidden_act: 'silu',
    hidden_size: s.hidden,
    intermediate_size: s.inter,
    num_hidden_layers: s.layers,
    num_attention_heads: s.heads,
    num_key_value_heads: s.kvHeads,
    vocab_size: s.vocab,
    max_position_embeddings: 256,
    rms_norm_eps: 1e-5,
    rope_parameters: { rope_theta: 10000.0, rope_type: 'default' },
    tie_word_embeddings: s.tied,
    attention_bias: false,
    mlp_bias: false,
    dtype: 'float32',
  };
  if (s.headDim !== undefined) c.head_dim = s.headDim;
  return c;
}

/** Tensors of a synthetic model, in a fixed order; weights ~ U(−a, a) with a = 1/√fan_in. */
export function synthTensors(s: SynthSpec): TensorData[] {
  const r = rng(s.seed);
  const hd = s.headDim ?? s.hidden / s.heads;
  const mat = (name: string, rows: number, cols: number, amp = 1 / Math.sqrt(cols)): TensorData => ({
    name,
    dtype: 'F32',
    shape: [rows, cols],
    data: Float32Array.from({ length: rows * cols }, () => (2 * r() - 1) * amp),
  });
  const norm = (name: string, n: number): TensorData => ({ name, dtype: 'F32', shape: [n], data: Float32Array.from({ length: n }, () => 0.8 + 0.4 * r()) });
  const out: TensorData[] = [mat('model.embed_tokens.weight', s.vocab, s.hidden, 1)];
  for (let b = 0; b < s.layers; b++) {
    const p = `model.layers.${b}`;
    out.push(
      norm(`${p}.input_layernorm.weight`, s.hidden),
      mat(`${p}.self_attn.q_proj.weight`, s.heads * hd, s.hidden),
      mat(`${p}.self_attn.k_proj.weight`, s.kvHeads * hd, s.hidden),
      mat(`${p}.self_attn.v_proj.weight`, s.kvHeads * hd, s.hidden),
      mat(`${p}.self_attn.o_proj.weight`, s.hidden, s.heads * hd),
      norm(`${p}.post_attention_layernorm.weight`, s.hidden),
      mat(`${p}.mlp.gate_proj.weight`, s.inter, s.hidden),
      mat(`${p}.mlp.up_proj.weight`, s.inter, s.hidden),
      mat(`${p}.mlp.down_proj.weight`, s.hidden, s.inter),
    );
  }
  out.push(norm('model.norm.weight', s.hidden));
  if (!s.tied) out.push(mat('lm_head.weight', s.vocab, s.hidden));
  return out;
}

export interface WriteOptions {
  /** Split the tensors into this many shards with a model.safetensors.index.json. */
  shards?: number;
  /** Raw config.json text (replaces the generated one). */
  configText?: string;
}

/** Writes a model folder; returns it. */
export function writeSynthModel(dir: string, config: Json, tensors: TensorData[], opts: WriteOptions = {}): string {
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'config.json'), opts.configText ?? JSON.stringify(config, null, 2));
  copyFileSync(join(TINY, 'tokenizer.json'), join(dir, 'tokenizer.json'));
  copyFileSync(join(TINY, 'tokenizer_config.json'), join(dir, 'tokenizer_config.json'));
  const n = opts.shards ?? 1;
  if (n <= 1) {
    writeSafetensorsAtomic(join(dir, 'model.safetensors'), tensors);
    return dir;
  }
  const map: Record<string, string> = {};
  let total = 0;
  for (let k = 0; k < n; k++) {
    const file = `model-${String(k + 1).padStart(5, '0')}-of-${String(n).padStart(5, '0')}.safetensors`;
    const part = tensors.filter((_, i) => i % n === k);
    writeSafetensorsAtomic(join(dir, file), part);
    for (const t of part) {
      map[t.name] = file;
      total += t.data.byteLength;
    }
  }
  writeShardIndex(join(dir, 'model.safetensors.index.json'), map, total);
  return dir;
}

/** The tensor `name` of a list (throws when absent: a bug in the corpus, not in the engine). */
export function tensorOf(tensors: TensorData[], name: string): Float32Array {
  const t = tensors.find((x) => x.name === name);
  if (!t) throw new Error(`corpus bug: no tensor ${name}`);
  return t.data as Float32Array;
}

/** The first `bytes` of train.txt (cut at a character boundary): a quick calibration text. */
export function calibSlice(bytes: number): string {
  return readFileSync(join(ROOT, 'fixtures/text/train.txt'), 'utf8').slice(0, bytes);
}
