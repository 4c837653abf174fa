// The decoder forward as ONNX graphs (float32): one graph per kind of decoder block (full or sliding-window
// attention, dense or mixture-of-experts MLP), plus embedding and final-norm+head graphs. Covers every family
// of family.ts; twin of llama_ref.ts.
//
// Block weights are graph INPUTS, not initializers: one cached session per (config, ctx, capture)
// serves every block and every weight variant (float, dequantized, fake-quantized), so the pipeline
// swaps in new weights with no graph rebuild. Linears use Gemm(transB=1) on the checkpoint's
// [out, in] layout, so weights are fed as stored, never transposed in JS.
//
// The emitters (`emitBlock`, `emitHead`) are shared with run/export_onnx.ts, which supplies its
// own `LinearEmitter` (initializers, MatMulNBits, the LoPRo structure) to build one whole model.

import { GraphBuilder, type Value } from '../compute/graph';
import {
  blockKind,
  blockKindKey,
  blockLinears,
  statWidth,
  expectedShapes as expectedShapesOf,
  headTensorName,
  moeTensorNames,
  representativeBlock,
  type BlockKind,
  type BlockLinear,
  type ModelConfig,
  type StatKey,
} from './config';
import { ropeTables } from './rope';

/** What a block graph returns besides the new hidden states. */
export type Capture =
  /** y only. */
  | 'none'
  /** y and the raw inputs of the block's linears by statistic key, [B·T, features] each (an expert's zero off its tokens). */
  | 'activations'
  /** y and every statistic: per key, xtx [n, n] = XᵀX and absSum [n] = Σ|x| summed over the batch's B·T rows. */
  | 'stats'
  /**
   * Some keys' statistics only (comma-separated), no y: the block is computed just as far as those inputs
   * (the pipeline's true-sequential passes; 'stats:attn_in' is a norm only). The key `routing` adds a sparse
   * block's rows routed to each expert, routing_count [E].
   */
  | `stats:${string}`
  /**
   * As stats:<keys>, added to running sums fed back in (inputs <key>_acc_xtx, <key>_acc_abssum, routing_acc_count):
   * on a GPU EP the sums stay on the device across batches, one download per pass instead of one per batch.
   */
  | `accstats:${string}`;

/**
 * XᵀX of a wide input comes out in row parts of at most this many bytes: a GPU EP holds a tensor in one WebGPU
 * binding (2 GiB), and a 70B down_proj's XᵀX is 28672² float32 = 3.06 GiB.
 */
export const XTX_PART_BYTES = 2 ** 30;

/** Row ranges [r0, r1) of the parts of an n-wide input's XᵀX (one part: [[0, n]]). */
export function xtxParts(n: number, partBytes = XTX_PART_BYTES): [number, number][] {
  const per = Math.max(1, Math.floor(partBytes / (4 * n)));
  const out: [number, number][] = [];
  for (let r = 0; r < n; r += per) out.push([r, Math.min(n, r + per)]);
  return out;
}

/** The graph output (or running-sum input, with prefix `acc_`) of part p of key k's XᵀX in `parts` parts. */
export const xtxName = (k: string, p: number, parts: number, prefix = ''): string => `${k}_${prefix}xtx${parts === 1 ? '' : `.${p}`}`;

/** A statistics pass: the keys' XᵀX and Σ|x|, and with `routing` the rows routed to each expert. */
export type StatRequest = readonly (StatKey | 'routing')[];
export const statsCapture = (keys: StatRequest): Capture => `stats:${keys.join(',')}`;
export const accStatsCapture = (keys: StatRequest): Capture => `accstats:${keys.join(',')}`;

/** Emits y = x·Wᵀ (+ bias) for one linear; x is [N, in] (2-D). */
export type LinearEmitter = (g: GraphBuilder, lin: BlockLinear, x: Value, bias: Value | null) => Value;

/** Emits a per-block float tensor (norm weights, biases): a graph input or an initializer. */
export type TensorEmitter = (g: GraphBuilder, name: string, shape: number[]) => Value;

/** Shared, per-graph constants of the block: rope tables and causal mask for this T. */
export interface BlockConsts {
  cos: Value; // [T, hd/2]
  sin: Value; // [T, hd/2]
  mask: Value; // [T, T]: 0 on and below the diagonal, -1e30 above
  /** [T, T]: the causal mask, and -1e30 also where i − j ≥ window (sliding-window layers; null without). */
  slidingMask: Value | null;
  /** [B, T] as int64 (for Reshape targets). */
  bt: Value;
}

/** Float32 lowest-ish additive mask value; exp underflows to exactly 0, and no -inf arithmetic. */
const MASK_NEG = -1e30;

/**
 * Rope tables sliced to the runtime T and a causal mask of T×T, from x [B, T, H].
 * `maxT` sizes the rope initializers (ctx for the engine graphs, max positions for exports).
 */
