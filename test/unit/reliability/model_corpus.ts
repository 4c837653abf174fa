// The model-level hostile corpus (issue 7.1 beyond safetensors): seeded variants of a tiny
// synthetic Llama (synth_llama.ts) with one thing wrong or odd each — config.json fields, sharded
// indexes, missing or misshaped linears, NaN/Inf/denormal/zero weights, widths that no group or
// Hadamard block divides, hostile calibration text and tokenizers, out-of-range QuantizeConfig
// values. Each case states what must happen: an error with a given code whose one-line message
// names the file / tensor / field, or a successful run ('same': the quantized tensors are
// byte-identical to the unmutated model's; 'valid': finite, sane output plus a case check).

import { mkdirSync, readFileSync, rmSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ErrorCode } from '../../../src/protocol/messages';
import type { LayerReport } from '../../../src/protocol/messages';
import type { TensorData } from '../../../src/engine/io/safetensors_writer';
import type { LoproStoredLayer } from '../../../src/engine/quant/lopro_dequant';
import { decodeF16 } from '../../../src/engine/quant/fp8';
import { BASE_SPEC, calibSlice, synthConfig, synthTensors, tensorOf, writeSynthModel, rng, type Json, type SynthSpec, type WriteOptions } from './synth_llama';

export interface Built {
  /** Model folder to quantize. */
  model: string;
  /** Calibration text file. */
  calib: string;
  /** QuantizeConfig fields on top of the corpus defaults. */
  config?: Record<string, unknown>;
}

/** What a successful run hands to a case's check. */
export interface OkResult {
  layers: LayerReport[];
  /** Ŵ of every quantized linear as the native output stores it, by layer name. */
  wHat: Map<string, Float32Array>;
  /** The stored parts (codes, scales, groups, plan) by layer name. */
  stored: Map<string, LoproStoredLayer>;
  /** The input tensors the model was written with, by name (when the case kept them). */
  input?: TensorData[];
}

export type Expect =
  /** 'same': quantized tensors byte-identical to the base model's run with the same method. */
  | { ok: 'same' | 'valid'; check?: (r: OkResult) => void }
  /** An error with this code; its formatted line must contain every string of `names`. */
  | { code: string; names: (dir: string) => string[] };

export interface ModelCase {
  id: string;
  family: string;
  /**
   * A known defect outside this suite's files: the case is expected to FAIL with this reason (the
   * runner reports it as KNOWN_GAP and fails when it starts passing, so the mark gets removed).
   */
  gap?: string;
  /** The same, for the `lopro eval` pass over the unquantized folder only. */
  evalGap?: string;
  build(dir: string): Built & { input?: TensorData[] };
  expect: Expect;
}

/** Corpus-wide run settings: 4 windows × 32 tokens, GPTQ (uses H, so config changes that alter the forward show up), CPU. */
export const CORPUS_CONFIG = { method: 'gptq', calibSamples: 4, ctx: 32, ep: 'cpu', rank: 4, seed: 1 } as const;

/** The shared calibration text (a slice of train.txt: enough for 4 windows of 32 tokens). */
export function writeCalib(dir: string): string {
  const f = join(dir, 'calib.txt');
  writeFileSync(f, calibSlice(3000));
  return f;
}

type Mut = {
  cfg?: (c: Json) => void;
  tensors?: (t: TensorData[]) => TensorData[] | void;
  spec?: Partial<SynthSpec>;
  write?: WriteOptions;
  config?: Record<string, unknown>;
  calib?: (dir: string, base: string) => string;
  after?: (dir: string) => void;
};

let calibFile = '';
/** Set once by the runner: every case reuses it unless it writes its own. */
export function setCalib(f: string): void {
  calibFile = f;
}

function variant(m: Mut): (dir: string) => Built & { input: TensorData[] } {
  return (dir) => {
    const spec = { ...BASE_SPEC, ...m.spec };
    const cfg = synthConfig(spec);
    m.cfg?.(cfg);
    let tensors = synthTensors(spec);
    tensors = m.tensors?.(tensors) ?? tensors;
    const model = writeSynthModel(join(dir, 'model'), cfg, tensors, m.write);
    m.after?.(model);
    return { model, calib: m.calib ? m.calib(dir, calibFile) : calibFile, config: m.config, input: tensors };
  };
}

const CFG = (dir: string) => join(dir, 'model', 'config.json');
const err = (code: string, ...names: (string | ((dir: string) => string))[]): Expect => ({ code, names: (dir) => names.map((n) => (typeof n === 'string' ? n : n(dir))) });
const cfgErr = (field: string) => err(ErrorCode.BadConfig, CFG, field);
const L = (b: number, m: string) => `model.layers.${b}.${['q_proj', 'k_proj', 'v_proj', 'o_proj'].includes(m) ? 'self_attn' : 'mlp'}.${m}`;

