// The Llama forward as ONNX graphs (float32): one graph per decoder block, plus embedding and
// final-norm+head graphs. Twin of llama_ref.ts.
//
// Block weights are graph INPUTS, not initializers: one cached session per (config, ctx, capture)
// serves every block and every weight variant (float, dequantized, fake-quantized), so the pipeline
// swaps in new weights with no graph rebuild. Linears use Gemm(transB=1) on the checkpoint's
// [out, in] layout, so weights are fed as stored, never transposed in JS.
//
// The emitters (`emitBlock`, `emitHead`) are shared with run/export_onnx.ts, which supplies its
// own `LinearEmitter` (initializers, MatMulNBits, the LoPRo structure) to build one whole model.

import { GraphBuilder, type Value } from '../compute/graph';
import { blockLinears, headTensorName, type BlockLinear, type LinearInput, type LlamaConfig } from './config';
import { ropeTables } from './rope';

/** What a block graph returns besides the new hidden states. */
export type Capture =
  /** y only. */
  | 'none'
  /** y and the raw inputs of the four distinct linears, [B·T, features] each. */
  | 'activations'
  /** y and per-input statistics summed over the batch's B·T rows: xtx [n, n] = XᵀX, absSum [n] = Σ|x|. */
  | 'stats'
  /**
   * One input's statistics only, no y: the block is computed just as far as that input (the
   * pipeline's true-sequential passes need one statistic each; 'stats:attn_in' is a norm only).
   */
  | `stats:${LinearInput}`
  /**
   * As stats:<input>, added to running sums fed back in (inputs acc_xtx [n, n], acc_abssum [n]): on a
   * GPU EP the sums stay on the device across batches, one download per pass instead of one per batch.
   */
  | `accstats:${LinearInput}`;

/** Emits y = x·Wᵀ (+ bias) for one linear; x is [N, in] (2-D). */
export type LinearEmitter = (g: GraphBuilder, lin: BlockLinear, x: Value, bias: Value | null) => Value;

/** Emits a per-block float tensor (norm weights, biases): a graph input or an initializer. */
export type TensorEmitter = (g: GraphBuilder, name: string, shape: number[]) => Value;

/** Shared, per-graph constants of the block: rope tables and causal mask for this T. */
export interface BlockConsts {
  cos: Value; // [T, hd/2]
  sin: Value; // [T, hd/2]
  mask: Value; // [T, T]: 0 on and below the diagonal, -1e30 above
  /** [B, T] as int64 (for Reshape targets). */
  bt: Value;
}

/** Float32 lowest-ish additive mask value; exp underflows to exactly 0, and no -inf arithmetic. */
const MASK_NEG = -1e30;

/**
 * Rope tables sliced to the runtime T and a causal mask of T×T, from x [B, T, H].
 * `maxT` sizes the rope initializers (ctx for the engine graphs, max positions for exports).
 */
export function emitBlockConsts(g: GraphBuilder, cfg: LlamaConfig, x: Value, maxT: number): BlockConsts {
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
  return { cos: cosV, sin: sinV, mask, bt };
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
  /** The four distinct linear inputs, 2-D [B·T, features]. */
  inputs: Record<LinearInput, Value>;
}

/**
 * One decoder block on x [B, T, H]. Attention is computed grouped: q as [B, kv, group, T, hd]
 * against k/v as [B, kv, 1, T, hd] (MatMul broadcasting), which is transformers' repeat_kv
 * without materialising repeated keys.
 */