export function emitBlockConsts(g: GraphBuilder, cfg: ModelConfig, x: Value, maxT: number): BlockConsts {
  const half = cfg.headDim / 2;
  const { cos, sin } = ropeTables(cfg, maxT);
  const shape = g.op('Shape', [x]);
  const bt = g.op('Slice', [shape, g.constI64([0]), g.constI64([2])]);
  const t = g.op('Slice', [shape, g.constI64([1]), g.constI64([2])]);
  const zero = g.constI64([0]),
    ax0 = g.constI64([0]);
  const cosV = g.op('Slice', [g.initializer('rope_cos', cos, [maxT, half]), zero, t, ax0]);
  const sinV = g.op('Slice', [g.initializer('rope_sin', sin, [maxT, half]), zero, t, ax0]);
  // mask[i, j] = MASK_NEG where j > i: Range + Greater + Where (no Trilu/ConstantOfShape, which
  // the WebGPU EP lacks; every op here has a WebGPU kernel).
  const pos = g.op('Range', [g.constF32(0), g.op('Cast', [g.op('Squeeze', [t, g.constI64([0])])], { to: 1 }), g.constF32(1)]);
  const row = g.op('Unsqueeze', [pos, g.constI64([1])]),
    col = g.op('Unsqueeze', [pos, g.constI64([0])]);
  const mask = g.op('Where', [g.op('Greater', [col, row]), g.constF32(MASK_NEG), g.constF32(0)]);
  // transformers' sliding window: key j is visible to query i iff i − window < j ≤ i. Positions are exact
  // small integers in float32, so i − j > window − ½ is i − j ≥ window.
  const slidingMask =
    cfg.slidingWindow === null
      ? null
      : g.op('Add', [mask, g.op('Where', [g.op('Greater', [g.op('Sub', [row, col]), g.constF32(cfg.slidingWindow - 0.5)]), g.constF32(MASK_NEG), g.constF32(0)])]);
  return { cos: cosV, sin: sinV, mask, slidingMask, bt };
}

/**
 * The consts of a generation graph (the exported model's prefill and decode): the T new tokens' rope rows by
 * Gather at position_ids [B, T] (as [B, 1, 1, T, hd/2]), and a mask [B, 1, 1, T, P+T] over the P cached keys and
 * the T new ones — causal by place in the cache (the new token i sits at P + i), −1e30 where attention_mask
 * [B, P+T] is 0 (padding), and the sliding window by place as in emitBlockConsts.
 */
export function emitCachedConsts(g: GraphBuilder, cfg: ModelConfig, x: Value, positionIds: Value, attentionMask: Value, maxT: number): BlockConsts {
  const half = cfg.headDim / 2;
  const { cos, sin } = ropeTables(cfg, maxT);
  const shape = g.op('Shape', [x]);
  const bt = g.op('Slice', [shape, g.constI64([0]), g.constI64([2])]);
  const toF = (v: Value) => g.op('Cast', [g.op('Squeeze', [v, g.constI64([0])])], { to: 1 });
  const t = toF(g.op('Slice', [shape, g.constI64([1]), g.constI64([2])]));
  const s = toF(g.op('Slice', [g.op('Shape', [attentionMask]), g.constI64([1]), g.constI64([2])]));
  const rows = (table: Float32Array, name: string) => g.op('Unsqueeze', [g.op('Gather', [g.initializer(name, table, [maxT, half]), positionIds], { axis: 0 }), g.constI64([1, 2])]);
  const row = g.op('Unsqueeze', [g.op('Range', [g.op('Sub', [s, t]), s, g.constF32(1)]), g.constI64([1])]); // [T, 1]: P..P+T−1
  const col = g.op('Unsqueeze', [g.op('Range', [g.constF32(0), s, g.constF32(1)]), g.constI64([0])]); // [1, S]
  const neg = (cond: Value) => g.op('Where', [cond, g.constF32(MASK_NEG), g.constF32(0)]);
  const padding = g.op('Unsqueeze', [neg(g.op('Equal', [attentionMask, g.constI64([0])])), g.constI64([1, 2, 3])]); // [B, 1, 1, 1, S]
  const mask = g.op('Add', [neg(g.op('Greater', [col, row])), padding]);
  const slidingMask = cfg.slidingWindow === null ? null : g.op('Add', [mask, neg(g.op('Greater', [g.op('Sub', [row, col]), g.constF32(cfg.slidingWindow - 0.5)]))]);
  return { cos: rows(cos, 'rope_cos'), sin: rows(sin, 'rope_sin'), mask, slidingMask, bt };
}

/** One block's keys (after RoPE) and values in the cache, [B, kv, P, hd] each: the past fed in, or the present returned. */
export interface KvPair {
  key: Value;
  value: Value;
}

/** RMSNorm over the last axis: x / sqrt(mean(x²) + eps) · w. */
export function emitRmsNorm(g: GraphBuilder, x: Value, w: Value, eps: number): Value {
  const ms = g.op('ReduceMean', [g.op('Mul', [x, x])], { axes: [-1], keepdims: 1 });
  const r = g.op('Sqrt', [g.op('Add', [ms, g.constF32(eps)])]);
  return g.op('Mul', [g.op('Div', [x, r]), w]);
}

