// Hugging Face config.json of a supported decoder family (family.ts) → one typed, validated `ModelConfig`,
// plus every block's tensors (quantizable linears, norms, biases, routers) checked against the checkpoint.
// Field names follow transformers' config classes; both the transformers ≤4 layout (`rope_theta`,
// `rope_scaling` at the top level) and the transformers 5 layout (`rope_parameters`) are read.

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ErrorCode, type LinearLayerInfo } from '../../protocol/messages';
import { ProtocolError } from '../../protocol/rpc';
import { FAMILIES, familyOf, IGNORED_TENSORS, SUPPORTED_MODEL_TYPES, type Family, type FamilyName } from './family';

export type RopeScaling =
  | { type: 'default' }
  /** Positions divided by `factor` (transformers "linear"): inv_freq / factor. */
  | { type: 'linear'; factor: number }
  /** Llama 3.1 frequency-dependent scaling (transformers `_compute_llama3_parameters`). */
  | { type: 'llama3'; factor: number; lowFreqFactor: number; highFreqFactor: number; originalMaxPositions: number }
  /** Dynamic NTK: identical to default while the sequence fits `originalMaxPositions`. */
  | { type: 'dynamic'; factor: number; originalMaxPositions: number };

export interface MoeConfig {
  numExperts: number;
  topK: number;
  /** Each expert's intermediate width. */
  intermediate: number;
  /** Top-k routing weights renormalised to sum to 1 (else the softmax values as they are). */
  normTopK: boolean;
  /** Qwen2-MoE's shared expert (on every token, gated by sigmoid(shared_expert_gate·x)). */
  shared: { intermediate: number } | null;
  /** Block b is sparse (MoE); false = a dense MLP of intermediateSize (Qwen's mlp_only_layers). A predicate,
   * not an array: num_hidden_layers comes from the config and may be absurd until the checkpoint is checked. */
  isSparse: (b: number) => boolean;
  /** Some block of the model is dense. */
  anyDense: boolean;
}

export interface ModelConfig {
  /** The config.json this was read from (for error messages). */
  source: string;
  family: FamilyName;
  hiddenSize: number;
  /** The dense MLP's width (0 for a model with no dense block). */
  intermediateSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  vocabSize: number;
  rmsNormEps: number;
  ropeTheta: number;
  ropeScaling: RopeScaling;
  maxPositions: number;
  /** LM head shares the embedding matrix (no `lm_head.weight` needed). */
  tiedHead: boolean;
  /** q/k/v projections carry a bias. */
  qkvBias: boolean;
  /** o_proj carries a bias. */
  oBias: boolean;
  /** The dense MLP's projections carry a bias. */
  mlpBias: boolean;
  /** Per-head RMSNorm of queries and keys before RoPE (q_norm / k_norm [headDim]). */
  qkNorm: boolean;
  /** Keys visible to query i: i − slidingWindow < j ≤ i, in the blocks isSlidingLayer names. */
  slidingWindow: number | null;
  /** Block b uses the sliding window (a predicate, as MoeConfig.isSparse). */
  isSlidingLayer: (b: number) => boolean;
  moe: MoeConfig | null;
  /** Stored dtype as declared (informational; tensors carry their own). */
  dtype: string;
}

type Json = Record<string, unknown>;

function bad(source: string, field: string, message: string, hint?: string): ProtocolError {
  return new ProtocolError(ErrorCode.BadConfig, `${source}: ${field}: ${message}`, `${source}#${field}`, hint);
}

function num(j: Json, source: string, field: string, opts: { int?: boolean; positive?: boolean; fallback?: number; label?: string } = {}): number {
  const v = j[field];
  if (opts.label) field = opts.label;
  if (v === undefined || v === null) {
    if (opts.fallback !== undefined) return opts.fallback;
    throw bad(source, field, 'missing', "the model family's config.json must define it");
  }
  if (typeof v !== 'number' || !Number.isFinite(v)) throw bad(source, field, `expected a number, got ${JSON.stringify(v)}`);
  if (opts.int && !Number.isInteger(v)) throw bad(source, field, `expected an integer, got ${v}`);
  if (opts.positive && !(v > 0)) throw bad(source, field, `expected a positive value, got ${v}`);
  return v;
}