function drop(name: string) {
  return (t: TensorData[]) => t.filter((x) => x.name !== name);
}
function reshape(name: string, shape: number[], data?: ArrayBufferView) {
  return (t: TensorData[]) => t.map((x) => (x.name === name ? { ...x, shape, data: data ?? new Float32Array(shape.reduce((a, b) => a * b, 1)).fill(0.01) } : x));
}
function poke(name: string, f: (w: Float32Array) => void) {
  return (t: TensorData[]) => {
    f(tensorOf(t, name));
  };
}
const f32ToF16 = (x: number): number => {
  const b = new DataView(new ArrayBuffer(4));
  b.setFloat32(0, x);
  const u = b.getUint32(0),
    s = (u >>> 16) & 0x8000,
    e = ((u >>> 23) & 0xff) - 127 + 15,
    mant = u & 0x7fffff;
  if (e <= 0) return s; // tiny weights flush to zero: fine for a test model
  if (e >= 31) return s | 0x7c00;
  return s | (e << 10) | Math.round(mant / 8192);
};
function asDtype(dtype: 'F16' | 'BF16') {
  return (t: TensorData[]) =>
    t.map((x) => {
      const v = x.data as Float32Array;
      const bits = new Uint16Array(v.length);
      for (let i = 0; i < v.length; i++) bits[i] = dtype === 'F16' ? f32ToF16(v[i]) : new Uint32Array(Float32Array.of(v[i]).buffer)[0] >>> 16;
      return { ...x, dtype, data: bits };
    });
}

/** Every row of `w` listed in `rows` (or column in `cols`) of a rows×cols matrix is exactly zero. */
function zeroLines(w: Float32Array, cols: number, what: 'row' | 'col', idx: number[]): boolean {
  const rows = w.length / cols;
  for (const k of idx) {
    if (what === 'row') for (let c = 0; c < cols; c++) if (w[k * cols + c] !== 0) return false;
    if (what === 'col') for (let r = 0; r < rows; r++) if (w[r * cols + k] !== 0) return false;
  }
  return true;
}
function assertCase(cond: boolean, msg: string): void {
  if (!cond) throw new Error(`case check failed: ${msg}`);
}
const maxAbs = (w: Float32Array) => w.reduce((a, v) => Math.max(a, Math.abs(v)), 0);