/** RoPE (transformers rotate_half layout) on t [..., T, hd]. */
function emitRope(g: GraphBuilder, t: Value, c: BlockConsts): Value {
  const [a1, a2] = g.opMulti('Split', [t], { axis: -1 }, { outputs: 2 });
  const r1 = g.op('Sub', [g.op('Mul', [a1, c.cos]), g.op('Mul', [a2, c.sin])]);
  const r2 = g.op('Add', [g.op('Mul', [a2, c.cos]), g.op('Mul', [a1, c.sin])]);
  return g.op('Concat', [r1, r2], { axis: -1 });
}

export interface BlockOutputs {
  /** New hidden states [B, T, H]. */
  y: Value;
  /** The linears' inputs by statistic key, 2-D [rows, features]: every B·T row, or for an expert's routed key
   * only the rows routed to it (their row indices in `rowsOf`). */
  inputs: Map<StatKey, Value>;
  /** An expert's routed keys: the indices [n_e] (int64) of its rows among the B·T. */
  rowsOf: Map<StatKey, Value>;
  /** A sparse block's [N, E]: 1 where a row is routed to an expert, else 0 (null in a dense block). */
  routed: Value | null;
  /** With a past: the cache after these tokens, [B, kv, P+T, hd] (null without). */
  present: KvPair | null;
  /** The dense block's intermediates a statistics pass can keep for the next (see KeptValues): [B·T, features]. */
  kept: KeptValues;
}

/**
 * A dense block's intermediates between its true-sequential stages, each [B·T, features]: the attention output
 * (o_proj's input), h1 = x + o_proj(attention) (the residual stream after attention) and the SwiGLU activation
 * (down_proj's input). Fed back in (emitBlock's `given`), a stage graph computes only what follows them.
 */
export interface KeptValues {
  attnOut?: Value;
  h1?: Value;
  act?: Value;
}

/** silu(gate·x) ⊙ (up·x): the SwiGLU activation, the down projection's input. */
function swigluAct(g: GraphBuilder, gate: Value, up: Value): Value {
  return g.op('Mul', [g.op('Mul', [gate, g.op('Sigmoid', [gate])]), up]);
}

/**
 * Routing weights [N, E] of a mixture-of-experts block: softmax of the router logits, kept on each row's
 * top-k experts (0 elsewhere), renormalised to sum 1 when the family does (transformers' routers). The
 * k-th largest value is found by k − 1 rounds of ReduceMax with the maxima masked out (TopK and Scatter are
 * missing or slow on some EPs); ties at the k-th value keep every tied expert, which a float softmax of
 * trained logits practically never produces.
 */
export function emitRouting(g: GraphBuilder, cfg: ModelConfig, x: Value, router: Value): Value {
  const moe = cfg.moe!;
  const probs = g.op('Softmax', [g.op('Gemm', [x, router], { transB: 1 })], { axis: -1 });
  let rest = probs;
  let kth = g.op('ReduceMax', [rest], { axes: [-1], keepdims: 1 });
  for (let i = 1; i < moe.topK; i++) {
    rest = g.op('Where', [g.op('Less', [rest, kth]), rest, g.constF32(-1)]);
    kth = g.op('ReduceMax', [rest], { axes: [-1], keepdims: 1 });
  }
  const kept = g.op('Where', [g.op('Less', [probs, kth]), g.constF32(0), probs]);
  return moe.normTopK ? g.op('Div', [kept, g.op('ReduceSum', [kept, g.constI64([-1])], { keepdims: 1 })]) : kept;
}

/**
 * One decoder block on x [B, T, H]. Attention is computed grouped: q as [B, kv, group, T, hd]
 * against k/v as [B, kv, 1, T, hd] (MatMul broadcasting), which is transformers' repeat_kv
 * without materialising repeated keys. A sparse block gathers each expert's routed rows (NonZero of its
 * routing weight), runs the expert on those only, weights its outputs and scatters them back: the routed sum
 * at k/E of the arithmetic of running every expert on every row and masking.
 */
