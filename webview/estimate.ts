// Live estimates for the config panel, from the model/inspect summary alone (no engine call):
// bits per weight (spec §3, bitsPerWeight per layer, weighted by weight count), output size and a
// rough peak memory. Pure so that unit tests can check it.

import { bitsPerWeight, layerConfigFor, type QuantizeConfig } from '../src/protocol/config';
import type { ModelSummary } from '../src/protocol/messages';

export interface Estimate {
  /** Weighted mean bits per weight over the quantized linears. */
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

/**
 * Peak memory, roughly: the model as float32, calibration activations of one block boundary
 * (inputs + outputs, float32, spilled above memoryBudgetMB), the float64 Hessians of one block
 * (one per distinct input: q/k/v share one, gate/up share one) and the float64 working copies of
 * the largest layer (W, residual, low-rank, error ≈ 4 copies).
 */
export function peakMemoryBytes(s: ModelSummary, c: QuantizeConfig): number {
  const hidden = s.linears.find((l) => l.module === 'q_proj')?.cols ?? Math.max(0, ...s.linears.map((l) => l.cols));
  const ctx = c.ctx || s.ctx || 512;
  const samples = c.calibText ? c.calibSamples : 1;
  const acts = Math.min(2 * samples * ctx * hidden * 4, c.memoryBudgetMB * 2 ** 20);
  const block0 = s.linears.filter((l) => l.block === 0);
  const distinctCols = new Map<string, number>();
  for (const l of block0) distinctCols.set(['q_proj', 'k_proj', 'v_proj'].includes(l.module) ? 'qkv' : ['gate_proj', 'up_proj'].includes(l.module) ? 'gu' : l.module, l.cols);
  const hessians = [...distinctCols.values()].reduce((a, n) => a + n * n * 8, 0);
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
  const bpw = weights ? bits / weights : 0;
  const bytesPerParam = s.params ? s.totalBytes / s.params : 2;
  const outputBytes = bits / 8 + Math.max(0, s.params - weights) * bytesPerParam;
  return { bpw, quantizedParams: s.params ? weights / s.params : 0, outputBytes, inputBytes: s.totalBytes, peakBytes: peakMemoryBytes(s, c) };
}
