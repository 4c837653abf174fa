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
//
// This file: the driver (dead inputs, damping and Hinv as GPTQ's, then the backend's loop), the loop's
// kernels (VqStep, the codebook points) and the CPU loop itself (vqLoopSteps); gptvq_ref.ts is the twin.

import { MAX_CODEBOOK_LOG2, VQ_DIMS } from '../../protocol/config';
import { ProtocolError } from '../../protocol/rpc';
import { ErrorCode } from '../../protocol/messages';
import type { LayerSession, Mat, VqLoopResult } from './backend';
import { deadInputs, prepareHessian, type Prepared } from './gptq';
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
  /** Hinv of this H prepared by the caller (gptq.ts prepareShared), shared by several bit widths; not freed. */
  prepared?: Prepared;
}

export interface GptvqResult extends VqLoopResult {
  deadColumns: number;
  damp: number;
  /** H_d not positive definite: Hinv = I, no error feedback. */
  choleskyFallback: boolean;
  seconds: { kmeans?: number; cholesky: number; loop: number };
}

const now = () => performance.now() / 1000;

/** GPTVQ of W with H on session `s` (`consume`: W and H are given away, as gptq()). */
export async function gptvq(s: LayerSession, W: Mat, H: Mat, opts: GptvqOptions, consume = false): Promise<GptvqResult> {
  const where = opts.name ?? 'gptvq';
  const { cols } = W;
  const shape = gptvqShape(cols, opts, where);
  if (!consume) {
    W = await s.copy(W);
    H = await s.copy(H);
  }
  try {
    const t0 = now();
    const hDiag = await s.diagonal(H);
    const dead = deadInputs(hDiag);
    if (dead.length) await s.markDead(W, H, dead);
    for (const j of dead) hDiag[j] = 1;
    const order = Int32Array.from({ length: cols }, (_, k) => k);
    const p = opts.prepared ?? (await prepareHessian(s, H, order, hDiag, opts.percDamp ?? 0.01, where, opts.onWarning));
    s.free(H);
    const t1 = now();
    const q = await s.gptvqLoop(W, p.Hinv, {
      vqDim: shape.d,
      bits: opts.bits,
      groupSize: opts.groupSize,
      blockSize: shape.B,
      kmeansIters: opts.kmeansIters ?? 20,
      seed: opts.seed,
    });
    if (!opts.prepared) s.free(p.Hinv);
    const t2 = now();
    return {
      ...q,
      deadColumns: dead.length,
      damp: p.damp,
      choleskyFallback: p.choleskyFallback,
      seconds: { ...q.seconds, cholesky: t1 - t0, loop: t2 - t1 - (q.seconds.kmeans ?? 0) },
    };
  } finally {
    s.free(W, H);
  }
}

/**
 * What the loop asks its driver for: a codebook (k-means of N weighted d-vectors into K centroids; the
 * driver answers with the centroids), or the lazy update W[:, i2:] −= Err·U[i1:i2, i2:] (answered with nothing).
 */
export type VqRequest = KMeansRequest | { kind: 'lazy'; err: Float64Array; count: number; i1: number; i2: number };

export interface KMeansRequest {
  kind: 'kmeans';
  pts: Float64Array;
  wts: Float64Array;
  N: number;
  d: number;
  K: number;
  iters: number;
  seed: number;
}

/**
 * GPTVQ's loop over the whole rows×cols W (float64, modified) with U = Hinv (upper factor), as a generator
 * that hands its driver each group's codebook k-means and each lazy update (on this thread, or split over
 * the CPU backend's workers: the same bits). Returns the codes, the FP16 codebooks and R̂′ (the chosen entries).
 */