function bool(j: Json, source: string, field: string, fallback: boolean): boolean {
  const v = j[field];
  if (v === undefined || v === null) return fallback;
  if (typeof v !== 'boolean') throw bad(source, field, `expected true or false, got ${JSON.stringify(v)}`);
  return v;
}

function parseRope(j: Json, source: string): { theta: number; scaling: RopeScaling } {
  // transformers 5: rope_parameters {rope_type, rope_theta, factor, ...}; older: rope_theta + rope_scaling.
  const params = j.rope_parameters as Json | undefined | null;
  let theta: number;
  let scaling: Json | null = null;
  let field = 'rope_scaling';
  if (params !== undefined && params !== null) {
    if (typeof params !== 'object' || Array.isArray(params)) throw bad(source, 'rope_parameters', 'expected an object');
    field = 'rope_parameters';
    const top = num(j, source, 'rope_theta', { positive: true, fallback: 10000 });
    theta = num(params as Json, source, 'rope_theta', { positive: true, fallback: top, label: 'rope_parameters.rope_theta' });
    // Both layouts at once must agree: silently preferring one would change every rotary table.
    if (j.rope_theta !== undefined && j.rope_theta !== null && params.rope_theta !== undefined && params.rope_theta !== null && top !== theta)
      throw bad(
        source,
        'rope_theta',
        `the top-level rope_theta ${top} and rope_parameters.rope_theta ${theta} disagree`,
        'keep one of them (transformers 5 reads rope_parameters)',
      );
    scaling = params;
  } else {
    theta = num(j, source, 'rope_theta', { positive: true, fallback: 10000 });
    const rs = j.rope_scaling;
    if (rs !== undefined && rs !== null) {
      if (typeof rs !== 'object' || Array.isArray(rs)) throw bad(source, 'rope_scaling', 'expected an object');
      scaling = rs as Json;
    }
  }
  if (!(theta > 0) || !Number.isFinite(theta)) throw bad(source, `${field}.rope_theta`, `expected a positive number, got ${theta}`);
  if (!scaling) return { theta, scaling: { type: 'default' } };
  const type = (scaling.rope_type ?? scaling.type ?? 'default') as string;
  const maxPos = num(j, source, 'max_position_embeddings', { int: true, positive: true, fallback: 2048 });
  const subField = (name: string, fallback?: number) => num(scaling as Json, source, name, { positive: true, fallback, label: `${field}.${name}` });
  switch (type) {
    case 'default':
      return { theta, scaling: { type: 'default' } };
    case 'linear':
      return { theta, scaling: { type: 'linear', factor: subField('factor') } };
    case 'llama3': {
      const s: RopeScaling = {
        type: 'llama3',
        factor: subField('factor'),
        lowFreqFactor: subField('low_freq_factor'),
        highFreqFactor: subField('high_freq_factor'),
        originalMaxPositions: subField('original_max_position_embeddings'),
      };
      if (s.highFreqFactor <= s.lowFreqFactor) throw bad(source, `${field}.high_freq_factor`, `must exceed low_freq_factor (${s.highFreqFactor} ≤ ${s.lowFreqFactor})`);
      return { theta, scaling: s };
    }
    case 'dynamic':
      return { theta, scaling: { type: 'dynamic', factor: subField('factor'), originalMaxPositions: subField('original_max_position_embeddings', maxPos) } };
    default:
      throw bad(source, `${field}.rope_type`, `rope scaling type "${type}" is not supported`, 'supported: default, linear, llama3 (and dynamic within the original context)');
  }
}

function intList(j: Json, source: string, field: string): number[] {
  const v = j[field];
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v) || v.some((x) => typeof x !== 'number' || !Number.isInteger(x))) throw bad(source, field, `expected a list of integers, got ${JSON.stringify(v)}`);
  return v as number[];
}

/** A config field that would change the forward and is not implemented: refused unless it has its neutral value. */
function refuseUnless(j: Json, source: string, field: string, neutral: (v: unknown) => boolean, what: string): void {
  const v = j[field];
  if (v !== undefined && !neutral(v))
    throw bad(source, field, `${JSON.stringify(v)} is not supported (${what})`, 'the engine would compute a different network than transformers does');
}

