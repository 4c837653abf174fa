// Naive float64 forward of one window: the `*_ref` twin of llama_graph.ts for tests. Mirrors transformers'
// decoders of family.ts (eager attention): RMSNorm, RoPE (rotate_half layout), q/k biases and per-head q/k
// RMSNorm where the family has them, grouped-query attention with a causal (or sliding-window) mask, a SwiGLU
// MLP or a mixture of SwiGLU experts (softmax router, top-k by sorting, optional renormalisation, Qwen2-MoE's
// gated shared expert), optional tied head. Slow by design (plain loops, float64 sums): use on tiny models
// and a few windows only.

import { blockKind, blockLinears, headTensorName, moeTensorNames, type ModelConfig, type StatKey } from './config';
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
  /** The linears' inputs by statistic key, row-major [T, features]; an expert's zero on rows not routed to it. */
  inputs: Map<StatKey, Float64Array>;
  /** Per expert of a sparse block: the rows routed to it (top-k of the router). */
  routed: Map<number, boolean[]>;
}

function swigluRef(g: Float64Array, u: Float64Array): Float64Array {
  const a = new Float64Array(g.length);
  for (let i = 0; i < a.length; i++) a[i] = (g[i] / (1 + Math.exp(-g[i]))) * u[i];
  return a;
}

