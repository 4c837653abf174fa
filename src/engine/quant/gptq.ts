// GPTQ (Frantar et al., arXiv 2210.17323, Algorithm 1), written to behave exactly like the original
// `GPTQ.fasterquant` of IST-DASLab/gptq (commit 2d65066) and read like it: W, H, Hinv, W1, Err1,
// i1, i2, count, d keep the paper's / reference's names (Q1 is written straight into Q, and Losses
// is summed as it is produced). The algorithm itself is in gptq_core.ts, numbered by the steps of
// ../../../../shared/golden/README.md §5, which pins every detail (incl. the group-params quirk);
// this file holds the options, the result and the drivers.
//
// Precision: the working W, H and Hinv are float64 (README §7: f64 from the stored H gives 0
// differing codes on all 24 golden GPTQ cases; we match 23 of 24 exactly, and the 512×1024 case
// differs in 2 of 512 rows that start at a sym rounding tie); the quantizer itself has float32
// semantics (quantizer.ts), so Q = scale·(code − zero) holds bit-exactly in float32.
//
// Entry points: `gptqQuantize` (synchronous, all TypeScript), `gptqQuantizeAsync` (hooks for the
// two O(n³) parts) and gptq_ort.ts's `gptqQuantizeOrt` (those hooks wired to ONNX Runtime).

import { choleskyInverseUpper } from './gptq_linalg';
import { lazyUpdate as lazyUpdateTs, type LazyUpdateFn } from './gptq_kernels';
import { gptqCore } from './gptq_core';
import type { QuantizedWeight } from './rtn';

export { proxyLoss } from './gptq_kernels';

export interface GptqOptions {
  bits: number;
  /** Columns per group; −1 (default) = one group per row. */
  groupSize?: number;
  sym?: boolean;
  /** Group range fit: 'minmax' (default, the reference) or 'mse' (quant.py's mse=True search). */
  clip?: 'minmax' | 'mse';
  /** Damping λ = percDamp · mean(diag H) (default 0.01). */
  percDamp?: number;
  /** Lazy-batch width B (default 128). */
  blockSize?: number;
  /** Quantize columns in order of decreasing diag(H) (default false). */
  actOrder?: boolean;
  /** Group params from the un-updated, unpermuted W (default false). */
  staticGroups?: boolean;
  /**
   * A caller-chosen quantization order (perm[k] = original column quantized k-th), used like the
   * act-order permutation (dynamic groups are formed in this order). Not with actOrder. For input
   * that is already in the desired order (LoPRo's R′ with H′), leave this and actOrder unset.
   */
  perm?: Int32Array;
  /** Overrides the Cholesky of H⁻¹ (default: gptq_linalg.ts, float64 TypeScript). */
  choleskyInverseUpper?: (hVals: Float64Array, n: number) => Float64Array;
  /** Overrides the lazy trailing update (e.g. an ORT MatMul for large layers). */
  lazyUpdate?: LazyUpdateFn;
  /**
   * Two-level lazy batching: columns ≥ the end of the current span of `lazySpan` columns get the
   * updates of all its blocks in one product (K = lazySpan instead of blockSize: a better shape for a
   * MatMul engine, and fewer passes over W); columns inside the span still get each block's update at
   * once. Same results up to float64 summation order. Default blockSize (the reference's schedule).
   * Must be a multiple of blockSize; with dynamic groups also of groupSize (else blockSize is used:
   * the group-params quirk reads W past the current block).
   */
  lazySpan?: number;
  /** Receives warnings (Cholesky fallback). Default: console.warn. */
  onWarning?: (message: string) => void;
  /** Layer / tensor name for error messages. */
  name?: string;
  /**
   * false: the caller does not read Q (LoPRo reconstructs from the stored codes): drivers may leave it
   * empty (length 0) instead of dequantizing rows×cols values on the host (the fused driver does).
   */
  dequantized?: boolean;
  /**
   * W and H again as float32, already checked finite, owned by this call (a driver may modify them):
   * float32 drivers (the fused kernels) use them instead of converting and scanning W and H themselves.
   */
  f32Inputs?: { W: Float32Array; H: Float32Array };
}