/** Which layers use sliding-window attention and its width, as the family's config class derives them. */
function parseSliding(f: Family, c: Json, source: string, numLayers: number): { window: number | null; layers: (b: number) => boolean } {
  const none = { window: null, layers: () => false };
  const every = (window: number | null) => (window === null ? none : { window, layers: (b: number) => b >= 0 && b < numLayers });
  const width = (fallback?: number) => num(c, source, 'sliding_window', { int: true, positive: true, fallback });
  const w = c.sliding_window;
  const mode = f.sliding;
  if (mode === 'none') {
    if (w !== undefined && w !== null) throw bad(source, 'sliding_window', `a ${f.name} model has no sliding-window attention, got ${JSON.stringify(w)}`);
    return none;
  }
  if (typeof mode === 'object') {
    if (w === null) return none;
    return every(w === undefined ? mode.all : width());
  }
  const use = bool(c, source, 'use_sliding_window', false);
  if (mode === 'qwen3_moe') return every(use ? width(4096) : null);
  // Qwen2 / Qwen3 / Qwen2-MoE: layer_types names each layer; without it the config class derives it from
  // use_sliding_window and max_window_layers.
  const window = use ? width(4096) : null;
  if (Array.isArray(c.layer_types)) {
    const types = (c.layer_types as unknown[]).map(String);
    if (types.length !== numLayers) throw bad(source, 'layer_types', `has ${types.length} entries, num_hidden_layers is ${numLayers}`);
    const odd = types.find((t) => t !== 'full_attention' && t !== 'sliding_attention');
    if (odd) throw bad(source, 'layer_types', `layer type "${odd}" is not supported`, 'supported: full_attention, sliding_attention');
    const layers = types.map((t) => t === 'sliding_attention');
    if (!layers.some(Boolean)) return none;
    if (window === null) throw bad(source, 'layer_types', 'names sliding_attention layers but use_sliding_window is false (transformers refuses this config too)');
    return { window, layers: (b) => layers[b] ?? false };
  }
  if (window === null) return none;
  const from = num(c, source, 'max_window_layers', { int: true, fallback: 28 });
  const sliding = (l: number) => l >= 0 && l < numLayers && (mode === 'qwen2_moe' ? l % 2 === 0 && l < from : l >= from);
  // Whether any layer slides, without enumerating num_hidden_layers of them.
  const anySliding = mode === 'qwen2_moe' ? from > 0 : from < numLayers;
  return anySliding ? { window, layers: sliding } : none;
}

function parseMoe(f: Family, c: Json, source: string, numLayers: number, hidden: number): MoeConfig | null {
  if (f.mlp.kind !== 'moe') return null;
  const m = f.mlp.moe;
  const field = m.numExpertsFields.find((k) => c[k] !== undefined && c[k] !== null) ?? m.numExpertsFields[0];
  const numExperts = num(c, source, field, { int: true, positive: true });
  const topK = num(c, source, 'num_experts_per_tok', { int: true, positive: true });
  if (topK > numExperts) throw bad(source, 'num_experts_per_tok', `${topK} exceeds the ${numExperts} experts (${field})`);
  const intermediate = num(c, source, m.intermediateField, { int: true, positive: true });
  const normTopK = typeof m.normTopK === 'boolean' ? m.normTopK : bool(c, source, m.normTopK.field, m.normTopK.fallback);
  let shared: MoeConfig['shared'] = null;
  if (m.sharedExpert) {
    const si = num(c, source, m.sharedExpert.intermediateField, { int: true, fallback: 0 });
    if (si < 0) throw bad(source, m.sharedExpert.intermediateField, `expected a non-negative size, got ${si}`);
    if (si > 0) shared = { intermediate: si };
  }
  let isSparse: (b: number) => boolean;
  let anyDense: boolean;
  if (m.sparseLayers === 'all') {
    isSparse = (b) => b >= 0 && b < numLayers;
    anyDense = false;
  } else {
    // transformers' Qwen MoE decoder layer: sparse iff not in mlp_only_layers and (layer + 1) % decoder_sparse_step == 0.
    const step = num(c, source, 'decoder_sparse_step', { int: true, positive: true, fallback: 1 });
    const only = intList(c, source, 'mlp_only_layers');
    for (const l of only) if (l < 0 || l >= numLayers) throw bad(source, 'mlp_only_layers', `layer ${l} is outside 0…${numLayers - 1}`);
    isSparse = (l) => l >= 0 && l < numLayers && !only.includes(l) && (l + 1) % step === 0;
    anyDense = only.length > 0 || step > 1;
  }
  refuseUnless(c, source, 'router_jitter_noise', (v) => v === 0 || v === null || typeof v === 'number', 'router jitter');
  void hidden;
  return { numExperts, topK, intermediate, normTopK, shared, isSparse, anyDense };
}