export function emitBlock(
  g: GraphBuilder,
  cfg: ModelConfig,
  b: number,
  x: Value,
  c: BlockConsts,
  linear: LinearEmitter,
  tensor: TensorEmitter,
  past: KvPair | null = null,
  given: KeptValues = {},
): BlockOutputs {
  const H = cfg.hiddenSize,
    nh = cfg.numHeads,
    nkv = cfg.numKvHeads,
    hd = cfg.headDim,
    grp = nh / nkv;
  const p = `model.layers.${b}.`;
  const all = blockLinears(cfg, b);
  const lins = Object.fromEntries(all.map((l) => [l.module, l])) as Record<string, BlockLinear>;
  const bias = (l: BlockLinear, on: boolean) => (on ? tensor(g, `${l.name}.bias`, [l.rows]) : null);
  const lin = (l: BlockLinear, xin: Value, on: boolean) => linear(g, l, xin, bias(l, on));
  const shape = (...rest: number[]) => g.op('Concat', [c.bt, g.constI64(rest)], { axis: 0 });
  const inputs = new Map<StatKey, Value>();
  const rowsOf = new Map<StatKey, Value>();
  let routed: Value | null = null;

  const x2 = g.op('Reshape', [x, g.constI64([-1, H])]);
  const attnIn = emitRmsNorm(g, x2, tensor(g, p + 'input_layernorm.weight', [H]), cfg.rmsNormEps);
  inputs.set('attn_in', attnIn);
  // Qwen3: RMSNorm over head_dim of every query and key head, before RoPE.
  const qkNorm = (v: Value, which: 'q_norm' | 'k_norm') => (cfg.qkNorm ? emitRmsNorm(g, v, tensor(g, `${p}self_attn.${which}.weight`, [hd]), cfg.rmsNormEps) : v);
  const heads = (l: BlockLinear, kvHeads: number, group: number, norm: 'q_norm' | 'k_norm' | null) => {
    const r = g.op('Reshape', [lin(l, attnIn, cfg.qkvBias), shape(kvHeads, group, hd)]);
    return g.op('Transpose', [norm ? qkNorm(r, norm) : r], { perm: [0, 2, 3, 1, 4] });
  };
  const q = heads(lins.q_proj, nkv, grp, 'q_norm');
  const k = heads(lins.k_proj, nkv, 1, 'k_norm');
  const v = heads(lins.v_proj, nkv, 1, null);
  const qr = emitRope(g, q, c);
  let kr = emitRope(g, k, c),
    vAll = v,
    present: KvPair | null = null;
  if (past) {
    // The cache is [B, kv, P, hd] (onnxruntime-genai's layout); the grouped attention wants [B, kv, 1, S, hd].
    const grouped = (t: Value) => g.op('Unsqueeze', [t, g.constI64([2])]);
    kr = g.op('Concat', [grouped(past.key), kr], { axis: 3 });
    vAll = g.op('Concat', [grouped(past.value), v], { axis: 3 });
    const flat = (t: Value) => g.op('Squeeze', [t, g.constI64([2])]);
    present = { key: flat(kr), value: flat(vAll) };
  }
  const kT = g.op('Transpose', [kr], { perm: [0, 1, 2, 4, 3] });
  const mask = blockKind(cfg, b).sliding ? c.slidingMask! : c.mask;
  const scores = g.op('Add', [g.op('Mul', [g.op('MatMul', [qr, kT]), g.constF32(1 / Math.sqrt(hd))]), mask]);
  const probs = g.op('Softmax', [scores], { axis: -1 });
  const ctxv = g.op('Transpose', [g.op('MatMul', [probs, vAll])], { perm: [0, 3, 1, 2, 4] }); // [B, T, kv, grp, hd]
  const attnOut = given.attnOut ?? g.op('Reshape', [ctxv, g.constI64([-1, nh * hd])]);
  inputs.set('attn_out', attnOut);
  // (What a given value replaces is never read: toModel prunes it, and the weights only it read.)
  const h1 = given.h1 ?? g.op('Add', [x2, lin(lins.o_proj, attnOut, cfg.oBias)]);

  const mlpIn = emitRmsNorm(g, h1, tensor(g, p + 'post_attention_layernorm.weight', [H]), cfg.rmsNormEps);
  inputs.set('mlp_in', mlpIn);
  let mlpOut: Value;
  let act: Value | undefined;
  const moeNames = moeTensorNames(cfg, b);
  if (!moeNames) {
    const [gate, up, down] = all.slice(4);
    act = given.act ?? swigluAct(g, lin(gate, mlpIn, cfg.mlpBias), lin(up, mlpIn, cfg.mlpBias));
    inputs.set('mlp_act', act);
    mlpOut = lin(down, act, cfg.mlpBias);
  } else {
    const moe = cfg.moe!;
    const weights = emitRouting(g, cfg, mlpIn, tensor(g, moeNames.router, [moe.numExperts, H]));
    routed = g.op('Cast', [g.op('Greater', [weights, g.constF32(0)])], { to: 1 });
    const experts = all.filter((l) => l.expert !== undefined);
    const terms: Value[] = [];
    const zeros = g.op('Expand', [g.constF32(0), g.op('Shape', [mlpIn])]); // (the WebGPU EP has no ConstantOfShape)
    for (let e = 0; e < moe.numExperts; e++) {
      const [gate, up, down] = experts.filter((l) => l.expert === e);
      const we = g.op('Reshape', [g.op('Slice', [weights, g.constI64([e]), g.constI64([e + 1]), g.constI64([1])]), g.constI64([-1])]); // [N]
      const rows = g.op('Reshape', [g.op('NonZero', [g.op('Greater', [we, g.constF32(0)])]), g.constI64([-1])]); // [n_e]
      const xe = g.op('Gather', [mlpIn, rows], { axis: 0 });
      const act = swigluAct(g, lin(gate, xe, false), lin(up, xe, false));
      inputs.set(`mlp_in@${e}`, xe);
      rowsOf.set(`mlp_in@${e}`, rows);
      inputs.set(`mlp_act@${e}`, act);
      rowsOf.set(`mlp_act@${e}`, rows);
      // Every token: the expert's input is mlp_in itself; its activation is computed only if asked for.
      inputs.set(`mlp_in@${e}:all`, mlpIn);
      inputs.set(`mlp_act@${e}:all`, swigluAct(g, lin(gate, mlpIn, false), lin(up, mlpIn, false)));
      const out = g.op('Mul', [lin(down, act, false), g.op('Unsqueeze', [g.op('Gather', [we, rows], { axis: 0 }), g.constI64([1])])]);
      terms.push(g.op('ScatterND', [zeros, g.op('Unsqueeze', [rows, g.constI64([1])]), out]));
    }
    if (moeNames.sharedGate) {
      const [gate, up, down] = all.filter((l) => l.module.startsWith('shared_expert.'));
      const act = swigluAct(g, lin(gate, mlpIn, false), lin(up, mlpIn, false));
      inputs.set('shared_act', act);
      const s = g.op('Sigmoid', [g.op('Gemm', [mlpIn, tensor(g, moeNames.sharedGate, [1, H])], { transB: 1 })]);
      terms.push(g.op('Mul', [lin(down, act, false), s]));
    }
    mlpOut = terms.reduce((a, t) => g.op('Add', [a, t]));
  }
  const y2 = g.op('Add', [h1, mlpOut]);
  const y = g.op('Reshape', [y2, shape(H)]);
  return { y, inputs, rowsOf, routed, present, kept: { attnOut, h1, act } };
}