/** Block b on hidden states x [T, H]; returns the new hidden states and the linear inputs. */
export function blockRef(cfg: ModelConfig, b: number, x: Float64Array, T: number, W: SyncWeights): { y: Float64Array; trace: RefBlockTrace } {
  const H = cfg.hiddenSize,
    nh = cfg.numHeads,
    nkv = cfg.numKvHeads,
    hd = cfg.headDim;
  const p = `model.layers.${b}.`;
  const lins = blockLinears(cfg, b);
  const byModule = Object.fromEntries(lins.map((l) => [l.module, l]));
  const inputs = new Map<StatKey, Float64Array>(),
    routed = new Map<number, boolean[]>();
  const lin = (module: string, xin: Float64Array, biased: boolean) => {
    const l = byModule[module];
    return linearRef(xin, T, l.cols, W(l.weight), l.rows, biased ? W(`${l.name}.bias`) : undefined);
  };
  const attnIn = rmsNormRef(x, T, H, W(p + 'input_layernorm.weight'), cfg.rmsNormEps);
  inputs.set('attn_in', attnIn);
  let q = lin('q_proj', attnIn, cfg.qkvBias);
  let k = lin('k_proj', attnIn, cfg.qkvBias);
  const v = lin('v_proj', attnIn, cfg.qkvBias);
  if (cfg.qkNorm) {
    q = rmsNormRef(q, T * nh, hd, W(p + 'self_attn.q_norm.weight'), cfg.rmsNormEps);
    k = rmsNormRef(k, T * nkv, hd, W(p + 'self_attn.k_norm.weight'), cfg.rmsNormEps);
  }
  const inv = ropeInvFreq(cfg, T);
  applyRopeRef(q, T, nh, hd, inv);
  applyRopeRef(k, T, nkv, hd, inv);
  const group = nh / nkv,
    scale = 1 / Math.sqrt(hd);
  // transformers' sliding window: key s is visible to query t iff t − window < s ≤ t.
  const window = blockKind(cfg, b).sliding ? cfg.slidingWindow! : Infinity;
  const attnOut = new Float64Array(T * nh * hd);
  const scores = new Float64Array(T);
  for (let h = 0; h < nh; h++) {
    const kvh = Math.floor(h / group); // transformers repeat_kv: head h reads kv head h // group
    for (let t = 0; t < T; t++) {
      const s0 = Math.max(0, t - window + 1);
      let mx = -Infinity;
      for (let s = s0; s <= t; s++) {
        let d = 0;
        for (let i = 0; i < hd; i++) d += q[(t * nh + h) * hd + i] * k[(s * nkv + kvh) * hd + i];
        scores[s] = d * scale;
        if (scores[s] > mx) mx = scores[s];
      }
      let z = 0;
      for (let s = s0; s <= t; s++) z += scores[s] = Math.exp(scores[s] - mx);
      const o = (t * nh + h) * hd;
      for (let s = s0; s <= t; s++) {
        const pr = scores[s] / z;
        for (let i = 0; i < hd; i++) attnOut[o + i] += pr * v[(s * nkv + kvh) * hd + i];
      }
    }
  }
  inputs.set('attn_out', attnOut);
  const ao = lin('o_proj', attnOut, cfg.oBias);
  const h1 = new Float64Array(T * H);
  for (let i = 0; i < h1.length; i++) h1[i] = x[i] + ao[i];
  const mlpIn = rmsNormRef(h1, T, H, W(p + 'post_attention_layernorm.weight'), cfg.rmsNormEps);
  inputs.set('mlp_in', mlpIn);
  const out = new Float64Array(T * H);
  const moeNames = moeTensorNames(cfg, b);
  if (!moeNames) {
    const [, , , , gate, up, down] = lins;
    const act = swigluRef(lin(gate.module, mlpIn, cfg.mlpBias), lin(up.module, mlpIn, cfg.mlpBias));
    inputs.set('mlp_act', act);
    out.set(lin(down.module, act, cfg.mlpBias));
  } else {
    const moe = cfg.moe!,
      E = moe.numExperts;
    const logits = linearRef(mlpIn, T, H, W(moeNames.router), E);
    const weights = new Float64Array(T * E); // routing weight of (row, expert): 0 off the top-k
    for (let t = 0; t < T; t++) {
      let mx = -Infinity,
        z = 0;
      for (let e = 0; e < E; e++) mx = Math.max(mx, logits[t * E + e]);
      const pr = Array.from({ length: E }, (_, e) => Math.exp(logits[t * E + e] - mx));
      for (const v of pr) z += v;
      const top = pr
        .map((v, e) => [v / z, e] as const)
        .sort((a, b2) => b2[0] - a[0] || a[1] - b2[1])
        .slice(0, moe.topK);
      const sum = top.reduce((s2, [v]) => s2 + v, 0);
      for (const [v, e] of top) weights[t * E + e] = moe.normTopK ? v / sum : v;
    }
    for (let e = 0; e < E; e++) {
      const on = Array.from({ length: T }, (_, t) => weights[t * E + e] > 0);
      routed.set(e, on);
      const [gate, up, down] = lins.filter((l) => l.expert === e);
      const act = swigluRef(lin(gate.module, mlpIn, false), lin(up.module, mlpIn, false));
      const y = lin(down.module, act, false);
      const xin = Float64Array.from(mlpIn),
        ain = Float64Array.from(act);
      for (let t = 0; t < T; t++) {
        if (!on[t]) {
          xin.fill(0, t * H, (t + 1) * H);
          ain.fill(0, t * gate.rows, (t + 1) * gate.rows);
        }
        for (let j = 0; j < H; j++) out[t * H + j] += weights[t * E + e] * y[t * H + j];
      }
      inputs.set(`mlp_in@${e}`, xin);
      inputs.set(`mlp_act@${e}`, ain);
    }
    if (moeNames.sharedGate) {
      const [gate, up, down] = lins.filter((l) => l.module.startsWith('shared_expert.'));
      const act = swigluRef(lin(gate.module, mlpIn, false), lin(up.module, mlpIn, false));
      inputs.set('shared_act', act);
      const y = lin(down.module, act, false);
      const sg = linearRef(mlpIn, T, H, W(moeNames.sharedGate), 1);
      for (let t = 0; t < T; t++) {
        const s2 = 1 / (1 + Math.exp(-sg[t]));
        for (let j = 0; j < H; j++) out[t * H + j] += s2 * y[t * H + j];
      }
    }
  }
  const y = new Float64Array(T * H);
  for (let i = 0; i < y.length; i++) y[i] = h1[i] + out[i];
  return { y, trace: { inputs, routed } };
}

export function embedRef(cfg: ModelConfig, ids: ArrayLike<number>, W: SyncWeights): Float64Array {
  const H = cfg.hiddenSize,
    E = W('model.embed_tokens.weight');
  const x = new Float64Array(ids.length * H);
  for (let t = 0; t < ids.length; t++) for (let j = 0; j < H; j++) x[t * H + j] = E[ids[t] * H + j];
  return x;
}

/** Final norm + head: logits [T, V]. */
export function headRef(cfg: ModelConfig, x: Float64Array, T: number, W: SyncWeights): Float64Array {
  const xn = rmsNormRef(x, T, cfg.hiddenSize, W('model.norm.weight'), cfg.rmsNormEps);
  return linearRef(xn, T, cfg.hiddenSize, W(headTensorName(cfg)), cfg.vocabSize);
}

/** Full forward of one window → logits [T, V] (float64). */
export function forwardRef(cfg: ModelConfig, ids: ArrayLike<number>, W: SyncWeights): Float64Array {
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