export function* vqLoopSteps(
  W: Float64Array,
  rows: number,
  cols: number,
  U: Float64Array,
  spec: { vqDim: number; bits: number; groupSize: number; blockSize: number; kmeansIters: number; seed: number },
): Generator<VqRequest, VqLoopResult & { Q: Float32Array }, Float64Array | undefined> {
  const { d, g, K, B } = gptvqShape(cols, spec, 'gptvq');
  const G = Math.ceil(cols / g),
    V = cols / d;
  const Q = new Float32Array(rows * cols);
  const codes = new Uint16Array(rows * V);
  const codebooks = new Float32Array(G * K * d),
    codebookBits = new Uint16Array(G * K * d);
  const Err = new Float64Array(rows * B);
  const Ud = Float64Array.from({ length: cols }, (_, c) => U[c * cols + c]);
  const step = new VqStep(rows, cols, d, K);
  let loss = 0,
    tK = 0;
  for (let i1 = 0; i1 < cols; i1 += B) {
    const i2 = Math.min(i1 + B, cols),
      count = i2 - i1;
    for (let j = i1; j < i2; j += d) {
      if (j % g === 0) {
        const tk = now();
        const { pts, wts, N } = codebookPoints(W, cols, 0, rows, j, Math.min(j + g, cols), d, Ud);
        const cb = yield { kind: 'kmeans', pts, wts, N, d, K, iters: spec.kmeansIters, seed: spec.seed + j };
        step.setCodebook(cb!, codebooks, codebookBits, j / g);
        tK += now() - tk;
      }
      loss += step.run(W, cols, 0, U, cols, 0, j, i1, i2, Err, count, codes, Q);
    }
    if (i2 < cols) yield { kind: 'lazy', err: Err, count, i1, i2 };
  }
  return { Q, codes, codebooks, codebookBits, groups: G, entries: K, loss, seconds: { kmeans: tK } };
}

/** Vector dimension d, group width g, codebook entries K and lazy batch B of a GPTVQ call (validated). */
export function gptvqShape(cols: number, opts: Pick<GptvqOptions, 'vqDim' | 'bits' | 'groupSize' | 'blockSize'>, where: string): { d: number; g: number; K: number; B: number } {
  const d = opts.vqDim;
  const g = opts.groupSize === -1 ? cols : opts.groupSize;
  if (!(VQ_DIMS as readonly number[]).includes(d)) throw new ProtocolError(ErrorCode.BadConfig, `vqDim must be ${VQ_DIMS.join(', ')}, got ${d}`, where);
  if (cols % d !== 0 || g % d !== 0)
    throw new ProtocolError(
      ErrorCode.BadConfig,
      `GPTVQ needs cols (${cols}) and groupSize (${g}) divisible by vqDim ${d}`,
      where,
      'use vqDim 1 or a group size that is a multiple of vqDim',
    );
  const K = 2 ** (d * opts.bits);
  if (d * opts.bits > MAX_CODEBOOK_LOG2)
    throw new ProtocolError(ErrorCode.BadConfig, `codebook of 2^${d * opts.bits} entries is too large (at most 2^${MAX_CODEBOOK_LOG2})`, where);
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
  constructor(
    private readonly rows: number,
    private readonly cols: number,
    private readonly d: number,
    private readonly K: number,
  ) {
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
  run(
    W: Float64Array,
    ldw: number,
    wc0: number,
    U: Float64Array,
    ldu: number,
    uc0: number,
    j: number,
    i1: number,
    i2: number,
    Err: Float64Array,
    count: number,
    codes: Uint16Array,
    Q: Float32Array,
  ): number {
    const { rows, cols, d, K, Minv, w, e, cb } = this;
    const V = cols / d;
    upperInverse(U, ldu, j - uc0, d, Minv);
    let loss = 0;
    for (let r = 0; r < rows; r++) {
      const o = r * ldw + j - wc0;
      for (let t = 0; t < d; t++) w[t] = W[o + t];
      // Nearest codeword under ‖(w − c)·U_b⁻¹‖².
      let best = 0,
        bestV = Infinity;
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
        const h = (j + a - uc0) * ldu - uc0,
          wr = r * ldw - wc0;
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

/** A codebook's k-means input: every row's d-vectors of columns [c0, c1) and their per-dimension weights. */
export function codebookPoints(
  W: Float64Array,
  ldw: number,
  wc0: number,
  rows: number,
  c0: number,
  c1: number,
  d: number,
  Ud: Float64Array,
): { pts: Float64Array; wts: Float64Array; N: number } {
  const perRow = (c1 - c0) / d,
    N = rows * perRow;
  const pts = new Float64Array(N * d),
    wts = new Float64Array(N * d);
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
