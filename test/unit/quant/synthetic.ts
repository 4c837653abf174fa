// Seeded synthetic layers for quantizer tests and bench/gptq_layer.ts: correlated, heavy-tailed
// activations (the golden README's recipe, §6, with Student-t noise) and weights with log-normal
// row/column scales. Deterministic: mulberry32 + Box–Muller.
import assert from 'node:assert/strict';
import { mulberry32 } from '../../../src/engine/util/random';
import { HessianAccumulator } from '../../../src/engine/quant/hessian';
import type { LowRankFactors } from '../../../src/engine/quant/r1svd';

export const rng = mulberry32;

export function normal(u: () => number): () => number {
  let spare: number | undefined;
  return () => {
    if (spare !== undefined) {
      const s = spare;
      spare = undefined;
      return s;
    }
    const a = u() || 1e-12,
      b = u();
    const r = Math.sqrt(-2 * Math.log(a));
    spare = r * Math.sin(2 * Math.PI * b);
    return r * Math.cos(2 * Math.PI * b);
  };
}

/**
 * tokens×cols activations X = (0.8·F·B + 0.6·E + μ)·s: a rank-k factor F·B (default k = max(1, cols/8))
 * correlates the channels, E is Student-t (ν = 3, heavy tails), μ per-channel means, s = exp(N(0, 0.5))
 * per-channel scales, and `outliers` channels ×20.
 */
export function syntheticActivations(tokens: number, cols: number, seed: number, outliers = 2, rank = Math.max(1, Math.floor(cols / 8))): Float32Array {
  const u = rng(seed),
    n = normal(u);
  const k = rank;
  const B = new Float64Array(k * cols).map(() => n() / Math.sqrt(k));
  const mu = new Float64Array(cols).map(() => 0.3 * n());
  const s = new Float64Array(cols).map(() => Math.exp(0.5 * n()));
  for (let o = 0; o < outliers; o++) s[Math.floor(u() * cols)] *= 20;
  const X = new Float32Array(tokens * cols),
    F = new Float64Array(k),
    row = new Float64Array(cols);
  const studentT = () => {
    const z = n();
    let c = 0;
    for (let i = 0; i < 3; i++) {
      const g = n();
      c += g * g;
    }
    return z / Math.sqrt(c / 3);
  };
  for (let t = 0; t < tokens; t++) {
    for (let i = 0; i < k; i++) F[i] = n();
    row.fill(0);
    for (let i = 0; i < k; i++) {
      const f = 0.8 * F[i],
        o = i * cols;
      for (let j = 0; j < cols; j++) row[j] += f * B[o + j];
    }
    for (let j = 0; j < cols; j++) X[t * cols + j] = (row[j] + 0.6 * studentT() + mu[j]) * s[j];
  }
  return X;
}

/** rows×cols weights N(0,1)/√cols with log-normal row and column scales and 0.5 % outliers ×4. */
export function syntheticWeights(rows: number, cols: number, seed: number): Float32Array {
  const u = rng(seed),
    n = normal(u);
  const rs = new Float64Array(rows).map(() => Math.exp(0.3 * n())),
    cs = new Float64Array(cols).map(() => Math.exp(0.3 * n()));
  const W = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) W[r * cols + c] = (n() / Math.sqrt(cols)) * rs[r] * cs[c] * (u() < 0.005 ? 4 : 1);
  return W;
}

/** Naive (2/N)·XᵀX in float64 (N = number of sequences). */
export function hessianNaive(X: Float32Array, tokens: number, cols: number, nsamples: number): Float64Array {
  const H = new Float64Array(cols * cols);
  for (let i = 0; i < cols; i++)
    for (let j = 0; j < cols; j++) {
      let s = 0;
      for (let t = 0; t < tokens; t++) s += X[t * cols + i] * X[t * cols + j];
      H[i * cols + j] = (2 / nsamples) * s;
    }
  return H;
}