export function emitBlock(g: GraphBuilder, cfg: LlamaConfig, b: number, x: Value, c: BlockConsts, linear: LinearEmitter, tensor: TensorEmitter): BlockOutputs {
  const H = cfg.hiddenSize,
    nh = cfg.numHeads,
    nkv = cfg.numKvHeads,
    hd = cfg.headDim,
    grp = nh / nkv;
  const p = `model.layers.${b}.`;
  const lins = Object.fromEntries(blockLinears(cfg, b).map((l) => [l.module, l])) as Record<string, BlockLinear>;
  const bias = (l: BlockLinear, on: boolean) => (on ? tensor(g, `${l.name}.bias`, [l.rows]) : null);
  const lin = (m: string, xin: Value, on: boolean) => linear(g, lins[m], xin, bias(lins[m], on));
  const shape = (...rest: number[]) => g.op('Concat', [c.bt, g.constI64(rest)], { axis: 0 });

  const x2 = g.op('Reshape', [x, g.constI64([-1, H])]);
  const attnIn = emitRmsNorm(g, x2, tensor(g, p + 'input_layernorm.weight', [H]), cfg.rmsNormEps);
  const ab = cfg.attentionBias;
  const q = g.op('Transpose', [g.op('Reshape', [lin('q_proj', attnIn, ab), shape(nkv, grp, hd)])], { perm: [0, 2, 3, 1, 4] });
  const k = g.op('Transpose', [g.op('Reshape', [lin('k_proj', attnIn, ab), shape(nkv, 1, hd)])], { perm: [0, 2, 3, 1, 4] });
  const v = g.op('Transpose', [g.op('Reshape', [lin('v_proj', attnIn, ab), shape(nkv, 1, hd)])], { perm: [0, 2, 3, 1, 4] });
  const qr = emitRope(g, q, c),
    kr = emitRope(g, k, c);
  const kT = g.op('Transpose', [kr], { perm: [0, 1, 2, 4, 3] });
  const scores = g.op('Add', [g.op('Mul', [g.op('MatMul', [qr, kT]), g.constF32(1 / Math.sqrt(hd))]), c.mask]);
  const probs = g.op('Softmax', [scores], { axis: -1 });
  const ctxv = g.op('Transpose', [g.op('MatMul', [probs, v])], { perm: [0, 3, 1, 2, 4] }); // [B, T, kv, grp, hd]
  const attnOut = g.op('Reshape', [ctxv, g.constI64([-1, nh * hd])]);
  const h1 = g.op('Add', [x2, lin('o_proj', attnOut, ab)]);

  const mlpIn = emitRmsNorm(g, h1, tensor(g, p + 'post_attention_layernorm.weight', [H]), cfg.rmsNormEps);
  const mb = cfg.mlpBias;
  const gate = lin('gate_proj', mlpIn, mb);
  const mlpAct = g.op('Mul', [g.op('Mul', [gate, g.op('Sigmoid', [gate])]), lin('up_proj', mlpIn, mb)]);
  const y2 = g.op('Add', [h1, lin('down_proj', mlpAct, mb)]);
  const y = g.op('Reshape', [y2, shape(H)]);
  return { y, inputs: { attn_in: attnIn, attn_out: attnOut, mlp_in: mlpIn, mlp_act: mlpAct } };
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

/** Graph input names of block weights: the checkpoint suffix after `model.layers.{b}.`. */
export function blockTensorSuffixes(cfg: LlamaConfig): string[] {
  const names = ['input_layernorm.weight', 'post_attention_layernorm.weight'];
  for (const l of blockLinears(cfg, 0)) {
    const suffix = l.weight.slice('model.layers.0.'.length);
    names.push(suffix);
    const isAttn = suffix.startsWith('self_attn.');
    if ((isAttn && cfg.attentionBias) || (!isAttn && cfg.mlpBias)) names.push(suffix.replace(/weight$/, 'bias'));
  }
  return names;
}

/**
 * The engine's block graph: inputs x [B, T, H] and every block tensor (named by checkpoint suffix),
 * outputs y [B, T, H] and, per `capture`, the linear inputs or their statistics.
 */
export function buildBlockGraph(cfg: LlamaConfig, ctx: number, capture: Capture, layout: WeightLayout = 'out_in'): Uint8Array {
  const g = new GraphBuilder(`llama_block_${capture}`);
  const x = g.input('x', 'float32', ['B', ctx, cfg.hiddenSize]);
  const c = emitBlockConsts(g, cfg, x, ctx);
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
  const out = emitBlock(g, cfg, 0, x, c, linear, tensor);
  // The statistics' ones row [1, B·T] (see emitAbsColumnSum), a graph input made once per graph.
  let onesV: Value | undefined;
  const ones = () => (onesV ??= g.input('ones', 'float32', [1, 'BT']));
  const stats = (k: string, v: Value) => {
    g.output(g.op('Gemm', [v, v], { transA: 1 }), `${k}_xtx`);
    g.output(emitAbsColumnSum(g, v, ones), `${k}_abssum`);
  };
  if (capture.startsWith('stats:')) {
    // No y: toModel prunes every node past this input (for attn_in, all but the first norm).
    const k = capture.slice('stats:'.length) as LinearInput;
    stats(k, out.inputs[k]);
    return g.toModel();
  }
  if (capture.startsWith('accstats:')) {
    const k = capture.slice('accstats:'.length) as LinearInput,
      v = out.inputs[k];
    const accX = g.input('acc_xtx', 'float32', ['n', 'n']),
      accA = g.input('acc_abssum', 'float32', ['n']);
    g.output(g.op('Gemm', [v, v, accX], { transA: 1 }), `${k}_xtx`); // XᵀX + acc (Gemm's C, β = 1)
    g.output(g.op('Add', [accA, emitAbsColumnSum(g, v, ones)]), `${k}_abssum`);
    return g.toModel();
  }
  g.output(out.y, 'y', ['B', ctx, cfg.hiddenSize]);
  if (capture === 'activations') for (const [k, v] of Object.entries(out.inputs)) g.output(v, k);
  if (capture === 'stats') for (const [k, v] of Object.entries(out.inputs)) stats(k, v);
  return g.toModel();
}

/** Embedding: ids [B, T] int32 → x [B, T, H] (Gather on the embedding matrix input). */
export function buildEmbedGraph(cfg: LlamaConfig): Uint8Array {
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
export function emitHead(g: GraphBuilder, cfg: LlamaConfig, x: Value, normW: Value, headW: Value, targets: Value | null, layout: WeightLayout = 'out_in'): Value {
  const H = cfg.hiddenSize;
  const xs = targets ? g.op('Slice', [x, g.constI64([0]), g.constI64([-1]), g.constI64([1])]) : x;
  const x2 = g.op('Reshape', [xs, g.constI64([-1, H])]);
  const xn = emitRmsNorm(g, x2, normW, cfg.rmsNormEps);
  // headW [V, H] (checkpoint layout, Gemm transB) or pre-transposed [H, V] (MatMul; see WeightLayout).
  const logits = layout === 'out_in' ? g.op('Gemm', [xn, headW], { transB: 1 }) : g.op('MatMul', [xn, headW]);
  const outShape = g.op('Concat', [g.op('Slice', [g.op('Shape', [xs]), g.constI64([0]), g.constI64([2])]), g.constI64([cfg.vocabSize])], { axis: 0 });
  if (!targets) return g.op('Reshape', [logits, outShape]);
  return g.op('Reshape', [emitNll(g, logits, g.op('Reshape', [targets, g.constI64([-1, 1])])), g.op('Shape', [targets])]);
}

/**
 * NLL [N, 1] of targets [N, 1] (int32) under logits [N, V]: logsumexp − logit[target], max-shifted.
 * ReduceMax/Exp/ReduceSum/Log rather than LogSoftmax (which the WebGPU EP lacks), and the [N, V]
 * log-probabilities are never written.
 */
export function emitNll(g: GraphBuilder, logits: Value, targets: Value): Value {
  const mx = g.op('ReduceMax', [logits], { axes: [-1], keepdims: 1 });
  const lse = g.op('Add', [g.op('Log', [g.op('ReduceSum', [g.op('Exp', [g.op('Sub', [logits, mx])]), g.constI64([-1])], { keepdims: 1 })]), mx]);
  return g.op('Sub', [lse, g.op('GatherElements', [logits, targets], { axis: 1 })]);
}

export function buildHeadGraph(cfg: LlamaConfig, mode: 'nll' | 'logits', layout: WeightLayout = 'out_in'): Uint8Array {
  const g = new GraphBuilder(`llama_head_${mode}`);
  const x = g.input('x', 'float32', ['B', 'T', cfg.hiddenSize]);
  const normW = g.input('norm', 'float32', [cfg.hiddenSize]);
  const headW = g.input('head', 'float32', layout === 'out_in' ? [cfg.vocabSize, cfg.hiddenSize] : [cfg.hiddenSize, cfg.vocabSize]);
  const targets = mode === 'nll' ? g.input('targets', 'int32', ['B', 'Tm1']) : null;
  g.output(emitHead(g, cfg, x, normW, headW, targets, layout), mode);
  return g.toModel();
}

/** Checkpoint names of the head graph's tensors. */
export function headTensors(cfg: LlamaConfig): { norm: string; head: string } {
  return { norm: 'model.norm.weight', head: headTensorName(cfg) };
}
