// Hugging Face Llama-family config.json → one typed, validated `LlamaConfig`, plus the list of
// quantizable linears per block checked against the checkpoint's tensor shapes.
// Field names follow transformers' LlamaConfig; both the transformers ≤4 layout (`rope_theta`,
// `rope_scaling` at the top level) and the transformers 5 layout (`rope_parameters`) are read.

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ErrorCode, type LinearLayerInfo } from '../../protocol/messages';
import { ProtocolError } from '../../protocol/rpc';

export type RopeScaling =
  | { type: 'default' }
  /** Positions divided by `factor` (transformers "linear"): inv_freq / factor. */
  | { type: 'linear'; factor: number }
  /** Llama 3.1 frequency-dependent scaling (transformers `_compute_llama3_parameters`). */
  | { type: 'llama3'; factor: number; lowFreqFactor: number; highFreqFactor: number; originalMaxPositions: number }
  /** Dynamic NTK: identical to default while the sequence fits `originalMaxPositions`. */
  | { type: 'dynamic'; factor: number; originalMaxPositions: number };

export interface LlamaConfig {
  /** The config.json this was read from (for error messages). */
  source: string;
  hiddenSize: number;
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
  attentionBias: boolean;
  mlpBias: boolean;
  /** Stored dtype as declared (informational; tensors carry their own). */
  dtype: string;
}

/** The four distinct linear inputs of a block: linears sharing an input share one Hessian. */
export type LinearInput = 'attn_in' | 'attn_out' | 'mlp_in' | 'mlp_act';
export const LINEAR_INPUTS: readonly LinearInput[] = ['attn_in', 'attn_out', 'mlp_in', 'mlp_act'];