/** Validates a parsed config.json object (`source` names the file in errors). */
export function parseModelConfig(j: unknown, source: string): ModelConfig {
  if (typeof j !== 'object' || j === null || Array.isArray(j)) throw bad(source, '(root)', 'expected a JSON object');
  const c = j as Json;
  const mt = c.model_type;
  const arch = Array.isArray(c.architectures) ? (c.architectures as unknown[]).map(String) : [];
  const family = familyOf(mt, arch);
  if (!family)
    throw bad(
      source,
      'model_type',
      `"${String(mt)}"${arch.length ? ` (${arch.join(', ')})` : ''} is not a supported decoder family`,
      `supported model_type values: ${SUPPORTED_MODEL_TYPES.join(', ')}`,
    );
  const act = c.hidden_act ?? 'silu';
  if (act !== 'silu') throw bad(source, 'hidden_act', `activation "${String(act)}" is not supported (only silu / SwiGLU)`);
  const hiddenSize = num(c, source, 'hidden_size', { int: true, positive: true });
  const numHeads = num(c, source, 'num_attention_heads', { int: true, positive: true });
  const numKvHeads = num(c, source, 'num_key_value_heads', { int: true, positive: true, fallback: numHeads });
  if (numHeads % numKvHeads !== 0) throw bad(source, 'num_key_value_heads', `${numKvHeads} does not divide num_attention_heads ${numHeads}`);
  let headDim: number;
  if ((c.head_dim === undefined || c.head_dim === null) && family.headDimDefault) headDim = family.headDimDefault;
  else if (c.head_dim === undefined || c.head_dim === null) {
    if (hiddenSize % numHeads !== 0) throw bad(source, 'head_dim', `missing, and hidden_size ${hiddenSize} is not a multiple of num_attention_heads ${numHeads}`);
    headDim = hiddenSize / numHeads;
  } else headDim = num(c, source, 'head_dim', { int: true, positive: true });
  if (headDim % 2 !== 0) throw bad(source, 'head_dim', `must be even for rotary embedding, got ${headDim}`);
  const { theta, scaling } = parseRope(c, source);
  if (Number(c.pretraining_tp ?? 1) !== 1) throw bad(source, 'pretraining_tp', `only 1 is supported, got ${String(c.pretraining_tp)}`);
  // Fields of neighbouring families that change the math: present with a non-neutral value, they mean a
  // network this engine does not compute.
  refuseUnless(c, source, 'partial_rotary_factor', (v) => v === 1 || v === 1.0 || v === null, 'partial rotary embedding');
  refuseUnless(c, source, 'attn_logit_softcapping', (v) => v === null, 'attention logit soft-capping');
  refuseUnless(c, source, 'final_logit_softcapping', (v) => v === null, 'final logit soft-capping');
  refuseUnless(c, source, 'attention_multiplier', (v) => v === null, 'attention multiplier');
  const numLayers = num(c, source, 'num_hidden_layers', { int: true, positive: true });
  const attentionBias = bool(c, source, 'attention_bias', false);
  const mlpBias = bool(c, source, 'mlp_bias', false);
  // Qwen2 / Qwen2-MoE: q/k/v biases whatever attention_bias says (transformers does not read it there); the
  // checkpoint accounting below then names a bias tensor that is missing.
  if (mlpBias && family.mlp.kind === 'moe') throw bad(source, 'mlp_bias', `MLP biases are not part of a ${family.name} model`);
  const sliding = parseSliding(family, c, source, numLayers);
  const moe = parseMoe(family, c, source, numLayers, hiddenSize);
  const needsDense = !moe || moe.anyDense;
  return {
    source,
    family: family.name,
    hiddenSize,
    intermediateSize: needsDense
      ? num(c, source, 'intermediate_size', { int: true, positive: true })
      : num(c, source, 'intermediate_size', { int: true, positive: true, fallback: 0 }),
    numLayers,
    numHeads,
    numKvHeads,
    headDim,
    vocabSize: num(c, source, 'vocab_size', { int: true, positive: true }),
    rmsNormEps: num(c, source, 'rms_norm_eps', { positive: true, fallback: 1e-6 }),
    ropeTheta: theta,
    ropeScaling: scaling,
    maxPositions: num(c, source, 'max_position_embeddings', { int: true, positive: true, fallback: 2048 }),
    tiedHead: bool(c, source, 'tie_word_embeddings', false),
    qkvBias: family.attnBias === 'qkv' || (family.attnBias === 'qkv_bias' ? bool(c, source, 'qkv_bias', true) : attentionBias),
    oBias: family.attnBias === 'config' && attentionBias,
    mlpBias,
    qkNorm: family.qkNorm,
    slidingWindow: sliding.window,
    isSlidingLayer: sliding.layers,
    moe,
    dtype: String(c.dtype ?? c.torch_dtype ?? 'float32'),
  };
}