/** Linear with the weight fed as a graph input in checkpoint layout [out, in]: Gemm(transB=1). */
export function gemmLinear(g: GraphBuilder, w: Value, x: Value, bias: Value | null): Value {
  return g.op('Gemm', bias ? [x, w, bias] : [x, w], { transB: 1 });
}

/**
 * How the engine's block graph takes a linear's weight: 'out_in' = the checkpoint layout [out, in] through
 * Gemm(transB=1); 'in_out' = pre-transposed [in, out] through MatMul. On the WebGPU EP Gemm(transB) runs at
 * a third of MatMul's speed for 7B shapes (bench/RESULTS.md), so GPU callers transpose each weight once on
 * the device (LlamaForward.weightTensors) and feed 'in_out'.
 */
export type WeightLayout = 'out_in' | 'in_out';

/** x·Wᵀ with W fed pre-transposed as [in, out] (MatMul), + bias. */
export function matmulLinear(g: GraphBuilder, wt: Value, x: Value, bias: Value | null): Value {
  const y = g.op('MatMul', [x, wt]);
  return bias ? g.op('Add', [y, bias]) : y;
}

/**
 * Σ_rows |x| of a 2-D x as a 1-D [n]: MatMul of a ones row [1, N] (a graph input, since the WebGPU EP has
 * no ConstantOfShape) with |x|, rather than ReduceSum over axis 0.
 */
function emitAbsColumnSum(g: GraphBuilder, v: Value, ones: () => Value): Value {
  return g.op('Reshape', [g.op('MatMul', [ones(), g.op('Abs', [v])]), g.constI64([-1])]);
}

/** The graph input names of block b's tensors: checkpoint names after `model.layers.{b}.` (the same for every block of its kind). */
export function blockTensorSuffixes(cfg: ModelConfig, b: number): string[] {
  const p = `model.layers.${b}.`;
  return [...expectedShapesOf(cfg, b).keys()].map((n) => n.slice(p.length));
}

/** A block graph's weight inputs (by checkpoint suffix, shared by blocks of a kind) and its linears per `layout`. */
function blockInputEmitters(layout: WeightLayout): { tensor: TensorEmitter; linear: LinearEmitter } {
  const inputs = new Map<string, Value>();
  const tensor: TensorEmitter = (gb, name, shape) => {
    const suffix = name.replace(/^model\.layers\.\d+\./, '');
    let v = inputs.get(suffix);
    if (!v) inputs.set(suffix, (v = gb.input(suffix, 'float32', shape)));
    return v;
  };
  const linear: LinearEmitter =
    layout === 'out_in'
      ? (gb, lin, xin, bias) => gemmLinear(gb, tensor(gb, lin.weight, [lin.rows, lin.cols]), xin, bias)
      : (gb, lin, xin, bias) => matmulLinear(gb, tensor(gb, lin.weight, [lin.cols, lin.rows]), xin, bias);
  return { tensor, linear };
}

/**
 * The statistics outputs of a block graph: per key XᵀX (`<k>_xtx`, in row parts when wide) and Σ|x| (`<k>_abssum`),
 * plain (`stats`) or added to running sums fed in (`accStats`: inputs `<k>_acc_xtx`, `<k>_acc_abssum`).
 */
