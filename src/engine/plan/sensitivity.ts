// How much of a layer's output error reaches its block's output (LayerMeasurement.gain): the block run on its
// first calibration windows with each layer's weight W, and with W + ΔW (ΔW random, 10 % of W's rms); the squared
// change of the block's output over the layer's expected squared output change on the same tokens,
// E‖ΔW·x‖² = rows·σ²·Σ_t‖x_t‖² = rows·σ²·tr(H)·N/2 per N windows (H = (2/N)·ΣXᵀX). 1 for o_proj and down_proj,
// which add into the residual stream; through attention, the gate and the down projection for the others.

import type * as ort from 'onnxruntime-node';
import type { BlockLinear } from '../model/config';
import type { BlockWeights, LlamaForward } from '../model/llama_forward';
import { mulberry32 } from '../util/random';

/** Windows the gains are measured on (the calibration set's first ones). */
export const GAIN_WINDOWS = 8;
const NOISE = 0.1;

export interface BlockGainRaw {
  /** Σ‖Δy‖² of the block output over the windows, per layer name. */
  dy: Map<string, number>;
  /** σ² of each layer's ΔW entries. */
  variance: Map<string, number>;
  /** Mean ‖y‖² per token of the float block output. */
  streamEnergy: number;
}

export async function blockGainsRaw(
  fwd: LlamaForward,
  x: Float32Array,
  nb: number,
  T: number,
  w: BlockWeights,
  wT: Record<string, ort.Tensor>,
  b: number,
  lins: readonly BlockLinear[],
  suffixOf: (l: BlockLinear) => string,
  seed: number,
): Promise<BlockGainRaw> {
  const y0 = (await fwd.block(x, nb, wT, b)).y;
  let e = 0;
  for (let i = 0; i < y0.length; i++) e += y0[i] * y0[i];
  const dy = new Map<string, number>(),
    variance = new Map<string, number>();
  const u = mulberry32((seed ^ Math.imul(b + 1, 0x9e3779b1)) >>> 0);
  const gauss = () => Math.sqrt(-2 * Math.log(1 - u())) * Math.cos(2 * Math.PI * u());
  for (const lin of lins) {
    const sfx = suffixOf(lin);
    const W = w[sfx];
    let ss = 0;
    for (let i = 0; i < W.length; i++) ss += W[i] * W[i];
    const sd = NOISE * Math.sqrt(ss / W.length);
    const Wp = new Float32Array(W.length);
    for (let i = 0; i < W.length; i++) Wp[i] = W[i] + sd * gauss();
    const t = await fwd.weightTensor(sfx, Wp);
    let y1: Float32Array;
    try {
      y1 = (await fwd.block(x, nb, { ...wT, [sfx]: t }, b)).y;
    } finally {
      fwd.release(t);
    }
    let d = 0;
    for (let i = 0; i < y1.length; i++) d += (y1[i] - y0[i]) ** 2;
    dy.set(lin.name, d);
    variance.set(lin.name, sd * sd);
  }
  return { dy, variance, streamEnergy: e / (nb * T) };
}

/** The gain from the raw numbers and the layer's tr(H) (H over all N windows, nb of which were run). */
export function gainOf(raw: BlockGainRaw, lin: BlockLinear, traceH: number, nb: number): number {
  const expected = (lin.rows * raw.variance.get(lin.name)! * traceH * nb) / 2;
  return expected > 0 ? raw.dy.get(lin.name)! / expected : 0;
}
