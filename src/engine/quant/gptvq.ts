// GPTVQ (van Baalen et al., arXiv 2402.15319): vector quantization with GPTQ-style error feedback.
// This is LoPRo's `lopro_v` residual quantizer (spec §1.8). Columns are taken d at a time (d =
// vqDim); every row's d consecutive weights form one vector, replaced by the nearest entry of its
// group's codebook. Grouping [R]: one codebook of K = 2^(d·bits) entries per group of g columns ×
// all rows (bitsPerWeight in protocol/config.ts charges K·d·16 bits per group), stored FP16.
// Codebooks are initialised when the loop reaches the group, on the error-updated weights, by
// k-means weighted with 1/[Hinv]_jj² (GPTVQ §3.2), then rounded to FP16 before use.
//
// Error feedback for d columns at once: with U = Hinv (upper Cholesky factor of H⁻¹) and the
// d×d diagonal block U_b, GPTQ's column-by-column recursion is equivalent to
//   E = (W_b − Q_b)·U_b⁻¹,   W[:, after] −= E·U[b, after],
// so the assignment minimises ‖(w − c)·U_b⁻¹‖² (the exact per-vector OBS loss), the in-batch update
// is that product and the lazy update across batches is GPTQ's own (gptq_kernels.lazyUpdate).

import { ProtocolError } from '../../protocol/rpc';
import { ErrorCode } from '../../protocol/messages';
import { choleskyInverseUpper } from './gptq_linalg';
import { lazyUpdate as lazyUpdateTs, type LazyUpdateFn } from './gptq_kernels';
import { assertFiniteArray } from './quantizer_checks';
import { weightedKMeans } from './kmeans';
import { encodeF16 } from './fp8';

export interface GptvqOptions {
  /** Vector dimension d (1, 2 or 4). */
  vqDim: number;
  /** Bits per weight dimension: K = 2^(d·bits) codebook entries. */
  bits: number;
  /** Columns per codebook group (multiple of d); −1 = all columns. */
  groupSize: number;
  percDamp?: number;
  /** Lazy-batch width (rounded down to a multiple of d). */
  blockSize?: number;
  kmeansIters?: number;
  seed: number;
  name?: string;
  onWarning?: (message: string) => void;
  /** Overrides the lazy trailing update W[:, i2:] −= Err·Hinv[i1:i2, i2:] (e.g. an ORT MatMul). */
  lazyUpdate?: LazyUpdateFn;
  /** Overrides the upper Cholesky factor of H⁻¹. */
  choleskyInverseUpper?: (hVals: Float64Array, n: number) => Float64Array;
}

export interface GptvqResult {
  /** Dequantized weight (rows×cols), the FP16 codebook entries. */
  Q: Float32Array;
  /** Codebook index per row per vector: rows × (cols/d). */
  codes: Uint16Array;
  /** Decoded FP16 codebooks, groups × K × d. */
  codebooks: Float32Array;
  /** FP16 bits of the codebooks, same layout. */
  codebookBits: Uint16Array;
  groups: number;
  entries: number;
  /** Σ ½‖E‖² (GPTQ's loss convention). */
  loss: number;
  choleskyFallback: boolean;
  seconds: { cholesky: number; kmeans: number; loop: number; total: number };
}

const now = () => performance.now() / 1000;

