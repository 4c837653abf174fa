// The CPU backend's slices of work (pool.ts runs them on worker threads or on the calling thread). Each
// computes a slice of rows (or columns) with exactly the loops, in exactly the order, that the
// whole-matrix kernels of quant/ use for those rows: mat-vecs split by rows, Aᵀ·y and column sums split by
// columns (each still summed over rows in order), everything else split by rows. So a result is the same
// bits for any thread count.

import { lazyUpdate, proxyLossBlocks } from '../../quant/gptq_kernels';
import { gptqColumnLoop, type ColumnLoopShape } from '../../quant/gptq_loop';
import { findParams, quantizeCode } from '../../quant/quantizer';
import { lowRankWeight } from '../../quant/r1svd';
import { rotateRowsInPlace, type RotationPlan } from '../../quant/rotation';
import { dequantizeLoPRo, type LoproStoredLayer } from '../../quant/lopro_dequant';
import { kmeansBest, kmeansNearest, type KMeansArrays, type KMeansPass } from '../../quant/kmeans';
import type { ClipMode } from '../../../protocol/config';

/** One slice of work: rows (or columns) r0..r1 / c0..c1 of shared arrays (plain ones on one thread). */
export type Task =
  | { kind: 'mv'; A: Float32Array; n: number; x: Float64Array; y: Float64Array; r0: number; r1: number }
  | { kind: 'mtv'; A: Float32Array; m: number; n: number; y: Float64Array; z: Float64Array; c0: number; c1: number }
  | { kind: 'deflate'; A: Float32Array; n: number; u: Float64Array; v: Float64Array; s: number; r0: number; r1: number }
  /** A = X·diag(α) (float32, as r1svd.ts scaleColumns). */
  | { kind: 'scaleCols'; X: Float64Array; A: Float32Array; alpha: Float64Array; n: number; r0: number; r1: number }
  /** R = W − U·diag(σ̂)·V·diag(α)⁻¹ (r1svd.ts lowRankWeight for these rows). */
  | {
      kind: 'residual';
      W: Float64Array;
      R: Float64Array;
      n: number;
      rank: number;
      U: Float64Array;
      sigma: Float64Array;
      V: Float64Array;
      alpha: Float64Array;
      r0: number;
      r1: number;
    }
  | { kind: 'colSum'; X: ArrayLike<number> & Float64Array; f: 'abs' | 'sq'; m: number; n: number; out: Float64Array; c0: number; c1: number }
  /** Y = X[:, perm]·Q for rows r0..r1 (permute.ts gatherColumns + rotation.ts rotateRowsInPlace). */
  | { kind: 'gatherRotate'; X: Float64Array; Y: Float64Array; n: number; perm: Int32Array; plan: RotationPlan; r0: number; r1: number }
  /** Q·H[perm][:, perm]·Q in three passes (rotation.ts rotateHessian after permute.ts permuteSymmetric). */
  | { kind: 'permRotRows'; H: Float64Array; M: Float64Array; n: number; perm: Int32Array; plan: RotationPlan; r0: number; r1: number }
  | { kind: 'transRotRows'; M: Float64Array; T: Float64Array; n: number; plan: RotationPlan; r0: number; r1: number }
  | { kind: 'symmetrize'; T: Float64Array; n: number; r0: number; r1: number }
  /** quantizer.ts findParams of every group of `g` columns, rows r0..r1, into scale/zero (rows × G). */
  | {
      kind: 'groupParams';
      W: Float64Array;
      n: number;
      g: number;
      G: number;
      maxq: number;
      sym: boolean;
      clip: ClipMode;
      scale: Float32Array;
      zero: Float32Array;
      r0: number;
      r1: number;
    }
  /** rtn.ts's codes with given params (column c in group ⌊c/g⌋). */
  | { kind: 'rtnCodes'; W: Float64Array; n: number; g: number; G: number; maxq: number; scale: Float32Array; zero: Float32Array; codes: Uint8Array; r0: number; r1: number }
  /** GPTQ's column loop (quant/gptq_loop.ts) on rows r0..r1; its loss into loss[part]. */
  | {
      kind: 'gptqLoop';
      W: Float64Array;
      n: number;
      Hinv: Float64Array;
      shape: ColumnLoopShape;
      codes: Uint8Array;
      scale: Float32Array;
      zero: Float32Array;
      loss: Float64Array;
      part: number;
      r0: number;
      r1: number;
    }
  /** W[:, i2:] −= Err·U[i1:i2, i2:] for rows r0..r1 (gptq_kernels.ts lazyUpdate). */
  | { kind: 'lazy'; W: Float64Array; n: number; err: Float64Array; count: number; U: Float64Array; i1: number; i2: number; r0: number; r1: number }
  /** `stored` is a row slice (copied) of a stored layer; Ŵ's rows into the shared `out`. */
  | { kind: 'dequant'; stored: LoproStoredLayer; out: Float32Array; r0: number }
  /** gptq_kernels.ts proxyLossBlocks of rows r0..r1: tr(ΔHΔᵀ) into loss, tr(WHWᵀ) into ref (Q null: only ref). */
  | {
      kind: 'proxyLoss';
      W: Float32Array | Float64Array;
      Q: Float32Array | Float64Array | null;
      H: Float32Array | Float64Array;
      n: number;
      loss: Float64Array;
      ref: Float64Array;
      r0: number;
      r1: number;
    }
  /** k-means' per-point passes (kmeans.ts) over points r0..r1. */
  | { kind: 'kmeans'; a: KMeansArrays; pass: KMeansPass; d: number; k: number; r0: number; r1: number };

