// The decoder families the engine runs, as data: how config.json names them, which projections carry a
// bias, whether q/k are RMS-normalised per head, how the sliding window is declared, what the MLP of a
// block is (dense SwiGLU or a mixture of SwiGLU experts, with its tensor names), and which stored tensors
// the forward deliberately does not read. config.ts turns one of these plus a config.json into a
// ModelConfig; layout.ts turns a ModelConfig into the tensors of every block. Nothing else branches on the
// family name.

export type FamilyName = 'llama' | 'mistral' | 'qwen2' | 'qwen3' | 'mixtral' | 'qwen2_moe' | 'qwen3_moe';

/** Names of one expert's (or a dense MLP's) three projections: gate (silu side), up, down. */
export interface SwigluNames {
  gate: string;
  up: string;
  down: string;
}

export interface MoeNames {
  /** The block's MoE module under `model.layers.{b}.` (`block_sparse_moe`, `mlp`). */
  module: string;
  /** The router linear [experts, hidden] under the module (kept in float). */
  router: string;
  /** The experts' projections: `experts.{e}.<name>`. */
  expert: SwigluNames;
  /** config.json fields. */
  /** Field names of the expert count (Qwen3-MoE's config class writes `num_local_experts` for `num_experts`). */
  numExpertsFields: readonly string[];
  intermediateField: string;
  /** Renormalise the top-k routing weights to sum to 1: a fixed choice, or a config field with its default. */
  normTopK: boolean | { field: string; fallback: boolean };
  /** A shared expert on every token, scaled by sigmoid(shared_expert_gate·x) (Qwen2-MoE). */
  sharedExpert?: { module: string; gate: string; intermediateField: string };
  /** Which blocks are sparse: all, or Qwen's `mlp_only_layers` / `decoder_sparse_step`. */
  sparseLayers: 'all' | 'qwen';
}

export interface Family {
  name: FamilyName;
  modelTypes: readonly string[];
  /** transformers' class names (config.json `architectures`). */
  classes: readonly string[];
  /**
   * Projection biases: 'config' = `attention_bias` for q, k, v and o (and `mlp_bias` for the MLP), as Llama;
   * 'qkv' = q, k, v always, o never (Qwen2 hard-codes it); 'qkv_bias' = q, k, v when `qkv_bias` (default
   * true), o never (Qwen2-MoE).
   */
  attnBias: 'config' | 'qkv' | 'qkv_bias';
  /** head_dim when config.json has none (Qwen3's config class: 128), else hidden_size / heads. */
  headDimDefault?: number;
  /** RMSNorm over head_dim of every query and key head before RoPE (`q_norm`, `k_norm`). */
  qkNorm: boolean;
  /**
   * Sliding-window attention, as each config class derives it:
   *  - { all: default }: every layer when `sliding_window` (absent: `default`) is not null (Mistral 4096, Mixtral none);
   *  - 'qwen': window = `sliding_window` if `use_sliding_window`; layers from `layer_types`, by default those
   *    at or past `max_window_layers` (Qwen2, Qwen3);
   *  - 'qwen2_moe': as 'qwen', but by default the even layers below `max_window_layers`;
   *  - 'qwen3_moe': every layer when `use_sliding_window`;
   *  - 'none': no sliding window (Llama: a `sliding_window` field is refused).
   */
  sliding: { all: number | null } | 'qwen' | 'qwen2_moe' | 'qwen3_moe' | 'none';
  mlp: { kind: 'dense'; names: SwigluNames; module: string } | { kind: 'moe'; moe: MoeNames; dense?: { names: SwigluNames; module: string } };
}

const DENSE = { kind: 'dense', module: 'mlp', names: { gate: 'gate_proj', up: 'up_proj', down: 'down_proj' } } as const;
const QWEN_EXPERT: SwigluNames = { gate: 'gate_proj', up: 'up_proj', down: 'down_proj' };

export const FAMILIES: readonly Family[] = [
  { name: 'llama', modelTypes: ['llama'], classes: ['LlamaForCausalLM'], attnBias: 'config', qkNorm: false, sliding: 'none', mlp: DENSE },
  { name: 'mistral', modelTypes: ['mistral'], classes: ['MistralForCausalLM'], attnBias: 'config', qkNorm: false, sliding: { all: 4096 }, mlp: DENSE },
  { name: 'qwen2', modelTypes: ['qwen2'], classes: ['Qwen2ForCausalLM'], attnBias: 'qkv', qkNorm: false, sliding: 'qwen', mlp: DENSE },
  { name: 'qwen3', modelTypes: ['qwen3'], classes: ['Qwen3ForCausalLM'], attnBias: 'config', headDimDefault: 128, qkNorm: true, sliding: 'qwen', mlp: DENSE },
  {
    name: 'mixtral',
    modelTypes: ['mixtral'],
    classes: ['MixtralForCausalLM'],
    attnBias: 'config',
    qkNorm: false,
    sliding: { all: null },
    mlp: {
      kind: 'moe',
      moe: {
        module: 'block_sparse_moe',
        router: 'gate',
        expert: { gate: 'w1', up: 'w3', down: 'w2' },
        numExpertsFields: ['num_local_experts'],
        intermediateField: 'intermediate_size',
        normTopK: true,
        sparseLayers: 'all',
      },
    },
  },
  {
    name: 'qwen2_moe',
    modelTypes: ['qwen2_moe'],
    classes: ['Qwen2MoeForCausalLM'],
    attnBias: 'qkv_bias',
    qkNorm: false,
    sliding: 'qwen2_moe',
    mlp: {
      kind: 'moe',
      moe: {
        module: 'mlp',
        router: 'gate',
        expert: QWEN_EXPERT,
        numExpertsFields: ['num_experts', 'num_local_experts'],
        intermediateField: 'moe_intermediate_size',
        normTopK: { field: 'norm_topk_prob', fallback: false },
        sharedExpert: { module: 'shared_expert', gate: 'shared_expert_gate', intermediateField: 'shared_expert_intermediate_size' },
        sparseLayers: 'qwen',
      },
      dense: { module: 'mlp', names: QWEN_EXPERT },
    },
  },
  {
    name: 'qwen3_moe',
    modelTypes: ['qwen3_moe'],
    classes: ['Qwen3MoeForCausalLM'],
    attnBias: 'config',
    qkNorm: true,
    sliding: 'qwen3_moe',
    mlp: {
      kind: 'moe',
      moe: {
        module: 'mlp',
        router: 'gate',
        expert: QWEN_EXPERT,
        numExpertsFields: ['num_experts', 'num_local_experts'],
        intermediateField: 'moe_intermediate_size',
        normTopK: { field: 'norm_topk_prob', fallback: false },
        sparseLayers: 'qwen',
      },
      dense: { module: 'mlp', names: QWEN_EXPERT },
    },
  },
];

/** The family of a config.json: its model_type, else the first known class of `architectures`. */
export function familyOf(modelType: unknown, architectures: readonly string[]): Family | undefined {
  return FAMILIES.find((f) => f.modelTypes.includes(String(modelType))) ?? FAMILIES.find((f) => architectures.some((a) => f.classes.includes(a)));
}

export const SUPPORTED_MODEL_TYPES = FAMILIES.flatMap((f) => f.modelTypes);

/**
 * Stored tensors every family's forward ignores on purpose: rotary inverse frequencies (recomputed from
 * config.json, as transformers does; older exports saved them as buffers).
 */
export const IGNORED_TENSORS: readonly RegExp[] = [/^model\.rotary_emb\.inv_freq$/, /^model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq$/];