function statOutputs(g: GraphBuilder, cfg: ModelConfig, b: number, kind: BlockKind, out: BlockOutputs, layout: WeightLayout, xtxPartBytes: number) {
  // The statistics' ones row [1, B·T] (see emitAbsColumnSum), a graph input made once per graph.
  let onesV: Value | undefined;
  const ones = () => (onesV ??= g.input('ones', 'float32', [1, 'BT']));
  const stat = (k: StatKey) => {
    const v = out.inputs.get(k);
    if (!v) throw new Error(`block graph: no input ${k} in a ${blockKindKey(kind)} block`);
    return v;
  };
  const routedCount = () => {
    if (!out.routed) throw new Error(`block graph: no routing in a ${blockKindKey(kind)} block`);
    return g.op('ReduceSum', [out.routed, g.constI64([0])], { keepdims: 0 }); // [E]
  };
  // An expert's routed rows: the ones row gathered to them.
  const onesOf = (k: StatKey) => {
    const rows = out.rowsOf.get(k);
    return rows ? () => g.op('Gather', [ones(), rows], { axis: 1 }) : ones;
  };
  // XᵀX (+ the running sums fed in) in row parts: part [r0, r1) = X[:, r0:r1]ᵀ·X. 'out_in' (the CPU EP) as
  // Gemm(transA) with acc as C (β = 1); 'in_out' (GPU EPs) as MatMul(Xᵀ, X) + acc, which the WebGPU EP runs at least
  // as fast as its Gemm with a transposed operand, to the same bits (bench/RESULTS.md).
  const lins = blockLinears(cfg, b);
  const emitXtx = (k: StatKey, v: Value, acc: boolean) => {
    const parts = xtxParts(statWidth(cfg, lins, k), xtxPartBytes);
    const vt = layout === 'in_out' ? g.op('Transpose', [v], { perm: [1, 0] }) : null;
    parts.forEach(([r0, r1], p) => {
      const c = acc ? [g.input(xtxName(k, p, parts.length, 'acc_'), 'float32', [r1 - r0, 'n'])] : [];
      const whole = parts.length === 1;
      let y: Value;
      if (vt) {
        const a = whole ? vt : g.op('Slice', [vt, g.constI64([r0]), g.constI64([r1]), g.constI64([0])]);
        y = g.op('MatMul', [a, v]);
        if (acc) y = g.op('Add', [y, c[0]]);
      } else {
        const xp = whole ? v : g.op('Slice', [v, g.constI64([r0]), g.constI64([r1]), g.constI64([1])]);
        y = g.op('Gemm', [xp, v, ...c], { transA: 1 });
      }
      g.output(y, xtxName(k, p, parts.length));
    });
  };
  const stats = (k: StatKey | 'routing') => {
    if (k === 'routing') return void g.output(routedCount(), 'routing_count');
    const v = stat(k);
    emitXtx(k, v, false);
    g.output(emitAbsColumnSum(g, v, onesOf(k)), `${k}_abssum`);
  };
  const accStats = (k: StatKey | 'routing') => {
    if (k === 'routing') return void g.output(g.op('Add', [g.input('routing_acc_count', 'float32', [cfg.moe!.numExperts]), routedCount()]), 'routing_count');
    const v = stat(k);
    emitXtx(k, v, true);
    g.output(g.op('Add', [g.input(`${k}_acc_abssum`, 'float32', ['n']), emitAbsColumnSum(g, v, onesOf(k))]), `${k}_abssum`);
  };
  return { stats, accStats };
}

/**
 * The engine's block graph for blocks of `kind`: inputs x [B, T, H] and every block tensor (named by checkpoint
 * suffix), outputs y [B, T, H] and, per `capture`, the linear inputs or their statistics.
 */
export function buildBlockGraph(
  cfg: ModelConfig,
  ctx: number,
  capture: Capture,
  layout: WeightLayout = 'out_in',
  kind: BlockKind = blockKind(cfg, 0),
  xtxPartBytes = XTX_PART_BYTES,
): Uint8Array {
  const b = representativeBlock(cfg, kind);
  const g = new GraphBuilder(`block_${capture}`);
  const x = g.input('x', 'float32', ['B', ctx, cfg.hiddenSize]);
  const c = emitBlockConsts(g, cfg, x, ctx);
  const { tensor, linear } = blockInputEmitters(layout);
  const out = emitBlock(g, cfg, b, x, c, linear, tensor);
  const { stats, accStats } = statOutputs(g, cfg, b, kind, out, layout, xtxPartBytes);
  if (capture.startsWith('stats:')) {
    // No y: toModel prunes every node past these inputs (for attn_in, all but the first norm).
    for (const k of capture.slice('stats:'.length).split(',') as StatRequest) stats(k);
    return g.toModel();
  }
  if (capture.startsWith('accstats:')) {
    for (const k of capture.slice('accstats:'.length).split(',') as StatRequest) accStats(k);
    return g.toModel();
  }
  g.output(out.y, 'y', ['B', ctx, cfg.hiddenSize]);
  // Every input once: an expert's all-token keys are the same values as mlp_in and its unmasked activation.
  const own = [...out.inputs.keys()].filter((k) => !k.endsWith(':all'));
  // Activations come back with every B·T row (an expert's zero off its rows), as the reference traces them.
  const allRows = (k: StatKey) => {
    const v = out.inputs.get(k)!,
      rows = out.rowsOf.get(k);
    if (!rows) return v;
    const dim = (t: Value, i: number) => g.op('Slice', [g.op('Shape', [t]), g.constI64([i]), g.constI64([i + 1])]);
    const shape = g.op('Concat', [dim(out.inputs.get('mlp_in')!, 0), dim(v, 1)], { axis: 0 });
    return g.op('ScatterND', [g.op('Expand', [g.constF32(0), shape]), g.op('Unsqueeze', [rows, g.constI64([1])]), v]);
  };
  if (capture === 'activations') for (const k of own) g.output(allRows(k), k);
  if (capture === 'stats') for (const k of own) stats(k);
  return g.toModel();
}