export function gptvqQuantize(wVals: Float32Array | Float64Array, rows: number, cols: number, hVals: Float32Array | Float64Array, opts: GptvqOptions): GptvqResult {
  const where = opts.name ?? 'gptvqQuantize';
  const t0 = now();
  const { d, g, K, B } = gptvqShape(cols, opts, where);
  assertFiniteArray(wVals, 'W', where);
  assertFiniteArray(hVals, 'H', where);

  const W = Float64Array.from(wVals);
  const H = Float64Array.from(hVals);
  for (let j = 0; j < cols; j++) {
    if (H[j * cols + j] !== 0) continue;
    H[j * cols + j] = 1;
    for (let r = 0; r < rows; r++) W[r * cols + j] = 0;
  }
  let diagSum = 0;
  for (let i = 0; i < cols; i++) diagSum += H[i * cols + i];
  const damp = (opts.percDamp ?? 0.01) * (diagSum / cols);
  for (let i = 0; i < cols; i++) H[i * cols + i] += damp;
  let U: Float64Array;
  let choleskyFallback = false;
  try {
    U = (opts.choleskyInverseUpper ?? choleskyInverseUpper)(H, cols);
  } catch (e) {
    if (!(e instanceof Error && e.name === 'NotPositiveDefiniteError')) throw e;
    choleskyFallback = true;
    (opts.onWarning ?? console.warn)(`${where}: damped Hessian not positive definite (${e.message}); GPTVQ without error feedback for this layer. Increase percDamp or add calibration samples.`);
    U = new Float64Array(cols * cols);
    for (let i = 0; i < cols; i++) U[i * cols + i] = 1;
  }
  const t1 = now();

  const G = Math.ceil(cols / g), V = cols / d;
  const Q = new Float32Array(rows * cols);
  const codes = new Uint16Array(rows * V);
  const codebooks = new Float32Array(G * K * d), codebookBits = new Uint16Array(G * K * d);
  const Err = new Float64Array(rows * B);
  const Ud = Float64Array.from({ length: cols }, (_, c) => U[c * cols + c]);
  const step = new VqStep(rows, cols, d, K);
  let loss = 0, tK = 0;
  for (let i1 = 0; i1 < cols; i1 += B) {
    const i2 = Math.min(i1 + B, cols), count = i2 - i1;
    for (let j = i1; j < i2; j += d) {
      if (j % g === 0) {
        const tk = now();
        const gi = j / g;
        step.setCodebook(initCodebook(W, cols, 0, rows, j, Math.min(j + g, cols), d, K, Ud, opts.kmeansIters ?? 20, opts.seed + j), codebooks, codebookBits, gi);
        tK += now() - tk;
      }
      loss += step.run(W, cols, 0, U, cols, 0, j, i1, i2, Err, count, codes, Q);
    }
    if (i2 < cols) (opts.lazyUpdate ?? lazyUpdateTs)(W, rows, cols, Err, count, U, i1, i2);
  }
  const t2 = now();
  return { Q, codes, codebooks, codebookBits, groups: G, entries: K, loss, choleskyFallback, seconds: { cholesky: t1 - t0, kmeans: tK, loop: t2 - t1 - tK, total: t2 - t0 } };
}

/** Vector dimension d, group width g, codebook entries K and lazy batch B of a GPTVQ call (validated). */
export function gptvqShape(cols: number, opts: Pick<GptvqOptions, 'vqDim' | 'bits' | 'groupSize' | 'blockSize'>, where: string): { d: number; g: number; K: number; B: number } {
  const d = opts.vqDim;
  const g = opts.groupSize === -1 ? cols : opts.groupSize;
  if (![1, 2, 4].includes(d)) throw new ProtocolError(ErrorCode.BadConfig, `vqDim must be 1, 2 or 4, got ${d}`, where);
  if (cols % d !== 0 || g % d !== 0) throw new ProtocolError(ErrorCode.BadConfig, `GPTVQ needs cols (${cols}) and groupSize (${g}) divisible by vqDim ${d}`, where, 'use vqDim 1 or a group size that is a multiple of vqDim');
  const K = 2 ** (d * opts.bits);
  if (K > 65536) throw new ProtocolError(ErrorCode.BadConfig, `codebook of 2^${d * opts.bits} entries is too large`, where);
  return { d, g, K, B: Math.max(d, Math.floor((opts.blockSize ?? 128) / d) * d) };
}

/**
 * One GPTVQ step — the d columns j … j+d−1 of every row: nearest codeword under ‖(w − c)·U_b⁻¹‖², the
 * code, Q, the error row E (into Err, rows × count from batch start i1) and the in-batch feedback
 * W[r, j+d : i2] −= E·U[j : j+d, j+d : i2]. W and U may be windows of the full matrices: W's local
 * column 0 is global column wc0 (row stride ldw), U's local row/column 0 is global uc0 (stride ldu) —
 * gptvqQuantize passes the whole matrices, quant/gptvq_dawn.ts the batch read back from the GPU.
 */
export class VqStep {
  private readonly Minv: Float64Array;
  private readonly w: Float64Array;
  private readonly e: Float64Array;
  private cb: Float64Array;
  constructor(private readonly rows: number, private readonly cols: number, private readonly d: number, private readonly K: number) {
    this.Minv = new Float64Array(d * d);
    this.w = new Float64Array(d);
    this.e = new Float64Array(d);
    this.cb = new Float64Array(K * d);
  }

