// Seeded synthetic calibration data for tests and benchmarks (clearly "synthetic Hessian" wherever
// reported): activations with heavy-tailed per-channel scales (a few outlier channels, as LLM
// activations have) and correlated channels (a shared low-dimensional factor plus noise).

import { SeededRng } from './lopro_mat';

export interface SyntheticActivations {
  /** H = 2·XᵀX/T (GPTQ's convention), cols×cols. */
  H: Float64Array;
  /** mean_t |x_tj|, the α statistics. */
  meanAbs: Float64Array;
  tokens: number;
}

export interface SynthOptions {
  tokens?: number;
  /** Dimension of the shared factor (correlation); default 8. */
  factors?: number;
  /** Share of each channel's variance from the shared factors (0..1); default 0.5. */
  correlation?: number;
  /** Fraction of outlier channels and their scale multiplier; defaults 2 % and ×12. */
  outlierFrac?: number;
  outlierScale?: number;
}

/** Synthetic activations X (T×n), never stored: H and mean|x| are accumulated on the fly. */
export function syntheticActivations(cols: number, seed: number, o: SynthOptions = {}): SyntheticActivations {
  const T = o.tokens ?? 4 * cols,
    F = o.factors ?? 8,
    rho = o.correlation ?? 0.5;
  const rng = new SeededRng(seed);
  // Heavy-tailed channel scales: log-normal body plus a few large outlier channels.
  const scale = new Float64Array(cols);
  for (let j = 0; j < cols; j++) scale[j] = Math.exp(0.6 * rng.gaussian());
  const nOut = Math.max(1, Math.round((o.outlierFrac ?? 0.02) * cols));
  for (let k = 0; k < nOut; k++) scale[rng.int(cols)] *= o.outlierScale ?? 12;
  const mix = new Float64Array(F * cols);
  for (let i = 0; i < mix.length; i++) mix[i] = rng.gaussian() / Math.sqrt(F);
  const H = new Float64Array(cols * cols),
    meanAbs = new Float64Array(cols);
  const x = new Float64Array(cols),
    z = new Float64Array(F);
  const a = Math.sqrt(rho),
    b = Math.sqrt(1 - rho);
  for (let t = 0; t < T; t++) {
    for (let f = 0; f < F; f++) z[f] = rng.gaussian();
    for (let j = 0; j < cols; j++) {
      let s = 0;
      for (let f = 0; f < F; f++) s += z[f] * mix[f * cols + j];
      x[j] = scale[j] * (a * s + b * rng.gaussian());
      meanAbs[j] += Math.abs(x[j]);
    }
    for (let i = 0; i < cols; i++) {
      const xi = x[i];
      const o2 = i * cols;
      for (let j = i; j < cols; j++) H[o2 + j] += xi * x[j];
    }
  }
  for (let i = 0; i < cols; i++) {
    meanAbs[i] /= T;
    for (let j = i; j < cols; j++) {
      const v = (2 * H[i * cols + j]) / T;
      H[i * cols + j] = v;
      H[j * cols + i] = v;
    }
  }
  return { H, meanAbs, tokens: T };
}

/**
 * A weight with a decaying spectrum plus heavy-tailed (Student-t, ν = 4) entries: the structure
 * LoPRo's low-rank part and rotation are designed for. rows×cols, typical entry ≈ `std`.
 */
export function syntheticWeight(rows: number, cols: number, seed: number, std = 0.02, lowRank = 8): Float32Array {
  const rng = new SeededRng(seed);
  const W = new Float32Array(rows * cols);
  const t4 = () => {
    const z = rng.gaussian();
    let c = 0;
    for (let k = 0; k < 4; k++) c += rng.gaussian() ** 2;
    return z / Math.sqrt(c / 4) / Math.SQRT2; // Student-t(4), unit variance
  };
  for (let i = 0; i < W.length; i++) W[i] = std * t4();
  // Add Σ_k s_k u_k v_kᵀ, u, v ~ N(0, I), s_k = std·0.6^k: the top direction's entries are as large
  // as the noise, later ones decay (a few dominant directions, like trained weights).
  const u = new Float64Array(rows),
    v = new Float64Array(cols);
  for (let k = 0; k < lowRank; k++) {
    const s = std * 0.6 ** k;
    for (let i = 0; i < rows; i++) u[i] = rng.gaussian();
    for (let j = 0; j < cols; j++) v[j] = rng.gaussian();
    for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) W[i * cols + j] += s * u[i] * v[j];
  }
  return W;
}