/**
 * The stages of a dense block's true-sequential passes that start from kept intermediates (KeptValues) instead of
 * recomputing the block from x: each computes its statistic and the value the next stage starts from.
 *   attn_out: x → attention output (kept) and its statistics
 *   mlp_in:   x, attention output → h1 (kept) and the statistics of norm(h1)
 *   mlp_act:  h1 → SwiGLU activation (kept) and its statistics
 *   out:      h1, activation → y [B, T, H]
 * The kept values come out as `keep_attn_out`, `keep_h1`, `keep_act` and go in as `attn_out`, `h1`, `act`.
 */
export type KeptStage = 'attn_out' | 'mlp_in' | 'mlp_act' | 'out';

/** Graph input and output names of the kept values. */
export const KEPT_OF_STAGE = { attn_out: 'attn_out', mlp_in: 'h1', mlp_act: 'act', out: null } as const;

/** The kept values each stage graph reads, by input name. */
export const STAGE_INPUTS = { attn_out: [], mlp_in: ['attn_out'], mlp_act: ['h1'], out: ['h1', 'act'] } as const satisfies Record<KeptStage, readonly string[]>;

/** A dense block's stage graph (see KeptStage); `acc`: its statistics added to running sums fed in. */
export function buildStageGraph(cfg: ModelConfig, ctx: number, stage: KeptStage, acc: boolean, layout: WeightLayout, kind: BlockKind, xtxPartBytes = XTX_PART_BYTES): Uint8Array {
  if (kind.moe) throw new Error(`stage graphs are for dense blocks, not a ${blockKindKey(kind)} one`);
  const b = representativeBlock(cfg, kind);
  const g = new GraphBuilder(`stage_${stage}${acc ? '_acc' : ''}`);
  const x = g.input('x', 'float32', ['B', ctx, cfg.hiddenSize]);
  const c = emitBlockConsts(g, cfg, x, ctx);
  const { tensor, linear } = blockInputEmitters(layout);
  const width = { attn_out: cfg.numHeads * cfg.headDim, h1: cfg.hiddenSize, act: cfg.intermediateSize };
  const field = { attn_out: 'attnOut', h1: 'h1', act: 'act' } as const;
  const given: KeptValues = {};
  for (const n of STAGE_INPUTS[stage]) given[field[n]] = g.input(n, 'float32', ['BT', width[n]]);
  const out = emitBlock(g, cfg, b, x, c, linear, tensor, null, given);
  if (stage === 'out') {
    g.output(out.y, 'y', ['B', ctx, cfg.hiddenSize]);
    return g.toModel();
  }
  const { stats, accStats } = statOutputs(g, cfg, b, kind, out, layout, xtxPartBytes);
  (acc ? accStats : stats)(stage);
  const keep = { attn_out: out.kept.attnOut, mlp_in: out.kept.h1, mlp_act: out.kept.act }[stage];
  g.output(keep!, `keep_${KEPT_OF_STAGE[stage]}`);
  return g.toModel();
}

/** Embedding: ids [B, T] int32 → x [B, T, H] (Gather on the embedding matrix input). */
export function buildEmbedGraph(cfg: ModelConfig): Uint8Array {
  const g = new GraphBuilder('llama_embed');
  const e = g.input('embed', 'float32', [cfg.vocabSize, cfg.hiddenSize]);
  const ids = g.input('ids', 'int32', ['B', 'T']);
  g.output(g.op('Gather', [e, ids], { axis: 0 }), 'x', ['B', 'T', cfg.hiddenSize]);
  return g.toModel();
}

/**
 * Final norm + head on x [B, T, H]. 'nll': with targets [B, T−1] int32, the per-position negative
 * log-likelihood [B, T−1] of targets given positions 0..T−2 (logits never leave the graph);
 * 'logits': [B, T, V].
 */