  /** The group's codebook, rounded to FP16 (exactly the stored values), recorded as group gi. */
  setCodebook(cb: Float64Array, codebooks: Float32Array, codebookBits: Uint16Array, gi: number): void {
    const n = this.K * this.d;
    codebookBits.set(encodeF16(cb, cb), gi * n); // use exactly the stored FP16 values
    codebooks.set(cb, gi * n);
    this.cb = cb;
  }

  /** Returns Σ ½‖E‖² of the step. */
  run(W: Float64Array, ldw: number, wc0: number, U: Float64Array, ldu: number, uc0: number, j: number, i1: number, i2: number, Err: Float64Array, count: number, codes: Uint16Array, Q: Float32Array): number {
    const { rows, cols, d, K, Minv, w, e, cb } = this;
    const V = cols / d;
    upperInverse(U, ldu, j - uc0, d, Minv);
    let loss = 0;
    for (let r = 0; r < rows; r++) {
      const o = r * ldw + j - wc0;
      for (let t = 0; t < d; t++) w[t] = W[o + t];
      // Nearest codeword under ‖(w − c)·U_b⁻¹‖².
      let best = 0, bestV = Infinity;
      for (let c = 0; c < K; c++) {
        let s = 0;
        for (let b = 0; b < d; b++) {
          let eb = 0;
          for (let a = 0; a <= b; a++) eb += (w[a] - cb[c * d + a]) * Minv[a * d + b];
          s += eb * eb;
          if (s >= bestV) break;
        }
        if (s < bestV) {
          bestV = s;
          best = c;
        }
      }
      codes[r * V + j / d] = best;
      for (let b = 0; b < d; b++) {
        let eb = 0;
        for (let a = 0; a <= b; a++) eb += (w[a] - cb[best * d + a]) * Minv[a * d + b];
        e[b] = eb;
        Q[r * cols + j + b] = cb[best * d + b];
        Err[r * count + (j - i1) + b] = eb;
        loss += (eb * eb) / 2;
      }
      // In-batch feedback: W[r, j+d : i2] −= E·U[j : j+d, j+d : i2].
      for (let a = 0; a < d; a++) {
        const ea = e[a];
        if (ea === 0) continue;
        const h = (j + a - uc0) * ldu - uc0, wr = r * ldw - wc0;
        for (let c = j + d; c < i2; c++) W[wr + c] -= ea * U[h + c];
      }
    }
    return loss;
  }
}

/** Inverse of the d×d upper-triangular diagonal block U[j:j+d, j:j+d] (back substitution; row stride n). */
function upperInverse(U: Float64Array, n: number, j: number, d: number, out: Float64Array): void {
  out.fill(0);
  for (let c = 0; c < d; c++) {
    for (let i = c; i >= 0; i--) {
      let s = i === c ? 1 : 0;
      for (let k = i + 1; k <= c; k++) s -= U[(j + i) * n + j + k] * out[k * d + c];
      out[i * d + c] = s / U[(j + i) * n + j + i];
    }
  }
}

/**
 * k-means codebook for global columns [c0, c1) of the current W (a window: local column 0 = global wc0,
 * row stride ldw); dimension weights 1/U_jj² from U's diagonal Ud (global index).
 */
export function initCodebook(W: Float64Array, ldw: number, wc0: number, rows: number, c0: number, c1: number, d: number, K: number, Ud: Float64Array, iters: number, seed: number): Float64Array {
  const { pts, wts, N } = codebookPoints(W, ldw, wc0, rows, c0, c1, d, Ud);
  return weightedKMeans(pts, wts, N, d, K, { iters, seed }).centroids;
}

/** initCodebook's k-means input: every row's d-vectors of columns [c0, c1) and their per-dimension weights. */
export function codebookPoints(W: Float64Array, ldw: number, wc0: number, rows: number, c0: number, c1: number, d: number, Ud: Float64Array): { pts: Float64Array; wts: Float64Array; N: number } {
  const perRow = (c1 - c0) / d, N = rows * perRow;
  const pts = new Float64Array(N * d), wts = new Float64Array(N * d);
  const colW = new Float64Array(c1 - c0);
  for (let c = c0; c < c1; c++) colW[c - c0] = 1 / Ud[c] ** 2;
  for (let r = 0; r < rows; r++) {
    for (let v = 0; v < perRow; v++) {
      const p = r * perRow + v;
      for (let t = 0; t < d; t++) {
        pts[p * d + t] = W[r * ldw + c0 - wc0 + v * d + t];
        wts[p * d + t] = colW[v * d + t];
      }
    }
  }
  return { pts, wts, N };
}