/** Reads `<dir>/config.json` (or a config.json path). */
export function loadModelConfig(dirOrFile: string): ModelConfig {
  const file = dirOrFile.endsWith('.json') ? dirOrFile : join(dirOrFile, 'config.json');
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new ProtocolError(ErrorCode.BadConfig, `cannot read ${file}: ${(e as Error).message}`, file, 'a Hugging Face model folder holds config.json');
  }
  let j: unknown;
  try {
    j = JSON.parse(text);
  } catch (e) {
    // A UTF-8 byte-order mark is refused like transformers' json.loads refuses it; the hint says why.
    const bom = text.charCodeAt(0) === 0xfeff;
    throw new ProtocolError(
      ErrorCode.BadConfig,
      `${file} is not valid JSON: ${bom ? 'it starts with a UTF-8 byte-order mark' : (e as Error).message}`,
      file,
      bom ? 'save config.json as UTF-8 without BOM' : undefined,
    );
  }
  return parseModelConfig(j, file);
}

/**
 * The distinct inputs of a block's linears: linears sharing an input share one Hessian. An expert's
 * linears see mlp_in / mlp_act restricted to the tokens routed to it (BlockLinear.expert).
 */
export type LinearInput = 'attn_in' | 'attn_out' | 'mlp_in' | 'mlp_act' | 'shared_act';
export const LINEAR_INPUTS: readonly LinearInput[] = ['attn_in', 'attn_out', 'mlp_in', 'mlp_act', 'shared_act'];

/** GPTQ's true-sequential stages: each is quantized before the next is measured (mlp_act and shared_act are independent). */
export const SEQUENTIAL_STAGES: readonly (readonly LinearInput[])[] = [['attn_in'], ['attn_out'], ['mlp_in'], ['mlp_act', 'shared_act']];

export interface BlockLinear extends LinearLayerInfo {
  /** Checkpoint tensor name of the weight ([rows=out, cols=in], row-major). */
  weight: string;
  /** Which captured activation feeds this linear. */
  input: LinearInput;
}

/**
 * The statistic a linear is quantized with: its input (`mlp_in`), its input over the tokens routed to an
 * expert (`mlp_in@3`), or an expert's input over every token (`mlp_act@3:all`: an expert calibrated on all
 * tokens, as llm-compressor's calibrate_all_experts).
 */
export type StatKey = LinearInput | `${LinearInput}@${number}` | `${LinearInput}@${number}:all`;

export function statKey(l: { input: LinearInput; expert?: number }, allTokens = false): StatKey {
  if (l.expert === undefined) return l.input;
  return allTokens ? `${l.input}@${l.expert}:all` : `${l.input}@${l.expert}`;
}

