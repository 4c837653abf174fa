// The flat-array kernels GPTQ spends its time in, each with a naive float64 `_ref` twin.
// Row-major everywhere; W is rows×cols, Hinv is cols×cols (upper triangular), Err1 is rows×count.

/** Signature of the lazy trailing update, so the pipeline can plug in an ORT MatMul for big layers. */
export type LazyUpdateFn = (
  W: Float64Array,
  rows: number,
  cols: number,
  err1: Float64Array,
  count: number,
  hinvUpper: Float64Array,
  i1: number,
  i2: number,
  colEnd?: number,
) => void;

/** Column tile of the lazy update: 128 rows × 256 cols of Hinv = 256 KiB, stays in L2 across all rows of W. */
const TILE = 256;

/**
 * GPTQ's lazy batch update `W[:, i2:colEnd] -= Err1 @ Hinv[i1:i2, i2:colEnd]` (count = i2 − i1), in place.
 * This is the O(rows·cols²) part of GPTQ. Tiled over output columns so the Hinv panel is reused
 * from cache by every row, and four error columns per pass so each W element is loaded and stored
 * once per four multiply-adds.
 */
export function lazyUpdate(W: Float64Array, rows: number, cols: number, err1: Float64Array, count: number, hinvUpper: Float64Array, i1: number, i2: number, colEnd = cols): void {
  for (let j0 = i2; j0 < colEnd; j0 += TILE) {
    const j1 = Math.min(j0 + TILE, colEnd);
    for (let r = 0; r < rows; r++) {
      const wo = r * cols,
        eo = r * count;
      let k = 0;
      for (; k + 4 <= count; k += 4) {
        const e0 = err1[eo + k],
          e1 = err1[eo + k + 1],
          e2 = err1[eo + k + 2],
          e3 = err1[eo + k + 3];
        if (e0 === 0 && e1 === 0 && e2 === 0 && e3 === 0) continue;
        const h0 = (i1 + k) * cols,
          h1 = h0 + cols,
          h2 = h1 + cols,
          h3 = h2 + cols;
        for (let j = j0; j < j1; j++) W[wo + j] -= e0 * hinvUpper[h0 + j] + e1 * hinvUpper[h1 + j] + e2 * hinvUpper[h2 + j] + e3 * hinvUpper[h3 + j];
      }
      for (; k < count; k++) {
        const e = err1[eo + k];
        if (e === 0) continue;
        const h = (i1 + k) * cols;
        for (let j = j0; j < j1; j++) W[wo + j] -= e * hinvUpper[h + j];
      }
    }
  }
}

/** Naive twin of `lazyUpdate` (one dot product per output element). */
export function lazyUpdate_ref(
  W: Float64Array,
  rows: number,
  cols: number,
  err1: Float64Array,
  count: number,
  hinvUpper: Float64Array,
  i1: number,
  i2: number,
  colEnd = cols,
): void {
  for (let r = 0; r < rows; r++)
    for (let j = i2; j < colEnd; j++) {
      let s = 0;
      for (let k = 0; k < count; k++) s += err1[r * count + k] * hinvUpper[(i1 + k) * cols + j];
      W[r * cols + j] -= s;
    }
}

/** Act-order: columns by diag(H) descending (ties by index; torch's argsort is unstable, the golden cases have none). */
export function argsortDiagDesc(hVals: ArrayLike<number>, cols: number): Int32Array {
  const idx = Array.from({ length: cols }, (_, i) => i);
  idx.sort((a, b) => hVals[b * cols + b] - hVals[a * cols + a] || a - b);
  return Int32Array.from(idx);
}

/** invPerm[perm[k]] = k. */
export function invertPermutation(perm: Int32Array): Int32Array {
  const inv = new Int32Array(perm.length);
  for (let k = 0; k < perm.length; k++) inv[perm[k]] = k;
  return inv;
}

/** True when `perm` holds each of 0..n−1 exactly once. */
export function isPermutation(perm: ArrayLike<number>, n: number): boolean {
  if (perm.length !== n) return false;
  const seen = new Uint8Array(n);
  for (let k = 0; k < n; k++) {
    const p = perm[k];
    if (!Number.isInteger(p) || p < 0 || p >= n || seen[p]) return false;
    seen[p] = 1;
  }
  return true;
}

/** W[:, perm] (rows×cols), a new array. */
export function permuteColumns<T extends Float32Array | Float64Array>(W: T, rows: number, cols: number, perm: Int32Array): T {
  const out = new (W.constructor as new (n: number) => T)(rows * cols);
  for (let r = 0; r < rows; r++) {
    const o = r * cols;
    for (let k = 0; k < cols; k++) out[o + k] = W[o + perm[k]];
  }
  return out;
}

