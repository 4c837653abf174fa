// GPTQ's column loop (Algorithm 1's lazy batches; ../../../../shared/golden/README.md §5 step 7) over rows
// of a prepared W, as a pure function: the CPU backend runs it on each worker's row chunk (rows are
// independent once Hinv and the params are known) and gptq_ref.ts on the whole matrix. Names follow the
// reference `fasterquant`: W, Hinv, W1, Err1, i1, i2, count, d.

import { lazyUpdate } from './gptq_kernels';
import { dequantizeCode, findParams, quantizeCode } from './quantizer';
import type { ClipMode } from '../../protocol/config';

export interface ColumnLoopShape {
  blockSize: number;
  maxq: number;
  sym: boolean;
  clip: ClipMode;
  /** Group width in quantization order, −1 = one group per row (params given). */
  groupSize: number;
  /** Params fitted at each group's first column (else given in scale/zero). */
  dynamic: boolean;
  groups: number;
  /** slot[k]: the group of the k-th quantized column. */
  slot: Int32Array;
  /** order[k]: the column quantized k-th; codes and Q are written there. */
  order: Int32Array;
}

export interface ColumnLoopOut {
  /** rows×cols codes, original column order. */
  codes: Uint8Array;
  /** rows×groups params: read (given) or written (dynamic). */
  scale: Float32Array;
  zero: Float32Array;
  /** rows×cols dequantized values, original column order (optional: the reference's Q). */
  Q?: Float32Array;
}

/**
 * Quantizes the rows×cols W (float64, quantization order, dead columns zeroed; modified in place) with
 * Hinv (cols×cols upper factor). Returns Σ err²/2.
 */
export function gptqColumnLoop(W: Float64Array, rows: number, cols: number, Hinv: Float64Array, sh: ColumnLoopShape, out: ColumnLoopOut): number {
  const { maxq, sym, clip, groupSize, dynamic, groups: G, slot, order } = sh;
  const blockSize = Math.max(1, Math.min(sh.blockSize, cols));
  const { codes, scale, zero, Q } = out;
  let loss = 0;
  const W1 = new Float64Array(rows * blockSize),
    Err1 = new Float64Array(rows * blockSize);
  for (let i1 = 0; i1 < cols; i1 += blockSize) {
    const i2 = Math.min(i1 + blockSize, cols),
      count = i2 - i1;
    for (let r = 0; r < rows; r++) for (let i = 0; i < count; i++) W1[r * count + i] = W[r * cols + i1 + i];
    // Group params of this block. The global W does not change until the block's lazy update, so
    // computing them all here equals the reference's find_params at column k (including its quirk:
    // the params come from the global W, which lags the intra-block updates).
    if (dynamic) for (let k = i1; k < i2; k++) if (k % groupSize === 0) findParams(W, rows, cols, k, k + groupSize, maxq, sym, scale, zero, G, slot[k], clip);
    // Rows are independent given Hinv and the params, so walk row by row (the row of W1 stays in L1).
    // Columns go four at a time: each is quantized after the updates from the previous ones of its
    // quad, then the quad's four errors reach the rest of the block in one fused pass. Per element
    // the subtractions happen in the same order as one column at a time, so the result is identical.
    for (let r = 0; r < rows; r++) {
      const o = r * count;
      for (let i0 = 0; i0 < count; i0 += 4) {
        const m = Math.min(4, count - i0);
        for (let a = 0; a < m; a++) {
          const i = i0 + a,
            k = i1 + i,
            col = order[k],
            g = r * G + slot[k];
          const s = scale[g],
            z = zero[g];
          const w = W1[o + i];
          const code = quantizeCode(w, s, z, maxq);
          const q = dequantizeCode(code, s, z);
          codes[r * cols + col] = code;
          if (Q) Q[r * cols + col] = q;
          const d = Hinv[k * cols + k];
          const err = (w - q) / d; // err1 of the reference; Losses[r, k] = (w − q)²/d²/2 = err²/2
          loss += (err * err) / 2;
          Err1[o + i] = err;
          // W1[r, i+1 : i0+m] −= err · Hinv[k, …] (the rest of the quad)
          for (let j = i + 1, h = k * cols + i1; j < i0 + m; j++) W1[o + j] -= err * Hinv[h + j];
        }
        // W1[r, i0+m:] −= Σ_a err_a · Hinv[i1+i0+a, i1+i0+m : i2], in column order a = 0, 1, 2, 3.
        if (m === 4) {
          const e0 = Err1[o + i0],
            e1 = Err1[o + i0 + 1],
            e2 = Err1[o + i0 + 2],
            e3 = Err1[o + i0 + 3];
          const h0 = (i1 + i0) * cols + i1,
            h1 = h0 + cols,
            h2 = h1 + cols,
            h3 = h2 + cols;
          for (let j = i0 + 4; j < count; j++) W1[o + j] = W1[o + j] - e0 * Hinv[h0 + j] - e1 * Hinv[h1 + j] - e2 * Hinv[h2 + j] - e3 * Hinv[h3 + j];
        } // m < 4 only for the block's last columns: nothing follows them
      }
    }
    // W[:, i2:] −= Err1 · Hinv[i1:i2, i2:]
    if (i2 < cols) lazyUpdate(W, rows, cols, Err1, count, Hinv, i1, i2);
  }
  return loss;
}