/** The statistic a key is measured as: an expert's mlp_in over every token is the block's mlp_in itself. */
export function measuredStatKey(k: StatKey): StatKey {
  const p = parseStatKey(k);
  return p.input === 'mlp_in' && p.allTokens ? 'mlp_in' : k;
}

export function parseStatKey(k: string): { input: LinearInput; expert?: number; allTokens: boolean } {
  const m = /^([a-z_]+)(?:@(\d+)(:all)?)?$/.exec(k);
  if (!m || !(LINEAR_INPUTS as readonly string[]).includes(m[1])) throw new Error(`not a statistic key: ${k}`);
  return { input: m[1] as LinearInput, expert: m[2] === undefined ? undefined : Number(m[2]), allTokens: m[3] !== undefined };
}

/** What makes two blocks' graphs differ: sliding-window attention, a sparse MLP. */
export interface BlockKind {
  sliding: boolean;
  moe: boolean;
}

export function blockKind(cfg: ModelConfig, b: number): BlockKind {
  return { sliding: cfg.isSlidingLayer(b), moe: cfg.moe?.isSparse(b) ?? false };
}

export const blockKindKey = (k: BlockKind) => `${k.sliding ? 'swa' : 'full'}-${k.moe ? 'moe' : 'dense'}`;

/** The first block of each kind (graphs are built once per kind and shared by its blocks). */
export function representativeBlock(cfg: ModelConfig, kind: BlockKind): number {
  for (let b = 0; b < cfg.numLayers; b++) if (blockKindKey(blockKind(cfg, b)) === blockKindKey(kind)) return b;
  throw new Error(`no block of kind ${blockKindKey(kind)}`);
}

/** The family's tensor names of block b's MLP. */
function mlpNames(cfg: ModelConfig, b: number) {
  const f = FAMILIES.find((x) => x.name === cfg.family)!;
  if (f.mlp.kind === 'dense') return { dense: f.mlp };
  if (cfg.moe?.isSparse(b)) return { moe: f.mlp.moe };
  return { dense: f.mlp.dense! };
}

/**
 * The quantizable linears of block `b`, with [out, in] shapes: q, k, v, o, then the MLP's (a dense block:
 * gate, up, down; a sparse one: each expert's gate, up, down, then the shared expert's). The router and
 * the shared-expert gate are not among them: they stay in float.
 */
export function blockLinears(cfg: ModelConfig, b: number): BlockLinear[] {
  const H = cfg.hiddenSize,
    qd = cfg.numHeads * cfg.headDim,
    kvd = cfg.numKvHeads * cfg.headDim;
  const p = `model.layers.${b}.`;
  const out: BlockLinear[] = [];
  const add = (path: string, module: string, rows: number, cols: number, input: LinearInput, expert?: number) =>
    out.push({ name: p + path, block: b, module, rows, cols, weight: `${p}${path}.weight`, input, ...(expert === undefined ? {} : { expert }) });
  add('self_attn.q_proj', 'q_proj', qd, H, 'attn_in');
  add('self_attn.k_proj', 'k_proj', kvd, H, 'attn_in');
  add('self_attn.v_proj', 'v_proj', kvd, H, 'attn_in');
  add('self_attn.o_proj', 'o_proj', H, qd, 'attn_out');
  const m = mlpNames(cfg, b);
  if (m.dense) {
    const { module, names: n } = m.dense,
      I = cfg.intermediateSize;
    add(`${module}.${n.gate}`, n.gate, I, H, 'mlp_in');
    add(`${module}.${n.up}`, n.up, I, H, 'mlp_in');
    add(`${module}.${n.down}`, n.down, H, I, 'mlp_act');
    return out;
  }
  const moe = cfg.moe!,
    n = m.moe!,
    I = moe.intermediate;
  for (let e = 0; e < moe.numExperts; e++) {
    const x = `experts.${e}`;
    add(`${n.module}.${x}.${n.expert.gate}`, `${x}.${n.expert.gate}`, I, H, 'mlp_in', e);
    add(`${n.module}.${x}.${n.expert.up}`, `${x}.${n.expert.up}`, I, H, 'mlp_in', e);
    add(`${n.module}.${x}.${n.expert.down}`, `${x}.${n.expert.down}`, H, I, 'mlp_act', e);
  }
  if (moe.shared && n.sharedExpert) {
    const s = n.sharedExpert.module,
      S = moe.shared.intermediate;
    add(`${n.module}.${s}.gate_proj`, `${s}.gate_proj`, S, H, 'mlp_in');
    add(`${n.module}.${s}.up_proj`, `${s}.up_proj`, S, H, 'mlp_in');
    add(`${n.module}.${s}.down_proj`, `${s}.down_proj`, H, S, 'shared_act');
  }
  return out;
}