export function runTask(t: Task): void {
  switch (t.kind) {
    case 'mv': {
      const { A, n, x, y } = t;
      for (let i = t.r0; i < t.r1; i++) {
        let s = 0;
        const o = i * n;
        for (let j = 0; j < n; j++) s += A[o + j] * x[j];
        y[i] = s;
      }
      return;
    }
    case 'mtv': {
      const { A, m, n, y, z, c0, c1 } = t;
      for (let j = c0; j < c1; j++) z[j] = 0;
      for (let i = 0; i < m; i++) {
        const yi = y[i];
        if (yi === 0) continue;
        const o = i * n;
        for (let j = c0; j < c1; j++) z[j] += yi * A[o + j];
      }
      return;
    }
    case 'deflate': {
      const { A, n, u, v, s } = t;
      for (let i = t.r0; i < t.r1; i++) {
        const a = s * u[i];
        if (a === 0) continue;
        const o = i * n;
        for (let j = 0; j < n; j++) A[o + j] -= a * v[j];
      }
      return;
    }
    case 'scaleCols': {
      const { X, A, alpha, n, r0, r1 } = t;
      for (let i = r0; i < r1; i++) for (let j = 0, o = i * n; j < n; j++) A[o + j] = X[o + j] * alpha[j];
      return;
    }
    case 'residual': {
      const { W, R, n, r0, r1 } = t;
      const Wr = lowRankWeight(t.U, t.sigma, t.V, r1 - r0, n, t.rank, t.alpha);
      for (let k = 0, o = r0 * n; k < Wr.length; k++) R[o + k] = W[o + k] - Wr[k];
      return;
    }
    case 'colSum': {
      const { X, m, n, out, c0, c1 } = t;
      for (let j = c0; j < c1; j++) out[j] = 0;
      for (let i = 0; i < m; i++) {
        const o = i * n;
        if (t.f === 'abs') for (let j = c0; j < c1; j++) out[j] += Math.abs(X[o + j]);
        else for (let j = c0; j < c1; j++) out[j] += X[o + j] * X[o + j];
      }
      return;
    }
    case 'gatherRotate': {
      const { X, Y, n, perm, r0, r1 } = t;
      for (let i = r0; i < r1; i++) {
        const o = i * n;
        for (let k = 0; k < n; k++) Y[o + k] = X[o + perm[k]];
      }
      rotateRowsInPlace(Y.subarray(r0 * n, r1 * n), r1 - r0, t.plan);
      return;
    }
    case 'permRotRows': {
      const { H, M, n, perm, r0, r1 } = t;
      for (let a = r0; a < r1; a++) {
        const src = perm[a] * n,
          dst = a * n;
        for (let b = 0; b < n; b++) M[dst + b] = H[src + perm[b]];
      }
      rotateRowsInPlace(M.subarray(r0 * n, r1 * n), r1 - r0, t.plan);
      return;
    }
    case 'transRotRows': {
      const { M, T, n, r0, r1 } = t;
      for (let j = r0; j < r1; j++) for (let i = 0; i < n; i++) T[j * n + i] = M[i * n + j];
      rotateRowsInPlace(T.subarray(r0 * n, r1 * n), r1 - r0, t.plan);
      return;
    }
    case 'symmetrize': {
      const { T, n, r0, r1 } = t;
      for (let i = r0; i < r1; i++)
        for (let j = i + 1; j < n; j++) {
          const v = 0.5 * (T[i * n + j] + T[j * n + i]);
          T[i * n + j] = v;
          T[j * n + i] = v;
        }
      return;
    }
    case 'groupParams': {
      const { W, n, g, G, r0, r1 } = t;
      const rows = r1 - r0,
        Wr = W.subarray(r0 * n, r1 * n),
        s = t.scale.subarray(r0 * G, r1 * G),
        z = t.zero.subarray(r0 * G, r1 * G);
      for (let gi = 0; gi < G; gi++) findParams(Wr, rows, n, gi * g, (gi + 1) * g, t.maxq, t.sym, s, z, G, gi, t.clip);
      return;
    }
    case 'rtnCodes': {
      const { W, n, g, G, maxq, scale, zero, codes, r0, r1 } = t;
      for (let r = r0; r < r1; r++)
        for (let c = 0; c < n; c++) {
          const k = r * G + Math.floor(c / g),
            i = r * n + c;
          codes[i] = quantizeCode(W[i], scale[k], zero[k], maxq);
        }
      return;
    }
    case 'gptqLoop': {
      const { W, n, shape, r0, r1 } = t;
      const G = shape.groups;
      t.loss[t.part] = gptqColumnLoop(W.subarray(r0 * n, r1 * n), r1 - r0, n, t.Hinv, shape, {
        codes: t.codes.subarray(r0 * n, r1 * n),
        scale: t.scale.subarray(r0 * G, r1 * G),
        zero: t.zero.subarray(r0 * G, r1 * G),
      });
      return;
    }
    case 'lazy': {
      const { W, n, err, count, r0, r1 } = t;
      lazyUpdate(W.subarray(r0 * n, r1 * n), r1 - r0, n, err.subarray(r0 * count, r1 * count), count, t.U, t.i1, t.i2);
      return;
    }
    case 'dequant':
      t.out.set(dequantizeLoPRo(t.stored), t.r0 * t.stored.cols);
      return;
    case 'proxyLoss':
      if (t.Q) proxyLossBlocks(t.W, t.Q, t.H, t.n, t.r0, t.r1, t.loss);
      proxyLossBlocks(t.W, null, t.H, t.n, t.r0, t.r1, t.ref);
      return;
    case 'kmeans':
      if (t.pass.kind === 'best') kmeansBest(t.a, t.d, t.pass.c, t.r0, t.r1);
      else kmeansNearest(t.a, t.d, t.k, t.r0, t.r1);
      return;
  }
}
