// Naive float64 Llama forward of one window: the `*_ref` twin of llama_graph.ts for tests.
// Mirrors transformers' LlamaForCausalLM (eager attention): RMSNorm, RoPE (rotate_half layout),
// grouped-query attention with a causal mask, SwiGLU MLP, optional tied head. Slow by design
// (plain loops, float64 sums): use on tiny models and a few windows only.

import { headTensorName, type LlamaConfig } from './config';
import { ropeInvFreq } from './rope';

export type SyncWeights = (name: string) => Float32Array;

/** y[t,:] = x[t,:] / sqrt(mean(x²) + eps) * w */
export function rmsNormRef(x: Float64Array, rows: number, cols: number, w: Float32Array, eps: number): Float64Array {
  const y = new Float64Array(rows * cols);
  for (let t = 0; t < rows; t++) {
    let ss = 0;
    for (let j = 0; j < cols; j++) ss += x[t * cols + j] ** 2;
    const r = 1 / Math.sqrt(ss / cols + eps);
    for (let j = 0; j < cols; j++) y[t * cols + j] = x[t * cols + j] * r * w[j];
  }
  return y;
}

/** y = x · Wᵀ (+ b): x [rows, inF], W [outF, inF] row-major (the checkpoint layout). */
export function linearRef(x: Float64Array, rows: number, inF: number, w: Float32Array, outF: number, bias?: Float32Array): Float64Array {
  const y = new Float64Array(rows * outF);
  for (let t = 0; t < rows; t++)
    for (let o = 0; o < outF; o++) {
      let s = bias ? bias[o] : 0;
      const xo = t * inF,
        wo = o * inF;
      for (let i = 0; i < inF; i++) s += x[xo + i] * w[wo + i];
      y[t * outF + o] = s;
    }
  return y;
}

/** In-place RoPE on x [T, nHeads, headDim]: out = x·cos + rotate_half(x)·sin. */
export function applyRopeRef(x: Float64Array, T: number, nHeads: number, headDim: number, invFreq: Float64Array): void {
  const half = headDim / 2;
  for (let t = 0; t < T; t++)
    for (let h = 0; h < nHeads; h++) {
      const o = (t * nHeads + h) * headDim;
      for (let i = 0; i < half; i++) {
        const a = t * invFreq[i],
          c = Math.cos(a),
          s = Math.sin(a);
        const x1 = x[o + i],
          x2 = x[o + half + i];
        x[o + i] = x1 * c - x2 * s;
        x[o + half + i] = x2 * c + x1 * s;
      }
    }
}

export interface RefBlockTrace {
  /** Inputs of the four distinct linears (attn_in, attn_out, mlp_in, mlp_act), row-major [T, features]. */
  attnIn: Float64Array;
  attnOut: Float64Array;
  mlpIn: Float64Array;
  mlpAct: Float64Array;
}