export function emitHead(g: GraphBuilder, cfg: ModelConfig, x: Value, normW: Value, headW: Value, targets: Value | null, layout: WeightLayout = 'out_in'): Value {
  const logits = emitLogits(g, cfg, x, normW, headW, layout, !!targets);
  if (!targets) {
    const outShape = g.op('Concat', [g.op('Slice', [g.op('Shape', [x]), g.constI64([0]), g.constI64([2])]), g.constI64([cfg.vocabSize])], { axis: 0 });
    return g.op('Reshape', [logits, outShape]);
  }
  return g.op('Reshape', [emitNll(g, logits, g.op('Reshape', [targets, g.constI64([-1, 1])])), g.op('Shape', [targets])]);
}

/**
 * Logits [N, V] of x [B, T, H] after the final norm: N = B·T, or B·(T − 1) for the positions that predict a
 * token of the window (`predicting`). headW [V, H] (checkpoint layout, Gemm transB) or pre-transposed [H, V]
 * (MatMul; see WeightLayout).
 */
function emitLogits(g: GraphBuilder, cfg: ModelConfig, x: Value, normW: Value, headW: Value, layout: WeightLayout, predicting: boolean): Value {
  const xs = predicting ? g.op('Slice', [x, g.constI64([0]), g.constI64([-1]), g.constI64([1])]) : x;
  const xn = emitRmsNorm(g, g.op('Reshape', [xs, g.constI64([-1, cfg.hiddenSize])]), normW, cfg.rmsNormEps);
  return layout === 'out_in' ? g.op('Gemm', [xn, headW], { transB: 1 }) : g.op('MatMul', [xn, headW]);
}

/** logsumexp over the last axis [N, 1], max-shifted (ReduceMax/Exp/ReduceSum/Log: the WebGPU EP lacks LogSoftmax). */
function emitLogSumExp(g: GraphBuilder, logits: Value): Value {
  const mx = g.op('ReduceMax', [logits], { axes: [-1], keepdims: 1 });
  return g.op('Add', [g.op('Log', [g.op('ReduceSum', [g.op('Exp', [g.op('Sub', [logits, mx])]), g.constI64([-1])], { keepdims: 1 })]), mx]);
}

/** NLL [N, 1] of targets [N, 1] (int32) under logits [N, V]: logsumexp − logit[target] (the [N, V] log-probabilities are never written). */
export function emitNll(g: GraphBuilder, logits: Value, targets: Value): Value {
  return g.op('Sub', [emitLogSumExp(g, logits), g.op('GatherElements', [logits, targets], { axis: 1 })]);
}

export function buildHeadGraph(cfg: ModelConfig, mode: 'nll' | 'logits' | 'nll_kl', layout: WeightLayout = 'out_in'): Uint8Array {
  const g = new GraphBuilder(`llama_head_${mode}`);
  const x = g.input('x', 'float32', ['B', 'T', cfg.hiddenSize]);
  const headShape = layout === 'out_in' ? [cfg.vocabSize, cfg.hiddenSize] : [cfg.hiddenSize, cfg.vocabSize];
  const normW = g.input('norm', 'float32', [cfg.hiddenSize]);
  const headW = g.input('head', 'float32', headShape);
  const targets = mode === 'logits' ? null : g.input('targets', 'int32', ['B', 'Tm1']);
  if (mode !== 'nll_kl') {
    g.output(emitHead(g, cfg, x, normW, headW, targets, layout), mode);
    return g.toModel();
  }
  // KL(reference ‖ model) of the next-token distributions at the T − 1 predicting positions, next to the NLL.
  const xr = g.input('x_ref', 'float32', ['B', 'T', cfg.hiddenSize]);
  const normR = g.input('norm_ref', 'float32', [cfg.hiddenSize]);
  const headR = g.input('head_ref', 'float32', headShape);
  const lq = emitLogits(g, cfg, x, normW, headW, layout, true),
    lr = emitLogits(g, cfg, xr, normR, headR, layout, true);
  const shape = g.op('Shape', [targets!]);
  g.output(g.op('Reshape', [emitNll(g, lq, g.op('Reshape', [targets!, g.constI64([-1, 1])])), shape]), 'nll');
  g.output(g.op('Reshape', [emitKl(g, lr, lq), shape]), 'kl');
  return g.toModel();
}

/** KL(p ‖ q) [N] = Σ_v p_v (log p_v − log q_v) for logits of p and of q, [N, V] each. */
function emitKl(g: GraphBuilder, logitsP: Value, logitsQ: Value): Value {
  const lp = g.op('Sub', [logitsP, emitLogSumExp(g, logitsP)]),
    lq = g.op('Sub', [logitsQ, emitLogSumExp(g, logitsQ)]);
  return g.op('ReduceSum', [g.op('Mul', [g.op('Exp', [lp]), g.op('Sub', [lp, lq])]), g.constI64([-1])], { keepdims: 0 });
}

/** Checkpoint names of the head graph's tensors. */
export function headTensors(cfg: ModelConfig): { norm: string; head: string } {
  return { norm: 'model.norm.weight', head: headTensorName(cfg) };
}