/** H[perm][:, perm] (cols×cols), a new array. */
export function permuteSymmetric<T extends Float32Array | Float64Array>(H: T, cols: number, perm: Int32Array): T {
  const out = new (H.constructor as new (n: number) => T)(cols * cols);
  for (let a = 0; a < cols; a++) {
    const src = perm[a] * cols,
      dst = a * cols;
    for (let b = 0; b < cols; b++) out[dst + b] = H[src + perm[b]];
  }
  return out;
}

/** Rows per pass over H in proxyLossBlocks (and the granularity of its partial sums). */
export const PROXY_LOSS_ROWS = 8;

/** tr((W−Q)·H·(W−Q)ᵀ) in float64: the layer-output error ‖X(W−Q)ᵀ‖²·2/N that every report uses. Q = null: tr(W·H·Wᵀ). */
export function proxyLoss(wVals: ArrayLike<number>, qVals: ArrayLike<number> | null, hVals: ArrayLike<number>, rows: number, cols: number): number {
  const parts = new Float64Array(Math.ceil(rows / PROXY_LOSS_ROWS));
  proxyLossBlocks(wVals, qVals, hVals, cols, 0, rows, parts);
  let total = 0;
  for (const p of parts) total += p;
  return total;
}

/**
 * The proxy loss of rows r0..r1 (r0 a multiple of PROXY_LOSS_ROWS) as one partial sum per block of
 * PROXY_LOSS_ROWS rows, into parts[r0 / PROXY_LOSS_ROWS …]: summing the parts in order gives the same bits
 * however the rows were split between threads.
 */
export function proxyLossBlocks(
  wVals: ArrayLike<number>,
  qVals: ArrayLike<number> | null,
  hVals: ArrayLike<number>,
  cols: number,
  r0: number,
  r1: number,
  parts: Float64Array,
): void {
  // dᵀHd = Σ_i d_i (H_ii d_i + 2 Σ_{j>i} H_ij d_j) (H symmetric: the upper triangle is enough).
  // Eight rows per pass over H, so H (cols² values, far larger than the caches for big layers) is
  // streamed rows/8 times instead of once per row, and each H load serves eight multiply-adds.
  const RB = PROXY_LOSS_ROWS;
  const D = new Float64Array(RB * cols),
    t = new Float64Array(RB);
  for (let b0 = r0; b0 < r1; b0 += RB) {
    const rb = Math.min(RB, r1 - b0);
    D.fill(0);
    for (let a = 0; a < rb; a++) for (let c = 0, o = (b0 + a) * cols; c < cols; c++) D[a * cols + c] = qVals ? wVals[o + c] - qVals[o + c] : wVals[o + c];
    const d1 = cols,
      d2 = 2 * cols,
      d3 = 3 * cols,
      d4 = 4 * cols,
      d5 = 5 * cols,
      d6 = 6 * cols,
      d7 = 7 * cols;
    let total = 0;
    for (let i = 0; i < cols; i++) {
      const h = i * cols;
      let t0 = 0,
        t1 = 0,
        t2 = 0,
        t3 = 0,
        t4 = 0,
        t5 = 0,
        t6 = 0,
        t7 = 0;
      for (let j = i + 1; j < cols; j++) {
        const x = hVals[h + j];
        t0 += x * D[j];
        t1 += x * D[d1 + j];
        t2 += x * D[d2 + j];
        t3 += x * D[d3 + j];
        t4 += x * D[d4 + j];
        t5 += x * D[d5 + j];
        t6 += x * D[d6 + j];
        t7 += x * D[d7 + j];
      }
      t[0] = t0;
      t[1] = t1;
      t[2] = t2;
      t[3] = t3;
      t[4] = t4;
      t[5] = t5;
      t[6] = t6;
      t[7] = t7;
      const hii = hVals[h + i];
      for (let a = 0; a < rb; a++) {
        const di = D[a * cols + i];
        total += di * (hii * di + 2 * t[a]);
      }
    }
    parts[b0 / RB] = total;
  }
}

/** Naive twin of proxyLoss: Σ_r Σ_i Σ_j d_ri H_ij d_rj. */
export function proxyLoss_ref(wVals: ArrayLike<number>, qVals: ArrayLike<number>, hVals: ArrayLike<number>, rows: number, cols: number): number {
  let total = 0;
  for (let r = 0; r < rows; r++)
    for (let i = 0; i < cols; i++)
      for (let j = 0; j < cols; j++) total += (wVals[r * cols + i] - qVals[r * cols + i]) * hVals[i * cols + j] * (wVals[r * cols + j] - qVals[r * cols + j]);
  return total;
}