/**
 * A calibrated synthetic layer: weights, H = (2/nsamples)·XᵀX of T correlated heavy-tailed tokens
 * (HessianAccumulator, as the pipeline builds it) and mean_t |x_tj| for LoPRo's α.
 */
export function syntheticLayer(rows: number, cols: number, T: number, seed: number, nsamples = 4): { W: Float32Array; H: Float64Array; absMean: Float64Array } {
  const W = syntheticWeights(rows, cols, seed);
  const X = syntheticActivations(T, cols, seed + 1);
  const acc = new HessianAccumulator(cols);
  acc.add(X, T, nsamples);
  const absMean = new Float64Array(cols);
  for (let t = 0; t < T; t++) for (let j = 0; j < cols; j++) absMean[j] += Math.abs(X[t * cols + j]) / T;
  return { W, H: acc.finish(), absMean };
}

/** A with a decaying spectrum (well-separated leading singular values) plus heavy-tailed weights. */
export function lowRankTestMatrix(m: number, n: number, seed: number): Float32Array {
  const W = syntheticWeights(m, n, seed);
  const B = syntheticWeights(m + n, 8, seed + 1);
  const A = new Float32Array(m * n);
  for (let i = 0; i < m; i++)
    for (let j = 0; j < n; j++) {
      let lr = 0;
      for (let k = 0; k < 8; k++) lr += (4 / (k + 1)) * B[i * 8 + k] * B[(m + j) * 8 + k];
      A[i * n + j] = W[i * n + j] + lr;
    }
  return A;
}

/** ‖A − U·Σ·V‖²_F of a factor set (the R1SVD tests). */
export function lowRankResidual2(A: Float32Array, f: LowRankFactors): number {
  const { rows: m, cols: n, rank: r } = f;
  let s = 0;
  for (let i = 0; i < m; i++)
    for (let j = 0; j < n; j++) {
      let x = A[i * n + j];
      for (let k = 0; k < r; k++) x -= f.U[i * r + k] * f.sigma[k] * f.V[k * n + j];
      s += x * x;
    }
  return s;
}

/**
 * A device R1SVD (float32 sums, factors applied as a correction) against r1svd.ts: ranks equal, σ̂ to 1e-4
 * (one FP16 ulp, 1.5e-3, when rounded), unrounded U and V to 1e-3 relative (measured ~1e-6), ≥ 98 % equal FP8
 * U codes when rounded, the residual to 1e-3 and the energy to 1e-4.
 */
export function assertR1svdAgrees(A: Float32Array, ref: LowRankFactors, dev: LowRankFactors, roundFactors: boolean): void {
  assert.equal(dev.rank, ref.rank);
  for (let k = 0; k < ref.rank; k++) {
    const rel = Math.abs(dev.sigma[k] - ref.sigma[k]) / ref.sigma[k];
    assert.ok(rel < (roundFactors ? 1.5e-3 : 1e-4), `sigma ${k} rel ${rel}`);
  }
  if (!roundFactors) {
    for (const [name, a, b] of [
      ['U', dev.U, ref.U],
      ['V', dev.V, ref.V],
    ] as const) {
      let d = 0,
        s = 0;
      for (let i = 0; i < b.length; i++) {
        d += (a[i] - b[i]) ** 2;
        s += b[i] ** 2;
      }
      assert.ok(Math.sqrt(d / s) < 1e-3, `${name} rel diff ${Math.sqrt(d / s)}`);
    }
  } else {
    let same = 0;
    for (let i = 0; i < ref.uCodes.length; i++) if (ref.uCodes[i] === dev.uCodes[i]) same++;
    assert.ok(same / ref.uCodes.length > 0.98, `uCodes agree ${same / ref.uCodes.length}`);
  }
  const eRef = lowRankResidual2(A, ref),
    eDev = lowRankResidual2(A, dev);
  assert.ok(Math.abs(eDev - eRef) / eRef < 1e-3, `residual ${eDev} vs ${eRef}`);
  assert.ok(Math.abs(dev.energy - ref.energy) < 1e-4, `energy ${dev.energy} vs ${ref.energy}`);
}
