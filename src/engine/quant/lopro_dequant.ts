// What a LoPRo layer stores (spec §1.9), how it dequantizes back to Ŵ, and the inference formula
// of spec §4. Everything here reads only the stored (bit-level) parts, so the quantizer's Ŵ and a
// loaded checkpoint's Ŵ are the same computation on the same bits.
//
//   Ŵ = U·diag(σ̂)·V·diag(α)⁻¹  +  (R̂′·Q)[:, invPerm]       R̂′ = dequant(codes…) in rotated, permuted space
//   y = Ŵ·x = R̂′·(Q·x[perm]) + U·(σ̂ ⊙ (V·(x ⊘ α)))

import { decodeF16, decodeF8E4M3 } from './fp8';
import { gatherColumns, gatherVector, invertPermutation } from './permute';
import { rotateRowsInPlace, rotateVector, type RotationPlan } from './rotation';
import { lowRankWeight, type LowRankFactors } from './r1svd';
import { encodeF16 } from './fp8';
import type { LayerConfig } from '../../protocol/config';
import type { LoproStoredLayer } from '../io/lopro_format';

export type { LoproStoredLayer };

/**
 * The stored parts of a LoPRo layer from its stages' outputs (FP16 scales, integer zeros, the low-rank
 * factors' codes or an empty rank 0, the rotation plan's b_I/b_H, g_idx when act-order/static groups).
 */
export function loproStoredLayer(o: {
  rows: number;
  cols: number;
  cfg: LayerConfig;
  groupSize: number;
  perm: Int32Array;
  alphaBits: Uint16Array;
  factors: LowRankFactors | null;
  plan: RotationPlan;
  /** lopro: GPTQ's codes and params; lopro_v: GPTVQ's codes and FP16 codebooks. */
  q?: { codes: Uint8Array; scale: ArrayLike<number>; zero: ArrayLike<number>; groups: number; gIdx: Int32Array };
  vq?: { bits: number; vqDim: number; codes: Uint16Array; codebookBits: Uint16Array; groups: number };
}): LoproStoredLayer {
  const { rows, cols, cfg, factors: f, plan, q, vq } = o;
  const stored: LoproStoredLayer = {
    rows,
    cols,
    method: vq ? 'lopro_v' : 'lopro',
    bits: vq ? vq.bits : cfg.bits,
    groupSize: o.groupSize,
    sym: cfg.sym,
    perm: o.perm,
    alphaBits: o.alphaBits,
    rank: f?.rank ?? 0,
    uCodes: f?.uCodes ?? new Uint8Array(0),
    vCodes: f?.vCodes ?? new Uint8Array(0),
    sigmaBits: f?.sigmaBits ?? new Uint16Array(0),
    uScale: f?.uScale ?? Math.sqrt(rows),
    vScale: f?.vScale ?? Math.sqrt(cols),
    rotation: cfg.rotation,
    salientBlock: plan.salient,
    hadamardBlock: plan.block,
    groups: (vq ?? q)!.groups,
  };
  if (vq) Object.assign(stored, { vqDim: vq.vqDim, vqCodes: vq.codes, codebookBits: vq.codebookBits });
  else if (q) {
    Object.assign(stored, { codes: q.codes, scaleBits: encodeF16(q.scale), zeros: Uint8Array.from(q.zero) });
    if (cfg.actOrder || cfg.staticGroups) stored.gIdx = q.gIdx;
  } else throw new Error('loproStoredLayer: neither q nor vq');
  return stored;
}

export function rotationPlanOf(s: LoproStoredLayer): RotationPlan {
  return { cols: s.cols, mode: s.rotation, salient: s.hadamardBlock ? s.salientBlock : s.cols, block: s.hadamardBlock };
}

