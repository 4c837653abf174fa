// GPTQ (Frantar et al., arXiv 2210.17323, Algorithm 1) as one driver for both backends, in the order of the
// original `GPTQ.fasterquant` (IST-DASLab/gptq) and of ../../../../shared/golden/README.md §5: params of
// whole rows, dead inputs, static groups, act-order, damping, the Cholesky of H⁻¹, the lazy-batch column
// loop. The steps' arithmetic is the backend's (backend/backend.ts); gptq_ref.ts is the float64 twin the
// golden tests pin to the original's outputs. LoPRo's stage C calls this driver on R′ and H′.

import type { ClipMode } from '../../protocol/config';
import { ErrorCode } from '../../protocol/messages';
import { ProtocolError } from '../../protocol/rpc';
import type { LayerSession, Mat } from './backend';
import { argsortDescending } from './permute';
import { invertPermutation, isPermutation } from './gptq_kernels';
import { maxqFor } from './quantizer';
import { groupCount } from './rtn';

export { proxyLoss } from './gptq_kernels';

export interface GptqOptions {
  bits: number;
  /** Columns per group; −1 (default) = one group per row. */
  groupSize?: number;
  sym?: boolean;
  /** Group range fit: 'minmax' (default, the reference) or 'mse' (quant.py's mse=True search). */
  clip?: ClipMode;
  /** Damping λ = percDamp · mean(diag H) (default 0.01). */
  percDamp?: number;
  /** Lazy-batch width B (default 128). */
  blockSize?: number;
  /** Quantize columns in order of decreasing diag(H) (default false). */
  actOrder?: boolean;
  /** Group params from the un-updated, unpermuted W (default false). */
  staticGroups?: boolean;
  /** A caller-chosen quantization order (perm[k] = original column quantized k-th); not with actOrder. */
  perm?: Int32Array;
  /** Receives warnings (the Cholesky fallback). Default: console.warn. */
  onWarning?: (message: string) => void;
  /** Layer name for errors and warnings. */
  name?: string;
  /**
   * Hinv of this H, already prepared (prepareShared: dead inputs marked, damped, factored) and owned by the caller:
   * several bit widths of one layer share one factorization. Not with actOrder.
   */
  prepared?: Prepared;
}

export interface GptqResult {
  /** rows×cols codes in original column order. */
  codes: Uint8Array;
  /** Per row and group (rows × groups), float32 values; zero holds an integer. */
  scale: Float32Array;
  zero: Float32Array;
  /** Group of each original column (length cols). */
  gIdx: Int32Array;
  groups: number;
  /** Quantization order: perm[k] = original column quantized k-th (identity without act-order). */
  perm: Int32Array;
  invPerm: Int32Array;
  /** Σ Losses = ½ Σ_r (W−Q)_r H_d (W−Q)_rᵀ (the reference's printed `error`). */
  loss: number;
  deadColumns: number;
  damp: number;
  /** True when H_d was not positive definite and Hinv = I was used (round-to-nearest). */
  choleskyFallback: boolean;
  seconds: { prep: number; cholesky: number; columnLoop: number; total: number };
}

/** The warning of step 6's fallback (llm-compressor's: Hinv = I, i.e. round-to-nearest). */
export function choleskyFallbackNote(where: string, e: Error): string {
  return (
    `${where}: the damped Hessian is not positive definite (${e.message}); falling back to round-to-nearest for this layer. ` +
    'Increase percDamp (e.g. 0.1), use more calibration samples, or check for near-duplicate input channels.'
  );
}

const now = () => performance.now() / 1000;

/** H_d's dead inputs, damping and Hinv (steps 2, 5, 6), shared by GPTQ and GPTVQ. */
export interface Prepared {
  Hinv: Mat;
  deadColumns: number;
  damp: number;
  choleskyFallback: boolean;
}

/**
 * GPTQ of the rows×cols W with the input Hessian H (cols×cols), both of session `s`. `consume`: W and H
 * are the caller's to give away (LoPRo's R′ and H′): they are modified and freed instead of copied.
 */