export function allLinears(cfg: ModelConfig): BlockLinear[] {
  const out: BlockLinear[] = [];
  for (let b = 0; b < cfg.numLayers; b++) out.push(...blockLinears(cfg, b));
  return out;
}

/** Non-linear tensors of the model: name → expected shape. */
export function otherTensors(cfg: ModelConfig): Map<string, number[]> {
  const m = globalTensors(cfg);
  for (let b = 0; b < cfg.numLayers; b++) for (const [k, v] of blockOtherTensors(cfg, b)) m.set(k, v);
  return m;
}

/**
 * Expected shapes of every tensor the forward reads: the non-block tensors when `block` is
 * undefined, else block `block`'s norms, biases, router and linears.
 */
export function expectedShapes(cfg: ModelConfig, block?: number): Map<string, number[]> {
  if (block === undefined) return globalTensors(cfg);
  const m = blockOtherTensors(cfg, block);
  for (const l of blockLinears(cfg, block)) m.set(l.weight, [l.rows, l.cols]);
  return m;
}

/** Non-block tensors: embedding, final norm, untied head. */
function globalTensors(cfg: ModelConfig): Map<string, number[]> {
  const H = cfg.hiddenSize;
  const m = new Map<string, number[]>();
  m.set('model.embed_tokens.weight', [cfg.vocabSize, H]);
  m.set('model.norm.weight', [H]);
  if (!cfg.tiedHead) m.set('lm_head.weight', [cfg.vocabSize, H]);
  return m;
}

/** Block `b`'s norms, biases, q/k norms, router and shared-expert gate. */
function blockOtherTensors(cfg: ModelConfig, b: number): Map<string, number[]> {
  const H = cfg.hiddenSize;
  const p = `model.layers.${b}.`;
  const m = new Map<string, number[]>();
  m.set(`${p}input_layernorm.weight`, [H]);
  m.set(`${p}post_attention_layernorm.weight`, [H]);
  if (cfg.qkNorm) {
    m.set(`${p}self_attn.q_norm.weight`, [cfg.headDim]);
    m.set(`${p}self_attn.k_norm.weight`, [cfg.headDim]);
  }
  const lins = blockLinears(cfg, b);
  for (const l of lins) {
    const bias = l.input === 'attn_in' ? cfg.qkvBias : l.input === 'attn_out' ? cfg.oBias : l.expert === undefined && !l.module.startsWith('shared_expert.') && cfg.mlpBias;
    if (bias) m.set(`${l.name}.bias`, [l.rows]);
  }
  const n = mlpNames(cfg, b).moe;
  if (n) {
    m.set(`${p}${n.module}.${n.router}.weight`, [cfg.moe!.numExperts, H]);
    if (cfg.moe!.shared && n.sharedExpert) m.set(`${p}${n.module}.${n.sharedExpert.gate}.weight`, [1, H]);
  }
  return m;
}

/** Block b's router, shared-expert gate: checkpoint names (undefined in a dense block). */
export function moeTensorNames(cfg: ModelConfig, b: number): { router: string; sharedGate?: string } | undefined {
  const n = mlpNames(cfg, b).moe;
  if (!n) return undefined;
  const p = `model.layers.${b}.${n.module}.`;
  return { router: `${p}${n.router}.weight`, sharedGate: cfg.moe!.shared && n.sharedExpert ? `${p}${n.sharedExpert.gate}.weight` : undefined };
}

/** Name of the LM head matrix: `lm_head.weight`, or the embedding when tied. */
export function headTensorName(cfg: ModelConfig): string {
  return cfg.tiedHead ? 'model.embed_tokens.weight' : 'lm_head.weight';
}