export interface GptqResult extends QuantizedWeight {
  /** Quantization order: perm[k] = original column quantized k-th (identity without act-order). */
  perm: Int32Array;
  invPerm: Int32Array;
  /** Σ Losses = ½ Σ_r (W−Q)_r H_d (W−Q)_rᵀ (the reference's printed `error`). */
  loss: number;
  deadColumns: number;
  damp: number;
  /** True when H_d was not positive definite and Hinv = I was used (round-to-nearest). */
  choleskyFallback: boolean;
  seconds: { prep: number; cholesky: number; columnLoop: number; lazyUpdate: number; total: number };
}

/**
 * One lazy trailing update the core asks its driver to perform: W[:, i2:colEnd] −= Err1 @ Hinv[i1:i2, i2:colEnd]
 * (Err1 is rows×count, count = i2 − i1; colEnd = cols unless `lazySpan` > blockSize).
 */
export interface LazyUpdateRequest {
  kind: 'lazy';
  W: Float64Array; rows: number; cols: number;
  err1: Float64Array; count: number;
  hinvUpper: Float64Array; i1: number; i2: number;
  colEnd: number;
}

/** The core asks its driver for Hinv: the upper U with UᵀU = H_d⁻¹ (throw NotPositiveDefiniteError on failure). */
export interface CholeskyRequest {
  kind: 'cholesky';
  H: Float64Array;
  n: number;
}

export type CoreRequest = LazyUpdateRequest | CholeskyRequest;

/** GPTQ, synchronous: Cholesky and lazy updates in TypeScript (or the synchronous hooks of `opts`). */
export function gptqQuantize(
  wVals: Float32Array | Float64Array, rows: number, cols: number,
  hVals: Float32Array | Float64Array, opts: GptqOptions,
): GptqResult {
  const update = opts.lazyUpdate ?? lazyUpdateTs;
  const chol = opts.choleskyInverseUpper ?? choleskyInverseUpper;
  const core = gptqCore(wVals, rows, cols, hVals, opts);
  let step = core.next();
  while (!step.done) {
    const q = step.value;
    if (q.kind === 'lazy') {
      update(q.W, q.rows, q.cols, q.err1, q.count, q.hinvUpper, q.i1, q.i2, q.colEnd);
      step = core.next();
      continue;
    }
    let U: Float64Array;
    try {
      U = chol(q.H, q.n);
    } catch (e) {
      step = core.throw(e); // the core decides: fallback on NotPositiveDefiniteError, else rethrow
      continue;
    }
    step = core.next(U);
  }
  return step.value;
}

export interface GptqAsyncHooks {
  /** E.g. an ONNX Runtime MatMul (gptq_ort.ts). Default: the TypeScript kernel. */
  lazyUpdateAsync?: (req: LazyUpdateRequest) => Promise<void>;
  /** E.g. the blocked ORT Cholesky of src/engine/linalg. Default: the synchronous one. */
  choleskyInverseUpperAsync?: (hVals: Float64Array, n: number) => Promise<Float64Array>;
}

/** GPTQ with asynchronous hooks for the two O(n³) parts (same algorithm, same results up to rounding). */
export async function gptqQuantizeAsync(
  wVals: Float32Array | Float64Array, rows: number, cols: number,
  hVals: Float32Array | Float64Array, opts: GptqOptions & GptqAsyncHooks,
): Promise<GptqResult> {
  const chol = opts.choleskyInverseUpperAsync ?? (async (h: Float64Array, n: number) => (opts.choleskyInverseUpper ?? choleskyInverseUpper)(h, n));
  const update = opts.lazyUpdateAsync ?? (async (q: LazyUpdateRequest) => (opts.lazyUpdate ?? lazyUpdateTs)(q.W, q.rows, q.cols, q.err1, q.count, q.hinvUpper, q.i1, q.i2, q.colEnd));
  const core = gptqCore(wVals, rows, cols, hVals, opts);
  let step = core.next();
  while (!step.done) {
    const q = step.value;
    if (q.kind === 'lazy') {
      await update(q);
      step = core.next();
      continue;
    }
    let U: Float64Array;
    try {
      U = await chol(q.H, q.n);
    } catch (e) {
      step = core.throw(e);
      continue;
    }
    step = core.next(U);
  }
  return step.value;
}
