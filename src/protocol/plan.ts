// A target-size run's two artefacts, shared by engine, host and webview: the measurement (each layer's
// candidate configurations with their exact bits per weight and their measured error) and the plan (one
// candidate per layer, chosen under the target). A measurement is reusable for any other target.

import type { LayerConfig } from './config';

/** One candidate configuration of one layer. */
export interface Candidate {
  /** The keys it sets over the layer's own config (method, bits, rank). */
  config: Pick<LayerConfig, 'method' | 'bits' | 'rank'>;
  /** Exact bits per weight (bitsPerWeight of the full layer shape). */
  bpw: number;
  /**
   * Its layer-output error on the calibration tokens, tr(ΔW·H·ΔWᵀ) with H from the float model, estimated
   * on a sample of rows and scaled to all of them (the loss is a sum over rows).
   */
  loss: number;
}

export interface LayerMeasurement {
  name: string;
  block: number;
  module: string;
  rows: number;
  cols: number;
  /** Rows the candidates were quantized on (every step-th row). */
  sampledRows: number;
  candidates: Candidate[];
  /**
   * How much of a perturbation of this layer's output reaches its block's output: ‖Δ block output‖² over
   * ‖ΔW·x‖² for a small random ΔW, on a few calibration windows (1 for o_proj and down_proj, which add into
   * the residual stream directly).
   */
  gain: number;
  /** Mean ‖h‖² per token of the block's float output (the residual stream the errors land in). */
  streamEnergy: number;
}

export interface Measurements {
  format: 2;
  /** What it was measured on: a measurement is only reused for the same model, calibration and base config. */
  modelPath: string;
  /** Hash of everything the errors depend on (run fingerprint of the measurement's config, without the target). */
  key: string;
  layers: LayerMeasurement[];
  seconds: number;
}

export type Allocator = 'exact' | 'greedy';

export interface PlanChoice {
  name: string;
  /** Index into the layer's measured candidates. */
  candidate: number;
}

export interface Plan {
  targetBpw: number;
  /** Σ bpw·(rows·cols) / Σ rows·cols over the quantized linears: never above the target. */
  bpw: number;
  /** Σ of the chosen candidates' losses, each weighted as the allocation weighs it (allocate.ts weightOf). */
  loss: number;
  allocator: Allocator;
  choices: PlanChoice[];
}