/** Why a stored tensor the forward does not read is ignored on purpose (undefined: it is not). */
export function ignoredBecause(cfg: ModelConfig, name: string): string | undefined {
  if (IGNORED_TENSORS.some((r) => r.test(name))) return 'rotary frequencies are recomputed from config.json';
  // transformers ties lm_head to the embedding after loading: a stored copy is never read.
  if (cfg.tiedHead && name === 'lm_head.weight') return 'tie_word_embeddings: the head is the embedding';
  return undefined;
}

/**
 * Checks every tensor the forward needs against the checkpoint (`shapeOf` returns undefined for a
 * missing tensor). A missing tensor → BadCheckpoint, a wrong shape → ShapeMismatch, both naming it.
 * With `names` (every tensor the checkpoint holds), a tensor the family neither reads nor ignores on
 * purpose is a BadCheckpoint error too: nothing in a checkpoint is dropped without a word.
 * Returns the quantizable linears.
 */
export function checkModelTensors(cfg: ModelConfig, shapeOf: (name: string) => readonly number[] | undefined, where = 'checkpoint', names?: Iterable<string>): BlockLinear[] {
  // num_hidden_layers comes from the config and may be absurd (1e9): check block by block, so a
  // missing block is reported at once instead of after building the lists of a billion blocks.
  const linears: BlockLinear[] = [];
  const used = new Set<string>();
  const check = (expected: Map<string, number[]>) => {
    checkShapes(cfg, expected, shapeOf, where);
    for (const k of expected.keys()) used.add(k);
  };
  check(globalTensors(cfg));
  for (let b = 0; b < cfg.numLayers; b++) {
    check(expectedShapes(cfg, b));
    linears.push(...blockLinears(cfg, b));
  }
  if (names)
    for (const n of names) {
      if (used.has(n) || ignoredBecause(cfg, n)) continue;
      throw new ProtocolError(
        ErrorCode.BadCheckpoint,
        `${where}: tensor ${n} is not part of a ${cfg.family} model as config ${cfg.source} describes it`,
        n,
        unexpectedHint(cfg, n),
      );
    }
  return linears;
}

function unexpectedHint(cfg: ModelConfig, name: string): string {
  const block = /^model\.layers\.(\d+)\./.exec(name);
  if (block && Number(block[1]) >= cfg.numLayers) return `config.json says num_hidden_layers = ${cfg.numLayers}`;
  if (/\.experts\.(\d+)\./.test(name) && cfg.moe) return `config.json says ${cfg.moe.numExperts} experts`;
  if (/\.bias$/.test(name)) return 'a bias the config does not declare (attention_bias / mlp_bias) would be ignored: fix config.json or the checkpoint';
  return 'the checkpoint and config.json disagree, or the checkpoint holds a tensor of another architecture';
}

function checkShapes(cfg: ModelConfig, expected: Map<string, number[]>, shapeOf: (name: string) => readonly number[] | undefined, where: string): void {
  for (const [name, shape] of expected) {
    const got = shapeOf(name);
    if (!got) {
      const hint = name === 'lm_head.weight' ? 'config.json says tie_word_embeddings is false; set it to true if the head shares the embedding' : undefined;
      throw new ProtocolError(ErrorCode.BadCheckpoint, `${where}: tensor ${name} is missing (config ${cfg.source})`, name, hint);
    }
    if (got.length !== shape.length || got.some((d, i) => d !== shape[i]))
      throw new ProtocolError(ErrorCode.ShapeMismatch, `${where}: tensor ${name} has shape [${got.join(', ')}], config ${cfg.source} implies [${shape.join(', ')}]`, name);
  }
}

/** Width of a statistic's input (its Hessian is width × width). */
export function statWidth(cfg: ModelConfig, lins: readonly BlockLinear[], k: StatKey): number {
  const { input, expert } = parseStatKey(k);
  // mlp_in without an expert is the sparse block's shared input: any expert's gate has its width.
  const l = lins.find((x) => x.input === input && (expert === undefined || x.expert === expert));
  if (!l) throw new Error(`no linear of block ${lins[0]?.block} reads ${k} (${cfg.family})`);
  return l.cols;
}