/** R̂′ (rows×cols, float64): the residual in the rotated, permuted space. */
export function dequantizeResidual(s: LoproStoredLayer): Float64Array {
  const { rows, cols } = s;
  const out = new Float64Array(rows * cols);
  if (s.method === 'lopro') {
    if (!s.codes || !s.scaleBits || !s.zeros) throw new Error('lopro layer without codes/scales/zeros');
    const scale = decodeF16(s.scaleBits),
      G = s.groups;
    const group = new Int32Array(cols);
    for (let j = 0; j < cols; j++) group[j] = s.gIdx ? s.gIdx[j] : Math.floor(j / s.groupSize);
    for (let i = 0; i < rows; i++) {
      const o = i * cols;
      for (let j = 0; j < cols; j++) {
        const k = i * G + group[j];
        out[o + j] = scale[k] * (s.codes[o + j] - s.zeros[k]);
      }
    }
  } else {
    const d = s.vqDim ?? 0;
    if (!s.vqCodes || !s.codebookBits || !d) throw new Error('lopro_v layer without codes/codebooks');
    const cb = decodeF16(s.codebookBits);
    const K = cb.length / (s.groups * d),
      V = cols / d;
    for (let i = 0; i < rows; i++) {
      for (let v = 0; v < V; v++) {
        const gi = Math.floor((v * d) / s.groupSize);
        const c = (gi * K + s.vqCodes[i * V + v]) * d;
        for (let t = 0; t < d; t++) out[i * cols + v * d + t] = cb[c + t];
      }
    }
  }
  return out;
}

/** The decoded low-rank factors (U m×r, σ̂, V r×n) and α. */
export function decodeLowRank(s: LoproStoredLayer): { U: Float64Array; sigma: Float64Array; V: Float64Array; alpha: Float64Array } {
  return { U: decodeF8E4M3(s.uCodes), sigma: decodeF16(s.sigmaBits), V: decodeF8E4M3(s.vCodes), alpha: decodeF16(s.alphaBits) };
}

/** Ŵ in the original space (rows×cols). `parts` receives W_r and R̂ separately when given. */
export function dequantizeLoPRo(s: LoproStoredLayer, parts?: { lowRank?: Float64Array; residual?: Float64Array }): Float32Array {
  const { rows, cols } = s;
  const Rt = dequantizeResidual(s);
  rotateRowsInPlace(Rt, rows, rotationPlanOf(s)); // R̂_p = R̂′·Q
  const R = gatherColumns(Rt, rows, cols, invertPermutation(s.perm)); // R̂ = R̂_p[:, invPerm]
  const out = new Float32Array(rows * cols);
  let Wr: Float64Array | undefined;
  if (s.rank > 0) {
    const f = decodeLowRank(s);
    Wr = lowRankWeight(f.U, f.sigma, f.V, rows, cols, s.rank, f.alpha);
    for (let i = 0; i < out.length; i++) out[i] = Wr[i] + R[i];
  } else for (let i = 0; i < out.length; i++) out[i] = R[i];
  if (parts) {
    parts.residual = R;
    parts.lowRank = Wr ?? new Float64Array(rows * cols);
  }
  return out;
}

/**
 * Spec §4 for a batch X (tokens×cols, row-major) → Y (tokens×rows), float64, never forming Ŵ:
 * x_p = x[perm]; x_r = [x_p[0:b_I], FWHT(x_p[b_I:])/√b_H]; y = R̂′·x_r + U·(σ̂ ⊙ (V·(x ⊘ α))).
 */
export function loproForward_ref(xVals: ArrayLike<number>, s: LoproStoredLayer, tokens = 1): Float64Array {
  const { rows, cols, rank } = s;
  const Rt = dequantizeResidual(s);
  const plan = rotationPlanOf(s);
  const f = rank > 0 ? decodeLowRank(s) : undefined;
  const Y = new Float64Array(tokens * rows);
  const x = new Float64Array(cols),
    t = new Float64Array(rank);
  for (let tk = 0; tk < tokens; tk++) {
    for (let j = 0; j < cols; j++) x[j] = xVals[tk * cols + j];
    const xr = rotateVector(gatherVector(x, s.perm), plan);
    if (f) {
      for (let k = 0; k < rank; k++) {
        let acc = 0;
        for (let j = 0; j < cols; j++) acc += f.V[k * cols + j] * (x[j] / f.alpha[j]);
        t[k] = f.sigma[k] * acc;
      }
    }
    for (let i = 0; i < rows; i++) {
      let acc = 0;
      const o = i * cols;
      for (let j = 0; j < cols; j++) acc += Rt[o + j] * xr[j];
      if (f) for (let k = 0; k < rank; k++) acc += f.U[i * rank + k] * t[k];
      Y[tk * rows + i] = acc;
    }
  }
  return Y;
}
