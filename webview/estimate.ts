// Live estimates for the config panel, from the model/inspect summary alone (no engine call):
// bits per weight (spec §3, bitsPerWeight per layer, weighted by weight count), output size and a
// rough peak memory. Pure so that unit tests can check it.

import { bitsPerWeight, layerConfigFor, passHessianBytes, type QuantizeConfig } from '../src/protocol/config';
import type { ModelSummary } from '../src/protocol/messages';

export interface Estimate {
  /** Weighted mean bits per weight over the quantized linears (with a target: the target, the plan's upper bound). */
  bpw: number;
  /** Weights in quantized linears / all parameters. */
  quantizedParams: number;
  /** Quantized linears at bpw + everything else as stored. */
  outputBytes: number;
  /** Input checkpoint size, for the ratio. */
  inputBytes: number;
  /** Rough peak RAM of a run (see peakMemoryBytes). */
  peakBytes: number;
}

/** The statistic (Hessian) a linear is quantized with: q/k/v share one, gate/up share one, per expert. */
function statisticOf(module: string, expert?: number): { key: string; stage: string } {
  const role = module.replace(/^experts\.\d+\./, '').replace(/^shared_expert\./, 'shared.');
  const stage = ['q_proj', 'k_proj', 'v_proj'].includes(role)
    ? 'attn_in'
    : role === 'o_proj'
      ? 'attn_out'
      : ['gate_proj', 'up_proj', 'w1', 'w3', 'shared.gate_proj', 'shared.up_proj'].includes(role)
        ? 'mlp_in'
        : role.startsWith('shared.')
          ? 'shared_act'
          : 'mlp_act';
  return { key: `${stage}@${expert ?? ''}`, stage };
}

/**
 * Peak memory, roughly: the model as float32, calibration activations of one block boundary
 * (inputs + outputs, float32, spilled above memoryBudgetMB), the Hessians of the largest block (its
 * float32 cache for re-quantizing unless keepHessians is off, plus one pass of float64 working copies: an MoE block's experts are
 * measured in passes of at most half of memoryBudgetMB) and the float64 working copies of the largest layer (W,
 * residual, low-rank, error ≈ 4 copies).
 */
export function peakMemoryBytes(s: ModelSummary, c: QuantizeConfig): number {
  const hidden = s.linears.find((l) => l.module === 'q_proj')?.cols ?? Math.max(0, ...s.linears.map((l) => l.cols));
  const ctx = c.ctx || s.ctx || 512;
  const samples = c.calibText ? c.calibSamples : 1;
  const acts = Math.min(2 * samples * ctx * hidden * 4, c.memoryBudgetMB * 2 ** 20);
  // Per block, its statistics: key → stage and width (one pass over the linears).
  const blocks = new Map<number, Map<string, { stage: string; n: number }>>();
  for (const l of s.linears) {
    const { key, stage } = statisticOf(l.module, l.expert);
    if (!blocks.has(l.block)) blocks.set(l.block, new Map());
    blocks.get(l.block)!.set(key, { stage, n: l.cols });
  }
  let hessians = 0;
  for (const keys of blocks.values()) {
    const cache = c.keepHessians ? [...keys.values()].reduce((a, k) => a + k.n * k.n * 4, 0) : 0;
    const stages = new Map<string, number>();
    for (const k of keys.values()) stages.set(k.stage, (stages.get(k.stage) ?? 0) + k.n * k.n * 4);
    const pass = Math.max(0, ...[...stages.values()].map((v) => Math.min(v, passHessianBytes(c))));
    hessians = Math.max(hessians, cache + 2 * pass);
  }
  const largest = Math.max(0, ...s.linears.map((l) => l.rows * l.cols));
  return s.params * 4 + acts + hessians + largest * 8 * 4;
}

export function estimate(s: ModelSummary, c: QuantizeConfig): Estimate {
  let weights = 0,
    bits = 0;
  for (const l of s.linears) {
    const n = l.rows * l.cols;
    weights += n;
    bits += bitsPerWeight(layerConfigFor(c, l.name), l.rows, l.cols) * n;
  }
  // A target-size run's plan spends at most the target (the engine refuses a target below every plan).
  if (c.targetBpw > 0) bits = c.targetBpw * weights;
  const bpw = weights ? bits / weights : 0;
  const bytesPerParam = s.params ? s.totalBytes / s.params : 2;
  const outputBytes = bits / 8 + Math.max(0, s.params - weights) * bytesPerParam;
  return { bpw, quantizedParams: s.params ? weights / s.params : 0, outputBytes, inputBytes: s.totalBytes, peakBytes: peakMemoryBytes(s, c) };
}