export function generateModelCorpus(): ModelCase[] {
  const cases: ModelCase[] = [];
  const add = (family: string, id: string, build: (dir: string) => Built & { input?: TensorData[] }, expect: Expect, gap?: string) =>
    cases.push({ id: `${family}/${id}`, family, build, expect, gap });
  const same: Expect = { ok: 'same' };
  const valid: Expect = { ok: 'valid' };

  // ── config.json ──────────────────────────────────────────────────────────────────────────
  const c = (id: string, f: (c: Json) => void, e: Expect) => add('config', id, variant({ cfg: f }), e);
  const raw = (id: string, text: string | Buffer, e: Expect) => add('config', id, variant({ after: (d) => writeFileSync(join(d, 'config.json'), text) }), e);
  add('config', 'missing-file', variant({ after: (d) => rmSync(join(d, 'config.json')) }), cfgErr('no config.json'));
  raw('empty', '', cfgErr('not valid JSON'));
  raw('not-json', '{hidden_size: 64,', cfgErr('not valid JSON'));
  raw('array', '[1, 2, 3]', cfgErr('(root)'));
  raw('null', 'null', cfgErr('(root)'));
  raw('number', '42', cfgErr('(root)'));
  raw('bom', Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from(JSON.stringify(synthConfig(BASE_SPEC)))]), cfgErr('byte-order mark'));
  raw('utf16', Buffer.from('\ufeff' + JSON.stringify(synthConfig(BASE_SPEC)), 'utf16le'), cfgErr('not valid JSON'));
  raw(
    'invalid-utf8-in-unused-field',
    Buffer.concat([Buffer.from(JSON.stringify(synthConfig(BASE_SPEC)).slice(0, -1) + ', "note": "'), Buffer.from([0xff, 0xfe, 0xc3]), Buffer.from('"}')]),
    same,
  );
  raw('duplicate-key-last-wins', JSON.stringify(synthConfig(BASE_SPEC)).replace('"hidden_size":64', '"hidden_size":32,"hidden_size":64'), same);
  raw('huge-number-is-infinity', JSON.stringify(synthConfig(BASE_SPEC)).replace('"num_attention_heads":4', '"num_attention_heads":1e400'), cfgErr('num_attention_heads'));
  c('hidden-missing', (j) => delete j.hidden_size, cfgErr('hidden_size'));
  c('hidden-null', (j) => (j.hidden_size = null), cfgErr('hidden_size'));
  c('hidden-string', (j) => (j.hidden_size = '64'), cfgErr('hidden_size'));
  c('hidden-negative', (j) => (j.hidden_size = -64), cfgErr('hidden_size'));
  c('hidden-zero', (j) => (j.hidden_size = 0), cfgErr('hidden_size'));
  c('hidden-fraction', (j) => (j.hidden_size = 64.5), cfgErr('hidden_size'));
  c('hidden-bool', (j) => (j.hidden_size = true), cfgErr('hidden_size'));
  c('hidden-object', (j) => (j.hidden_size = { value: 64 }), cfgErr('hidden_size'));
  c('hidden-huge', (j) => ((j.hidden_size = 2 ** 40), (j.head_dim = 16)), err(ErrorCode.ShapeMismatch, 'model.embed_tokens.weight'));
  c('hidden-1e300', (j) => ((j.hidden_size = 1e300), (j.head_dim = 16)), err(ErrorCode.ShapeMismatch, 'model.embed_tokens.weight'));
  c('heads-not-dividing-hidden', (j) => ((j.num_attention_heads = 3), (j.num_key_value_heads = 1)), cfgErr('head_dim'));
  c('kv-heads-not-dividing-heads', (j) => (j.num_key_value_heads = 3), cfgErr('num_key_value_heads'));
  c('kv-heads-zero', (j) => (j.num_key_value_heads = 0), cfgErr('num_key_value_heads'));
  c('kv-heads-more-than-heads', (j) => (j.num_key_value_heads = 8), cfgErr('num_key_value_heads'));
  c('kv-heads-missing-means-mha', (j) => delete j.num_key_value_heads, err(ErrorCode.ShapeMismatch, 'k_proj.weight', '[32, 64]', '[64, 64]'));
  c('head-dim-consistent-explicit', (j) => (j.head_dim = 16), same);
  c('head-dim-inconsistent', (j) => (j.head_dim = 24), err(ErrorCode.ShapeMismatch, L(0, 'q_proj'), '[96, 64]'));
  c('head-dim-odd', (j) => (j.head_dim = 15), cfgErr('head_dim'));
  c('head-dim-string', (j) => (j.head_dim = '16'), cfgErr('head_dim'));
  c('vocab-larger-than-embedding', (j) => (j.vocab_size = 5000), err(ErrorCode.ShapeMismatch, 'model.embed_tokens.weight', '5000'));
  c('vocab-missing', (j) => delete j.vocab_size, cfgErr('vocab_size'));
  c('intermediate-wrong', (j) => (j.intermediate_size = 128), err(ErrorCode.ShapeMismatch, L(0, 'gate_proj')));
  c('layers-more-than-stored', (j) => (j.num_hidden_layers = 3), err(ErrorCode.BadCheckpoint, 'model.layers.2.'));
  c('layers-billion', (j) => (j.num_hidden_layers = 1e9), err(ErrorCode.BadCheckpoint, 'model.layers.2.'));
  c('layers-negative', (j) => (j.num_hidden_layers = -2), cfgErr('num_hidden_layers'));
  c('rope-theta-both-places-equal', (j) => (j.rope_theta = 10000), same);
  c('rope-theta-both-places-differ', (j) => (j.rope_theta = 500000), cfgErr('rope_theta'));
  c('rope-theta-top-level-only', (j) => ((j.rope_theta = 10000), delete j.rope_parameters), same);
  c('rope-theta-missing-defaults-10000', (j) => (j.rope_parameters = { rope_type: 'default' }), same);
  c('rope-theta-string-in-parameters', (j) => (j.rope_parameters = { rope_type: 'default', rope_theta: '500000' }), cfgErr('rope_parameters.rope_theta'));
  c('rope-theta-negative', (j) => (j.rope_parameters = { rope_type: 'default', rope_theta: -1 }), cfgErr('rope_theta'));
  c('rope-type-unknown', (j) => (j.rope_parameters = { rope_type: 'yarn', rope_theta: 10000, factor: 2 }), cfgErr('rope_type'));
  c('rope-scaling-unknown-old-layout', (j) => ((j.rope_theta = 10000), delete j.rope_parameters, (j.rope_scaling = { type: 'su', factor: 2 })), cfgErr('rope_type'));
  c('rope-parameters-string', (j) => (j.rope_parameters = 'default'), cfgErr('rope_parameters'));
  c('rope-linear-no-factor', (j) => (j.rope_parameters = { rope_type: 'linear', rope_theta: 10000 }), cfgErr('rope_parameters.factor'));
  c(
    'rope-llama3-high-le-low',
    (j) => (j.rope_parameters = { rope_type: 'llama3', rope_theta: 10000, factor: 8, low_freq_factor: 4, high_freq_factor: 1, original_max_position_embeddings: 128 }),
    cfgErr('high_freq_factor'),
  );
  c('rope-linear-ok', (j) => (j.rope_parameters = { rope_type: 'linear', rope_theta: 10000, factor: 2 }), valid);
  c(
    'rope-dynamic-beyond-original',
    (j) => (j.rope_parameters = { rope_type: 'dynamic', rope_theta: 10000, factor: 2, original_max_position_embeddings: 16 }),
    cfgErr('rope_scaling'),
  );
  c('model-type-gpt2', (j) => ((j.model_type = 'gpt2'), (j.architectures = ['GPT2LMHeadModel'])), cfgErr('model_type'));
  c('hidden-act-gelu', (j) => (j.hidden_act = 'gelu'), cfgErr('hidden_act'));
  c('tie-string', (j) => (j.tie_word_embeddings = 'true'), cfgErr('tie_word_embeddings'));
  c('untied-without-lm-head', (j) => (j.tie_word_embeddings = false), err(ErrorCode.BadCheckpoint, 'lm_head.weight'));
  c('attention-bias-without-biases', (j) => (j.attention_bias = true), err(ErrorCode.BadCheckpoint, `${L(0, 'q_proj')}.bias`));
  c('pretraining-tp-2', (j) => (j.pretraining_tp = 2), cfgErr('pretraining_tp'));
  c('rms-eps-string', (j) => (j.rms_norm_eps = '1e-5'), cfgErr('rms_norm_eps'));
  c('max-positions-negative', (j) => (j.max_position_embeddings = -1), cfgErr('max_position_embeddings'));
  c('extra-unknown-fields', (j) => Object.assign(j, { my_field: { a: [1, 2, null] }, auto_map: {}, _name_or_path: '/x', torch_dtype: 'bfloat16', use_cache: 'maybe' }), same);
  c('proto-key', (j) => ((j.__proto__ as unknown) = { hidden_size: 64 }), same);

  // ── checkpoint: shards, missing or misshaped tensors, dtypes ──────────────────────────────────
  const k = (id: string, m: Mut, e: Expect, evalGap?: string) => {
    add('checkpoint', id, variant(m), e);
    if (evalGap) cases[cases.length - 1].evalGap = evalGap;
  };
  k('sharded-3', { write: { shards: 3 } }, same);
  k(
    'sharded-missing-shard-file',
    { write: { shards: 3 }, after: (d) => writeFileSync(join(d, 'model-00002-of-00003.safetensors'), '') },
    err(ErrorCode.BadCheckpoint, 'model-00002-of-00003.safetensors'),
  );
  k(
    'sharded-index-names-absent-file',
    {
      write: { shards: 2 },
      after: (d) => {
        const f = join(d, 'model.safetensors.index.json');
        const ix = JSON.parse(readFileSync(f, 'utf8')) as { weight_map: Record<string, string> };
        ix.weight_map[`${L(1, 'up_proj')}.weight`] = 'model-00009-of-00009.safetensors';
        writeFileSync(f, JSON.stringify(ix));
      },
    },
    err(ErrorCode.BadCheckpoint, 'model-00009-of-00009.safetensors'),
  );
  k(
    'sharded-index-lists-ghost-tensor',
    {
      write: { shards: 2 },
      after: (d) => {
        const f = join(d, 'model.safetensors.index.json');
        const ix = JSON.parse(readFileSync(f, 'utf8')) as { weight_map: Record<string, string> };
        ix.weight_map['model.layers.0.mlp.extra.weight'] = 'model-00001-of-00002.safetensors';
        writeFileSync(f, JSON.stringify(ix));
      },
    },
    err(ErrorCode.BadCheckpoint, 'model.layers.0.mlp.extra.weight', 'model.safetensors.index.json'),
  );
  k('sharded-linear-missing-everywhere', { write: { shards: 2 }, tensors: drop(`${L(1, 'up_proj')}.weight`) }, err(ErrorCode.BadCheckpoint, `${L(1, 'up_proj')}.weight`));
  k(
    'sharded-index-not-json',
    { write: { shards: 2 }, after: (d) => writeFileSync(join(d, 'model.safetensors.index.json'), '{"weight_map": ') },
    err(ErrorCode.BadCheckpoint, 'model.safetensors.index.json'),
  );
  for (const [b, m] of [
    [0, 'q_proj'],
    [1, 'v_proj'],
    [0, 'down_proj'],
  ] as const)
    k(`missing-${m}-${b}`, { tensors: drop(`${L(b, m)}.weight`) }, err(ErrorCode.BadCheckpoint, `${L(b, m)}.weight`));
  k('missing-norm', { tensors: drop('model.layers.1.post_attention_layernorm.weight') }, err(ErrorCode.BadCheckpoint, 'model.layers.1.post_attention_layernorm.weight'));
  k('missing-embedding', { tensors: drop('model.embed_tokens.weight') }, err(ErrorCode.BadCheckpoint, 'model.embed_tokens.weight'));
  k('k-proj-transposed', { tensors: reshape(`${L(0, 'k_proj')}.weight`, [64, 32]) }, err(ErrorCode.ShapeMismatch, `${L(0, 'k_proj')}.weight`, '[64, 32]', '[32, 64]'));
  k('down-proj-one-col-more', { tensors: reshape(`${L(1, 'down_proj')}.weight`, [64, 161]) }, err(ErrorCode.ShapeMismatch, `${L(1, 'down_proj')}.weight`));
  k('linear-is-1d', { tensors: reshape(`${L(1, 'o_proj')}.weight`, [4096]) }, err(ErrorCode.ShapeMismatch, `${L(1, 'o_proj')}.weight`));
  k('norm-wrong-length', { tensors: reshape('model.norm.weight', [63]) }, err(ErrorCode.ShapeMismatch, 'model.norm.weight'));
  k(
    'linear-int32',
    { tensors: (t) => t.map((x) => (x.name === `${L(0, 'gate_proj')}.weight` ? { ...x, dtype: 'I32' as const, data: new Int32Array(160 * 64) } : x)) },
    err(ErrorCode.UnsupportedDtype, `${L(0, 'gate_proj')}.weight`),
  );
  k('all-f16', { tensors: asDtype('F16') }, valid);
  k('all-bf16', { tensors: asDtype('BF16') }, valid);
  k('tied-with-spare-lm-head', { tensors: (t) => [...t, { name: 'lm_head.weight', dtype: 'F32', shape: [4096, 64], data: new Float32Array(4096 * 64).fill(0.5) }] }, same);
  k('no-weights-file', { after: (d) => rmSync(join(d, 'model.safetensors')) }, err(ErrorCode.BadCheckpoint, 'no model.safetensors'));
  k(
    'truncated-weights',
    { after: (d) => truncateSync(join(d, 'model.safetensors'), statSync(join(d, 'model.safetensors')).size - 4096) },
    err(ErrorCode.BadCheckpoint, (dir) => join(dir, 'model', 'model.safetensors')),
  );
  k(
    'weights-file-is-folder',
    {
      after: (d) => {
        const f = join(d, 'model.safetensors');
        writeFileSync(join(d, 'keep'), readFileSync(f));
        rmSync(f);
        mkdirSync(f);
      },
    },
    err(ErrorCode.Io, 'model.safetensors'),
  );

  // ── weights: NaN / Inf / denormal / zero rows, columns, layers ────────────────────────────────
  const w = (id: string, m: Mut, e: Expect, gap?: string) => add('weights', id, variant(m), e, gap);
  for (const [method, b, mod, v] of [
    ['lopro', 0, 'q_proj', NaN],
    ['gptq', 1, 'down_proj', Infinity],
    ['rtn', 0, 'v_proj', -Infinity],
    ['lopro_v', 1, 'o_proj', NaN],
    ['lopro', 1, 'gate_proj', -Infinity],
  ] as const)
    w(`${String(v)}-${mod}-${b}-${method}`, { tensors: poke(`${L(b, mod)}.weight`, (x) => (x[137] = v)), config: { method } }, err(ErrorCode.NonFinite, L(b, mod)));
  w('nan-embedding-row-used', { tensors: poke('model.embed_tokens.weight', (x) => x.fill(NaN, 0, 64 * 400)) }, err(ErrorCode.NonFinite, 'model.embed_tokens.weight'));
  w('nan-norm-weight', { tensors: poke('model.layers.0.input_layernorm.weight', (x) => (x[3] = NaN)) }, err(ErrorCode.NonFinite, 'model.layers.0.input_layernorm.weight'));
  // The final norm and the head are not read while quantizing: the run copies them, Inf included.
  w('inf-final-norm', { tensors: poke('model.norm.weight', (x) => (x[0] = Infinity)) }, err(ErrorCode.NonFinite, 'model.norm.weight'));
  const zeroCheck = (layer: string, what: 'row' | 'col', idx: number[], cols: number): Expect => ({
    ok: 'valid',
    check: (r) => assertCase(zeroLines(r.wHat.get(layer)!, cols, what, idx), `${layer}: ${what}s ${idx.join(',')} of Ŵ are not all zero`),
  });
  for (const method of ['lopro', 'gptq', 'rtn', 'lopro_v'] as const) {
    w(
      `denormal-half-of-q-${method}`,
      {
        tensors: poke(`${L(0, 'q_proj')}.weight`, (x) => {
          for (let i = 0; i < x.length; i += 2) x[i] = 1e-40 * ((i % 3) - 1);
        }),
        config: { method },
      },
      valid,
    );
    w(
      `zero-rows-q-${method}`,
      {
        tensors: poke(`${L(0, 'q_proj')}.weight`, (x) => {
          x.fill(0, 0, 64 * 5);
          x.fill(0, 64 * 40, 64 * 41);
        }),
        config: { method },
      },
      method === 'lopro' || method === 'lopro_v' ? valid : zeroCheck(L(0, 'q_proj'), 'row', [0, 1, 2, 3, 4, 40], 64),
    );
    // Zero norm entries make those input columns of q/k/v exactly 0: H_jj = 0 (dead columns).
    // GPTQ zeroes dead columns; LoPRo's low-rank part W_r still covers them (finite, |·| ≲ |W|,
    // and multiplied by inputs that are always 0); RTN ignores H.
    w(
      `dead-hessian-cols-${method}`,
      {
        tensors: poke('model.layers.0.input_layernorm.weight', (x) => {
          for (const j of [0, 5, 6, 63]) x[j] = 0;
        }),
        config: { method },
      },
      method === 'gptq' ? zeroCheck(L(0, 'k_proj'), 'col', [0, 5, 6, 63], 64) : valid,
    );
    w(
      `all-zero-layer-${method}`,
      { tensors: poke(`${L(1, 'o_proj')}.weight`, (x) => x.fill(0)), config: { method } },
      { ok: 'valid', check: (r) => assertCase(maxAbs(r.wHat.get(L(1, 'o_proj'))!) === 0, 'zero layer quantizes to zeros') },
    );
  }
  w('dead-mlp-cols-lopro', { tensors: poke('model.layers.1.post_attention_layernorm.weight', (x) => x.fill(0, 10, 30)), config: { method: 'lopro' } }, valid);
  w(
    'zero-weight-cols-gptq',
    {
      tensors: poke(`${L(0, 'up_proj')}.weight`, (x) => {
        for (let r = 0; r < 160; r++) x[r * 64 + 7] = 0;
      }),
    },
    valid,
  );
  w('all-denormal-layer-lopro', { tensors: poke(`${L(0, 'v_proj')}.weight`, (x) => x.forEach((v, i) => (x[i] = v * 1e-38))), config: { method: 'lopro' } }, valid);
  w(
    'all-zero-block-lopro',
    {
      tensors: (t) => {
        for (const m of ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj']) tensorOf(t, `${L(1, m)}.weight`).fill(0);
      },
      config: { method: 'lopro' },
    },
    valid,
  );
  w('tiny-scale-layer-gptq', { tensors: poke(`${L(1, 'k_proj')}.weight`, (x) => x.forEach((v, i) => (x[i] = v * 1e-30))) }, valid);
  w(
    'constant-layer-rtn',
    { tensors: poke(`${L(0, 'o_proj')}.weight`, (x) => x.fill(0.25)), config: { method: 'rtn' } },
    { ok: 'valid', check: (r) => assertCase(maxAbs(r.wHat.get(L(0, 'o_proj'))!.map((v) => v - 0.25)) < 1e-3, 'constant layer reconstructs (FP16 scale)') },
  );

  // ── shapes no group or Hadamard block divides ───────────────────────────────────────────────
  const odd: Partial<SynthSpec> = { hidden: 200, inter: 520, heads: 4, kvHeads: 2, layers: 1 };
  const bH = (r: OkResult) => {
    // Groups of 128 along the 200 (520) transformed columns: 128 + a 72-column remainder (4 × 128 + 8).
    assertCase(r.stored.get(L(0, 'q_proj'))!.groups === 2 && r.stored.get(L(0, 'down_proj'))!.groups === 5, 'groups cover the remainder columns');
    const rep = r.layers.find((l) => l.name === L(0, 'q_proj'))!;
    assertCase(rep.hadamardBlockUsed === 8 && rep.notes.some((n) => /b_H = 8/.test(n)), `q_proj (200 cols) reports b_H 8: ${JSON.stringify(rep.notes)}`);
    const down = r.layers.find((l) => l.name === L(0, 'down_proj'))!;
    assertCase(down.hadamardBlockUsed === 8, `down_proj (520 cols): b_H ${down.hadamardBlockUsed}`);
  };
  const s = (id: string, m: Mut, e: Expect) => add('shapes', id, variant(m), e);
  s('hidden200-mlp520-lopro', { spec: odd, config: { method: 'lopro' } }, { ok: 'valid', check: bH });
  s(
    'hidden96-mlp136-lopro_v',
    { spec: { hidden: 96, inter: 136, heads: 3, kvHeads: 1, layers: 1 }, config: { method: 'lopro_v', salientBlock: 64 } },
    {
      ok: 'valid',
      check: (r) => assertCase(r.layers.find((l) => l.name === L(0, 'q_proj'))!.hadamardBlockUsed === 32, 'q_proj: 96 − 64 = 32 → b_H 32'),
    },
  );
  s('hidden200-mlp520-gptq', { spec: odd }, valid);
  // RTN with groups of 48 over 200 columns (4 × 48 + 8): every weight, the last 8 columns' included,
  // is within half a step of its group's (FP16) scale, clamping aside.
  s(
    'hidden200-mlp520-rtn-group48',
    { spec: odd, config: { method: 'rtn', groupSize: 48 } },
    {
      ok: 'valid',
      check: (r) => {
        const name = L(0, 'q_proj');
        const st = r.stored.get(name)!,
          w = r.wHat.get(name)!,
          W = tensorOf(r.input!, `${name}.weight`);
        assertCase(st.groups === 5 && st.groupSize === 48, `q_proj: ${st.groups} groups of ${st.groupSize}`);
        const scale = decodeF16(st.scaleBits!);
        let worst = 0;
        for (let row = 0; row < 200; row++)
          for (let col = 0; col < 200; col++) worst = Math.max(worst, Math.abs(w[row * 200 + col] - W[row * 200 + col]) / scale[row * 5 + Math.floor(col / 48)]);
        // ½ step, plus the FP16 rounding of the scale times a code ≤ 3 (3 · 2^-11 steps).
        assertCase(worst <= 0.5 + 3 * 2 ** -11, `q_proj: worst error ${worst} steps (> ½: the remainder group is wrong)`);
      },
    },
  );
  s('hidden200-full-rotation', { spec: odd, config: { method: 'lopro', rotation: 'full', salientBlock: 0, rank: 0 } }, valid);
  s('hidden96-mlp136-lopro-bI16', { spec: { hidden: 96, inter: 136, heads: 3, kvHeads: 1 }, config: { method: 'lopro', salientBlock: 16, hadamardBlock: 64 } }, valid);
  s(
    'odd-rest-no-rotation',
    { spec: { hidden: 68, inter: 131, heads: 2, kvHeads: 1 }, config: { method: 'lopro', salientBlock: 0 } },
    {
      ok: 'valid',
      check: (r) =>
        assertCase(
          r.layers.find((l) => l.name === L(0, 'down_proj'))!.notes.some((n) => /odd|nothing rotated/.test(n)),
          'down_proj (131 cols) says nothing rotated',
        ),
    },
  );
  s('group-larger-than-cols', { config: { method: 'gptq', groupSize: 4096 } }, valid);
  s('group-per-row', { config: { method: 'lopro', groupSize: -1 } }, valid);
  s('rank-above-min-dim', { config: { method: 'lopro', rank: 80 } }, valid);
  s('salient-larger-than-cols', { config: { method: 'lopro', salientBlock: 4096 } }, valid);
  s('untied-head', { spec: { tied: false } }, valid);

  // ── calibration text and tokenizer ────────────────────────────────────────────────────────────
  const t = (id: string, m: Mut, e: Expect) => add('calibration', id, variant(m), e);
  const text = (body: string | Buffer) => (dir: string) => {
    const f = join(dir, 'calib-case.txt');
    writeFileSync(f, body);
    return f;
  };
  const junk = Buffer.alloc(3000);
  const r = rng(99);
  for (let i = 0; i < junk.length; i++) junk[i] = Math.floor(r() * 256);
  t('missing-file', { calib: (dir) => join(dir, 'nope.txt') }, err(ErrorCode.BadCalibration, 'nope.txt'));
  t(
    'is-a-folder',
    { calib: (dir) => dir },
    err(ErrorCode.BadCalibration, (dir) => dir),
  );
  t('empty', { calib: text('') }, err(ErrorCode.BadCalibration, 'calib-case.txt', 'empty'));
  t('shorter-than-window', { calib: text('It is a truth.') }, err(ErrorCode.BadCalibration, 'calibText', 'fewer than one window of 32'));
  t('just-one-window', { calib: text(calibSlice(400)), config: { calibSamples: 2 } }, valid);
  t('binary-junk', { calib: text(junk) }, valid);
  t(
    'invalid-utf8',
    { calib: text(Buffer.concat([Buffer.from(calibSlice(600)), Buffer.from([0xc3, 0x28, 0xa0, 0xa1, 0xe2, 0x28, 0xa1, 0xf0, 0x90, 0x28, 0xbc]), Buffer.from(calibSlice(600))])) },
    valid,
  );
  t('nul-bytes', { calib: text(Buffer.alloc(2000, 0)) }, valid);
  t('utf16le', { calib: text(Buffer.from('\ufeff' + calibSlice(1500), 'utf16le')) }, valid);
  t('more-windows-than-tokens', { calib: text(calibSlice(300)), config: { calibSamples: 64 } }, valid);
  t('ids-beyond-vocab', { spec: { vocab: 300 } }, err(ErrorCode.BadConfig, 'tokenizer.json', 'vocab_size 300'));
  t('tokenizer-missing', { after: (d) => rmSync(join(d, 'tokenizer.json')) }, err(ErrorCode.BadCheckpoint, 'tokenizer.json'));
  t('tokenizer-not-json', { after: (d) => writeFileSync(join(d, 'tokenizer.json'), '{"model": ') }, err(ErrorCode.BadCheckpoint, 'tokenizer.json'));
  t('tokenizer-empty-object', { after: (d) => writeFileSync(join(d, 'tokenizer.json'), '{}') }, err(ErrorCode.BadCheckpoint, 'tokenizer.json'));
  const editTokenizer = (f: (t: Json) => void) => (d: string) => {
    const file = join(d, 'tokenizer.json');
    const tj = JSON.parse(readFileSync(file, 'utf8')) as Json;
    f(tj);
    writeFileSync(file, JSON.stringify(tj));
  };
  // A tokenizer of a larger vocabulary than the model's embedding (every id shifted by 5000).
  t(
    'tokenizer-larger-vocab',
    {
      after: editTokenizer((tj) => {
        const m = tj.model as { vocab: Record<string, number> };
        for (const k of Object.keys(m.vocab)) m.vocab[k] += 5000;
        for (const a of tj.added_tokens as { id: number }[]) a.id += 5000;
      }),
    },
    err(ErrorCode.BadConfig, 'tokenizer.json', 'outside the model', 'vocab_size 4096'),
  );
  t(
    'tokenizer-extra-added-token-unused',
    {
      after: editTokenizer((tj) =>
        (tj.added_tokens as unknown[]).push({ id: 9000, content: '<|never|>', single_word: false, lstrip: false, rstrip: false, normalized: false, special: true }),
      ),
    },
    same,
  );
  t('tokenizer-model-empty', { after: editTokenizer((tj) => (tj.model = {})) }, err(ErrorCode.BadCheckpoint, 'tokenizer.json'));
  t(
    'tokenizer-empty-vocab',
    { after: editTokenizer((tj) => (((tj.model as Json).vocab = {}), ((tj.model as Json).merges = []))) },
    err(ErrorCode.BadCheckpoint, 'tokenizer.json', 'no tokens'),
  );
  t('tokenizer-config-junk', { after: (d) => writeFileSync(join(d, 'tokenizer_config.json'), 'not json at all') }, same);

  // ── QuantizeConfig values out of range ───────────────────────────────────────────────────────
  const q = (id: string, config: Record<string, unknown>, field: string) => add('qconfig', id, variant({ config }), err(ErrorCode.BadConfig, field));
  q('bits-5', { bits: 5 }, 'bits');
  q('bits-string', { bits: '4' }, 'bits');
  q('bits-nan', { bits: NaN }, 'bits');
  q('group-0', { groupSize: 0 }, 'groupSize');
  q('group-fraction', { groupSize: 12.5 }, 'groupSize');
  q('rank-negative', { rank: -2 }, 'rank');
  q('rank-fraction', { rank: 1.5 }, 'rank');
  q('bH-100', { hadamardBlock: 100 }, 'hadamardBlock');
  q('bH-0', { hadamardBlock: 0 }, 'hadamardBlock');
  q('bI-negative', { salientBlock: -5 }, 'salientBlock');
  q('damp-0', { percDamp: 0 }, 'percDamp');
  q('block-0', { blockSize: 0 }, 'blockSize');
  q('power-iters-100', { powerIters: 100 }, 'powerIters');
  q('beta-5', { beta: 5 }, 'beta');
  q('method-awq', { method: 'awq' }, 'method');
  q('rotation-half', { rotation: 'half' }, 'rotation');
  q('vq-dim-3', { method: 'lopro_v', vqDim: 3 }, 'vqDim');
  q('samples-0', { calibSamples: 0 }, 'calibSamples');
  q('ctx-negative', { ctx: -1 }, 'ctx');
  q('ep-tpu', { ep: 'tpu' }, 'ep');
  q('memory-negative', { memoryBudgetMB: -1 }, 'memoryBudgetMB');
  q('unknown-key', { frobnicate: 1 }, 'frobnicate');
  q('override-bits-7', { layerOverrides: { '*.q_proj': { bits: 7 } } }, 'layerOverrides["*.q_proj"].bits');
  // Huge but well-typed values: a clear error or a correct run, never an allocation crash or a hang.
  const h = (id: string, config: Record<string, unknown>, e: Expect, gap?: string) => add('qconfig', id, variant({ config }), e, gap);
  h('samples-1e9', { calibSamples: 1e9 }, err(ErrorCode.BadCalibration, 'calibSamples'));
  h('ctx-1e9', { ctx: 1e9 }, err(ErrorCode.BadCalibration, 'ctx'));
  h('ctx-above-text', { ctx: 5000 }, err(ErrorCode.BadCalibration, 'fewer than one window'));
  h('group-1e9', { groupSize: 1e9 }, valid);
  h('block-1e9', { blockSize: 1e9 }, valid);
  h('rank-1e6', { method: 'lopro', rank: 1e6 }, valid);
  h('bI-1e9', { method: 'lopro', salientBlock: 1e9 }, valid);
  h('bH-4096', { method: 'lopro', salientBlock: 0, hadamardBlock: 4096 }, valid);
  q('bH-8192', { method: 'lopro', hadamardBlock: 8192 }, 'hadamardBlock');
  h('memory-budget-tiny-spills', { memoryBudgetMB: 0.01 }, same);
  h('seed-huge', { method: 'lopro', seed: 2 ** 52 }, valid);
  h('seed-negative', { method: 'lopro', seed: -7 }, valid);
  return cases;
}

/** The unmutated model (the reference of every 'same' case). */
export const buildBase = (dir: string): Built => variant({})(dir);