export async function gptq(s: LayerSession, W: Mat, H: Mat, opts: GptqOptions, consume = false): Promise<GptqResult> {
  const t0 = now();
  const { cols } = W;
  const where = opts.name ?? 'gptq';
  const groupSize = opts.groupSize ?? -1,
    sym = opts.sym ?? false,
    clip = opts.clip ?? 'minmax';
  const blockSize = opts.blockSize ?? 128;
  const staticGroups = (opts.staticGroups ?? false) && groupSize !== -1;
  if (!(Number.isInteger(blockSize) && blockSize > 0)) throw new ProtocolError(ErrorCode.BadConfig, `blockSize must be a positive integer, got ${blockSize}`, where);
  if (opts.actOrder && opts.perm) throw new ProtocolError(ErrorCode.BadConfig, 'actOrder and a caller-provided perm are exclusive', where, 'pass one of them');
  if (opts.perm && !isPermutation(opts.perm, cols)) throw new ProtocolError(ErrorCode.InvalidParams, `perm is not a permutation of 0..${cols - 1}`, where);
  const maxq = maxqFor(opts.bits);
  const G = groupCount(cols, groupSize);
  if (!consume) {
    W = await s.copy(W);
    H = await s.copy(H);
  }
  try {
    // 1. Per-row params from the full rows, before dead columns are zeroed (final for groupSize −1).
    const rowParams = groupSize === -1 ? await s.groupParams(W, cols, { maxq, sym, clip }) : undefined;

    // 2. Dead inputs (never active in calibration): H_jj = 1, W[:, j] = 0, so their codes quantize 0.
    const hDiag = await s.diagonal(H);
    const dead = deadInputs(hDiag);
    if (dead.length) await s.markDead(W, H, dead);
    for (const j of dead) hDiag[j] = 1;

    // 3. Static groups: params of each original group from the dead-zeroed, unpermuted W.
    const staticParams = staticGroups ? await s.groupParams(W, groupSize, { maxq, sym, clip }) : undefined;

    // 4. Quantization order: act-order sorts by diag(H) descending (ties by index).
    const perm = opts.perm ?? (opts.actOrder ? argsortDescending(hDiag) : undefined);
    if (perm) {
      const [Wp, Hp] = [await s.permuteRotate(W, perm, noRotation(cols)), await s.permuteRotateSymmetric(H, perm, noRotation(cols))];
      s.free(W, H);
      [W, H] = [Wp, Hp];
    }
    const order = perm ?? Int32Array.from({ length: cols }, (_, k) => k);

    // 5–6. Damping λ = percDamp·mean(diag H_d) (summed in quantization order), then Hinv.
    const t1 = now();
    const p = opts.prepared ?? (await prepareHessian(s, H, order, hDiag, opts.percDamp ?? 0.01, where, opts.onWarning));
    const t2 = now();

    // 7. Lazy batches of blockSize columns.
    const slot = new Int32Array(cols),
      gIdx = new Int32Array(cols);
    for (let k = 0; k < cols; k++) {
      slot[k] = groupSize === -1 ? 0 : staticGroups ? Math.floor(order[k] / groupSize) : Math.floor(k / groupSize);
      gIdx[order[k]] = slot[k];
    }
    const q = await s.gptqColumnLoop(W, p.Hinv, {
      blockSize,
      maxq,
      sym,
      clip,
      groupSize,
      dynamic: groupSize !== -1 && !staticGroups,
      groups: G,
      slot,
      order,
      params: rowParams ?? staticParams,
    });
    if (!opts.prepared) s.free(p.Hinv);
    const t3 = now();
    return {
      codes: q.codes,
      scale: q.scale,
      zero: q.zero,
      gIdx,
      groups: G,
      perm: order,
      invPerm: invertPermutation(order),
      loss: q.loss,
      deadColumns: dead.length,
      damp: p.damp,
      choleskyFallback: p.choleskyFallback,
      seconds: { prep: t1 - t0, cholesky: t2 - t1, columnLoop: t3 - t2, total: t3 - t0 },
    };
  } finally {
    s.free(W, H);
  }
}

/** Columns whose input never fired in calibration (H_jj = 0). */
export function deadInputs(hDiag: Float64Array): Int32Array {
  const out: number[] = [];
  for (let j = 0; j < hDiag.length; j++) if (hDiag[j] === 0) out.push(j);
  return Int32Array.from(out);
}

/**
 * Steps 5–6 on an H whose dead inputs are marked (hDiag: its diagonal in original column order): H_d = H + λI
 * with λ = percDamp·mean(diag H) (summed in quantization order, as the reference sums its permuted H), then Hinv = the upper factor of H_d⁻¹, or the
 * identity (round-to-nearest, with a warning) when H_d is not positive definite. H is modified.
 */
export async function prepareHessian(
  s: LayerSession,
  H: Mat,
  order: Int32Array,
  hDiag: Float64Array,
  percDamp: number,
  where: string,
  onWarning?: (m: string) => void,
): Promise<Prepared> {
  const cols = H.cols;
  let diagSum = 0;
  for (let k = 0; k < cols; k++) diagSum += hDiag[order[k]];
  const damp = percDamp * (diagSum / cols);
  await s.addToDiagonal(H, damp);
  try {
    return { Hinv: await s.choleskyInverseUpper(H), deadColumns: 0, damp, choleskyFallback: false };
  } catch (e) {
    if (!(e instanceof Error && e.name === 'NotPositiveDefiniteError')) throw e;
    (onWarning ?? console.warn)(choleskyFallbackNote(where, e));
    return { Hinv: await s.identity(cols), deadColumns: 0, damp, choleskyFallback: true };
  }
}

/**
 * Hinv of H in column order (a copy of H is marked and damped; H is left as it is), for `prepared`: what gptq and
 * gptvq compute first for every W they quantize with this H. The caller frees `Hinv`.
 */
export async function prepareShared(s: LayerSession, H: Mat, percDamp: number, where: string, onWarning?: (m: string) => void): Promise<Prepared> {
  const cols = H.cols;
  const Hc = await s.copy(H);
  try {
    const hDiag = await s.diagonal(Hc);
    const dead = deadInputs(hDiag);
    if (dead.length) {
      const row = await s.upload(new Float32Array(cols), 1, cols, 'W', where); // markDead's W; only H matters here
      await s.markDead(row, Hc, dead);
      s.free(row);
    }
    for (const j of dead) hDiag[j] = 1;
    const p = await prepareHessian(
      s,
      Hc,
      Int32Array.from({ length: cols }, (_, k) => k),
      hDiag,
      percDamp,
      where,
      onWarning,
    );
    return { ...p, deadColumns: dead.length };
  } finally {
    s.free(Hc);
  }
}

/** The plan of a permutation without rotation (act-order's gathers). */
export function noRotation(cols: number) {
  return { cols, mode: 'none' as const, salient: cols, block: 0 };
}