export interface BlockLinear extends LinearLayerInfo {
  /** Checkpoint tensor name of the weight ([rows=out, cols=in], row-major). */
  weight: string;
  /** Which captured activation feeds this linear. */
  input: LinearInput;
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
    throw bad(source, field, 'missing', 'a Llama-family config.json must define it');
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

/** Validates a parsed config.json object (`source` names the file in errors). */
export function parseLlamaConfig(j: unknown, source: string): LlamaConfig {
  if (typeof j !== 'object' || j === null || Array.isArray(j)) throw bad(source, '(root)', 'expected a JSON object');
  const c = j as Json;
  const mt = c.model_type;
  const arch = Array.isArray(c.architectures) ? (c.architectures as unknown[]).map(String) : [];
  const llamaLike = ['llama', 'mistral', 'qwen2'].includes(String(mt)) || arch.some((a) => /^(Llama|Mistral|Qwen2)ForCausalLM$/.test(a));
  if (!llamaLike) throw bad(source, 'model_type', `"${String(mt)}" is not a Llama-family model`, 'expected model_type "llama" (LlamaForCausalLM)');
  const act = c.hidden_act ?? 'silu';
  if (act !== 'silu') throw bad(source, 'hidden_act', `activation "${String(act)}" is not supported (only silu / SwiGLU)`);
  const hiddenSize = num(c, source, 'hidden_size', { int: true, positive: true });
  const numHeads = num(c, source, 'num_attention_heads', { int: true, positive: true });
  const numKvHeads = num(c, source, 'num_key_value_heads', { int: true, positive: true, fallback: numHeads });
  if (numHeads % numKvHeads !== 0) throw bad(source, 'num_key_value_heads', `${numKvHeads} does not divide num_attention_heads ${numHeads}`);
  let headDim: number;
  if (c.head_dim === undefined || c.head_dim === null) {
    if (hiddenSize % numHeads !== 0) throw bad(source, 'head_dim', `missing, and hidden_size ${hiddenSize} is not a multiple of num_attention_heads ${numHeads}`);
    headDim = hiddenSize / numHeads;
  } else headDim = num(c, source, 'head_dim', { int: true, positive: true });
  if (headDim % 2 !== 0) throw bad(source, 'head_dim', `must be even for rotary embedding, got ${headDim}`);
  const { theta, scaling } = parseRope(c, source);
  if (Number(c.pretraining_tp ?? 1) !== 1) throw bad(source, 'pretraining_tp', `only 1 is supported, got ${String(c.pretraining_tp)}`);
  return {
    source,
    hiddenSize,
    intermediateSize: num(c, source, 'intermediate_size', { int: true, positive: true }),
    numLayers: num(c, source, 'num_hidden_layers', { int: true, positive: true }),
    numHeads,
    numKvHeads,
    headDim,
    vocabSize: num(c, source, 'vocab_size', { int: true, positive: true }),
    rmsNormEps: num(c, source, 'rms_norm_eps', { positive: true, fallback: 1e-6 }),
    ropeTheta: theta,
    ropeScaling: scaling,
    maxPositions: num(c, source, 'max_position_embeddings', { int: true, positive: true, fallback: 2048 }),
    tiedHead: bool(c, source, 'tie_word_embeddings', false),
    attentionBias: bool(c, source, 'attention_bias', false),
    mlpBias: bool(c, source, 'mlp_bias', false),
    dtype: String(c.dtype ?? c.torch_dtype ?? 'float32'),
  };
}

/** Reads `<dir>/config.json` (or a config.json path). */
export function loadLlamaConfig(dirOrFile: string): LlamaConfig {
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
  return parseLlamaConfig(j, file);
}

const ATTN = ['q_proj', 'k_proj', 'v_proj', 'o_proj'] as const;
const MLP = ['gate_proj', 'up_proj', 'down_proj'] as const;

/** The seven quantizable linears of block `b`, in q,k,v,o,gate,up,down order, with [out, in] shapes. */
export function blockLinears(cfg: LlamaConfig, b: number): BlockLinear[] {
  const H = cfg.hiddenSize,
    qd = cfg.numHeads * cfg.headDim,
    kvd = cfg.numKvHeads * cfg.headDim,
    I = cfg.intermediateSize;
  const shapes: Record<string, [number, number, LinearInput]> = {
    q_proj: [qd, H, 'attn_in'],
    k_proj: [kvd, H, 'attn_in'],
    v_proj: [kvd, H, 'attn_in'],
    o_proj: [H, qd, 'attn_out'],
    gate_proj: [I, H, 'mlp_in'],
    up_proj: [I, H, 'mlp_in'],
    down_proj: [H, I, 'mlp_act'],
  };
  const out: BlockLinear[] = [];
  for (const m of [...ATTN, ...MLP]) {
    const prefix = ATTN.includes(m as (typeof ATTN)[number]) ? 'self_attn' : 'mlp';
    const name = `model.layers.${b}.${prefix}.${m}`;
    const [rows, cols, input] = shapes[m];
    out.push({ name, block: b, module: m, rows, cols, weight: `${name}.weight`, input });
  }
  return out;
}

export function allLinears(cfg: LlamaConfig): BlockLinear[] {
  const out: BlockLinear[] = [];
  for (let b = 0; b < cfg.numLayers; b++) out.push(...blockLinears(cfg, b));
  return out;
}

/** Non-linear tensors of the model: name → expected shape. */
export function otherTensors(cfg: LlamaConfig): Map<string, number[]> {
  const m = globalTensors(cfg);
  for (let b = 0; b < cfg.numLayers; b++) for (const [k, v] of blockOtherTensors(cfg, b)) m.set(k, v);
  return m;
}

/**
 * Expected shapes of every tensor the forward reads: the non-block tensors when `block` is
 * undefined, else block `block`'s norms, biases and linears.
 */
export function expectedShapes(cfg: LlamaConfig, block?: number): Map<string, number[]> {
  if (block === undefined) return globalTensors(cfg);
  const m = blockOtherTensors(cfg, block);
  for (const l of blockLinears(cfg, block)) m.set(l.weight, [l.rows, l.cols]);
  return m;
}

/** Non-block tensors: embedding, final norm, untied head. */
function globalTensors(cfg: LlamaConfig): Map<string, number[]> {
  const H = cfg.hiddenSize;
  const m = new Map<string, number[]>();
  m.set('model.embed_tokens.weight', [cfg.vocabSize, H]);
  m.set('model.norm.weight', [H]);
  if (!cfg.tiedHead) m.set('lm_head.weight', [cfg.vocabSize, H]);
  return m;
}

/** Block `b`'s norms and biases. */
function blockOtherTensors(cfg: LlamaConfig, b: number): Map<string, number[]> {
  const H = cfg.hiddenSize;
  const m = new Map<string, number[]>();
  m.set(`model.layers.${b}.input_layernorm.weight`, [H]);
  m.set(`model.layers.${b}.post_attention_layernorm.weight`, [H]);
  if (cfg.attentionBias) {
    m.set(`model.layers.${b}.self_attn.q_proj.bias`, [cfg.numHeads * cfg.headDim]);
    m.set(`model.layers.${b}.self_attn.k_proj.bias`, [cfg.numKvHeads * cfg.headDim]);
    m.set(`model.layers.${b}.self_attn.v_proj.bias`, [cfg.numKvHeads * cfg.headDim]);
    m.set(`model.layers.${b}.self_attn.o_proj.bias`, [H]);
  }
  if (cfg.mlpBias) {
    m.set(`model.layers.${b}.mlp.gate_proj.bias`, [cfg.intermediateSize]);
    m.set(`model.layers.${b}.mlp.up_proj.bias`, [cfg.intermediateSize]);
    m.set(`model.layers.${b}.mlp.down_proj.bias`, [H]);
  }
  return m;
}

/** Name of the LM head matrix: `lm_head.weight`, or the embedding when tied. */
export function headTensorName(cfg: LlamaConfig): string {
  return cfg.tiedHead ? 'model.embed_tokens.weight' : 'lm_head.weight';
}

/**
 * Checks every tensor the forward needs against the checkpoint (`shapeOf` returns undefined for a
 * missing tensor). A missing tensor → BadCheckpoint, a wrong shape → ShapeMismatch, both naming it.
 * Returns the quantizable linears.
 */
export function checkModelTensors(cfg: LlamaConfig, shapeOf: (name: string) => readonly number[] | undefined, where = 'checkpoint'): BlockLinear[] {
  // num_hidden_layers comes from the config and may be absurd (1e9): check block by block, so a
  // missing block is reported at once instead of after building the lists of a billion blocks.
  const linears: BlockLinear[] = [];
  checkShapes(cfg, globalTensors(cfg), shapeOf, where);
  for (let b = 0; b < cfg.numLayers; b++) {
    checkShapes(cfg, expectedShapes(cfg, b), shapeOf, where);
    linears.push(...blockLinears(cfg, b));
  }
  return linears;
}

function checkShapes(cfg: LlamaConfig, expected: Map<string, number[]>, shapeOf: (name: string) => readonly number[] | undefined, where: string): void {
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