/** One decoder block on hidden states x [T, H]; returns the new hidden states and the linear inputs. */
export function blockRef(cfg: LlamaConfig, b: number, x: Float64Array, T: number, W: SyncWeights): { y: Float64Array; trace: RefBlockTrace } {
  const H = cfg.hiddenSize,
    nh = cfg.numHeads,
    nkv = cfg.numKvHeads,
    hd = cfg.headDim,
    I = cfg.intermediateSize;
  const p = `model.layers.${b}.`;
  const opt = (n: string) => (cfg.attentionBias ? W(n) : undefined);
  const optM = (n: string) => (cfg.mlpBias ? W(n) : undefined);
  const attnIn = rmsNormRef(x, T, H, W(p + 'input_layernorm.weight'), cfg.rmsNormEps);
  const q = linearRef(attnIn, T, H, W(p + 'self_attn.q_proj.weight'), nh * hd, opt(p + 'self_attn.q_proj.bias'));
  const k = linearRef(attnIn, T, H, W(p + 'self_attn.k_proj.weight'), nkv * hd, opt(p + 'self_attn.k_proj.bias'));
  const v = linearRef(attnIn, T, H, W(p + 'self_attn.v_proj.weight'), nkv * hd, opt(p + 'self_attn.v_proj.bias'));
  const inv = ropeInvFreq(cfg, T);
  applyRopeRef(q, T, nh, hd, inv);
  applyRopeRef(k, T, nkv, hd, inv);
  const group = nh / nkv,
    scale = 1 / Math.sqrt(hd);
  const attnOut = new Float64Array(T * nh * hd);
  const scores = new Float64Array(T);
  for (let h = 0; h < nh; h++) {
    const kvh = Math.floor(h / group); // transformers repeat_kv: head h reads kv head h // group
    for (let t = 0; t < T; t++) {
      let mx = -Infinity;
      for (let s = 0; s <= t; s++) {
        let d = 0;
        for (let i = 0; i < hd; i++) d += q[(t * nh + h) * hd + i] * k[(s * nkv + kvh) * hd + i];
        scores[s] = d * scale;
        if (scores[s] > mx) mx = scores[s];
      }
      let z = 0;
      for (let s = 0; s <= t; s++) z += scores[s] = Math.exp(scores[s] - mx);
      const o = (t * nh + h) * hd;
      for (let s = 0; s <= t; s++) {
        const pr = scores[s] / z;
        for (let i = 0; i < hd; i++) attnOut[o + i] += pr * v[(s * nkv + kvh) * hd + i];
      }
    }
  }
  const ao = linearRef(attnOut, T, nh * hd, W(p + 'self_attn.o_proj.weight'), H, opt(p + 'self_attn.o_proj.bias'));
  const h1 = new Float64Array(T * H);
  for (let i = 0; i < h1.length; i++) h1[i] = x[i] + ao[i];
  const mlpIn = rmsNormRef(h1, T, H, W(p + 'post_attention_layernorm.weight'), cfg.rmsNormEps);
  const g = linearRef(mlpIn, T, H, W(p + 'mlp.gate_proj.weight'), I, optM(p + 'mlp.gate_proj.bias'));
  const u = linearRef(mlpIn, T, H, W(p + 'mlp.up_proj.weight'), I, optM(p + 'mlp.up_proj.bias'));
  const mlpAct = new Float64Array(T * I);
  for (let i = 0; i < mlpAct.length; i++) mlpAct[i] = (g[i] / (1 + Math.exp(-g[i]))) * u[i];
  const d = linearRef(mlpAct, T, I, W(p + 'mlp.down_proj.weight'), H, optM(p + 'mlp.down_proj.bias'));
  const y = new Float64Array(T * H);
  for (let i = 0; i < y.length; i++) y[i] = h1[i] + d[i];
  return { y, trace: { attnIn, attnOut, mlpIn, mlpAct } };
}

export function embedRef(cfg: LlamaConfig, ids: ArrayLike<number>, W: SyncWeights): Float64Array {
  const H = cfg.hiddenSize,
    E = W('model.embed_tokens.weight');
  const x = new Float64Array(ids.length * H);
  for (let t = 0; t < ids.length; t++) for (let j = 0; j < H; j++) x[t * H + j] = E[ids[t] * H + j];
  return x;
}

/** Final norm + head: logits [T, V]. */
export function headRef(cfg: LlamaConfig, x: Float64Array, T: number, W: SyncWeights): Float64Array {
  const xn = rmsNormRef(x, T, cfg.hiddenSize, W('model.norm.weight'), cfg.rmsNormEps);
  return linearRef(xn, T, cfg.hiddenSize, W(headTensorName(cfg)), cfg.vocabSize);
}

/** Full forward of one window → logits [T, V] (float64). */
export function forwardRef(cfg: LlamaConfig, ids: ArrayLike<number>, W: SyncWeights): Float64Array {
  const T = ids.length;
  let x = embedRef(cfg, ids, W);
  for (let b = 0; b < cfg.numLayers; b++) x = blockRef(cfg, b, x, T, W).y;
  return headRef(cfg, x, T, W);
}

/** Per-position NLL of ids[t+1] given ids[..t] from logits [T, V]: length T−1. */
export function nllFromLogitsRef(logits: Float64Array, ids: ArrayLike<number>, V: number): Float64Array {
  const T = ids.length,
    out = new Float64Array(T - 1);
  for (let t = 0; t < T - 1; t++) {
    let mx = -Infinity;
    for (let j = 0; j < V; j++) mx = Math.max(mx, logits[t * V + j]);
    let z = 0;
    for (let j = 0; j < V; j++) z += Math.exp(logits[t * V + j] - mx);
    out[t] = Math.log(z) + mx - logits[t * V + ids[t + 1]];
  }
  return out;
}
