// Stage B, step 7 of LoPRo (spec §1): the partial block rotation Q = blockdiag(I_{b_I}, H_b/√b, …)
// with H_b the Sylvester-order Walsh–Hadamard matrix. H_b/√b is symmetric and orthogonal, so Q is
// its own inverse: R' = R_p·Q is undone by R'·Q, and H' = Qᵀ·H_p·Q = Q·H_p·Q by the same call.
// Q is never materialised: the block FWHTs of linalg/fwht.ts (in-place butterflies; it has an ORT MatMul path too).

import type { RotationMode } from '../../protocol/config';
import type { FloatArray } from './lopro_mat';
import { blockHadamardColumns, blockHadamardRows, fwht } from '../linalg/fwht';

/** Which columns are rotated: [0, salient) left alone, then blocks of `block` columns (block ≥ 2). */
export interface RotationPlan {
  cols: number;
  mode: RotationMode;
  /** b_I used (= cols when nothing is rotated). */
  salient: number;
  /** b_H used (0 when nothing is rotated). */
  block: number;
  /** Set when the configured b_I/b_H could not be used as is. */
  note?: string;
}

const isPow2 = (n: number) => Number.isInteger(n) && n > 0 && (n & (n - 1)) === 0;

/**
 * Plans the rotation of `cols` columns. When (cols − b_I) is not a multiple of b_H, uses the largest
 * power of two ≤ b_H that divides it (spec §1.7) and says so in `note`.
 */
export function planRotation(cols: number, mode: RotationMode, salientBlock: number, hadamardBlock: number): RotationPlan {
  if (!isPow2(hadamardBlock)) throw new RangeError(`hadamardBlock (b_H) must be a power of two, got ${hadamardBlock}`);
  if (mode === 'none') return { cols, mode, salient: cols, block: 0 };
  const bI = mode === 'full' ? 0 : Math.min(Math.max(0, salientBlock), cols);
  const rest = cols - bI;
  if (rest === 0) return { cols, mode, salient: cols, block: 0, note: `b_I = ${salientBlock} covers all ${cols} columns: nothing rotated` };
  let bH = hadamardBlock;
  while (bH > 1 && rest % bH !== 0) bH >>= 1;
  if (bH === 1) return { cols, mode, salient: cols, block: 0, note: `${rest} rotated columns (n − b_I) is odd: no power-of-two Hadamard block divides it, nothing rotated` };
  const note = bH !== hadamardBlock ? `(n − b_I) = ${cols} − ${bI} = ${rest} is not a multiple of b_H = ${hadamardBlock}: used b_H = ${bH}` : undefined;
  return { cols, mode, salient: bI, block: bH, note };
}

/** Blocks of the plan for the layer view: [start, end) and whether the block is rotated. */
export function planBlocks(plan: RotationPlan): { start: number; end: number; rotated: boolean }[] {
  const out: { start: number; end: number; rotated: boolean }[] = [];
  if (plan.salient > 0) out.push({ start: 0, end: plan.salient, rotated: false });
  if (plan.block > 0) for (let s = plan.salient; s < plan.cols; s += plan.block) out.push({ start: s, end: s + plan.block, rotated: true });
  return out;
}

/** In-place normalised FWHT of x[off : off+len] (len a power of two): x ← (H_len/√len)·x, Sylvester order. */
export function fwhtNormalizedInPlace(x: FloatArray, off: number, len: number): void {
  fwht(x, off, len);
}

/** Applies Q to every row of a rows×cols matrix in place (row·Q; Q symmetric so also Q·rowᵀ). */
export function rotateRowsInPlace(vals: FloatArray, rows: number, plan: RotationPlan): void {
  if (plan.block === 0) return;
  blockHadamardColumns(vals, rows, plan.cols, plan.salient, plan.block);
}

/** R' = R_p·Q (a new array). The inverse R_p = R'·Q is the same function. */
export function rotateColumns<T extends FloatArray>(vals: T, rows: number, plan: RotationPlan): T {
  const out = vals.slice() as T;
  rotateRowsInPlace(out, rows, plan);
  return out;
}
export const unrotateColumns = rotateColumns;

/** H′ = Qᵀ·H_p·Q (n×n, a new float64 array): block FWHT of the columns, then of the rows. */
export function rotateHessian(hVals: ArrayLike<number>, plan: RotationPlan): Float64Array {
  const n = plan.cols;
  const M = Float64Array.from(hVals as ArrayLike<number>);
  if (plan.block === 0) return M;
  blockHadamardColumns(M, n, n, plan.salient, plan.block); // H_p·Q
  blockHadamardRows(M, n, n, plan.salient, plan.block); // Qᵀ·(H_p·Q)
  // Symmetrise away the rounding asymmetry, so the Cholesky downstream sees an exactly symmetric H′.
  for (let i = 0; i < n; i++)
    for (let j = i + 1; j < n; j++) {
      const v = 0.5 * (M[i * n + j] + M[j * n + i]);
      M[i * n + j] = v;
      M[j * n + i] = v;
    }
  return M;
}

/** x_r = Qᵀ·x_p for an activation vector (spec §4): unrotated head, FWHT/√b_H per block. */
export function rotateVector(xp: ArrayLike<number>, plan: RotationPlan): Float64Array {
  const out = Float64Array.from(xp as ArrayLike<number>);
  rotateRowsInPlace(out, 1, plan);
  return out;
}

/** Dense Sylvester Hadamard H_b (unnormalised, ±1), the float64 twin of the butterfly. */
export function hadamardMatrix_ref(b: number): Float64Array {
  if (!isPow2(b)) throw new RangeError(`Hadamard order must be a power of two, got ${b}`);
  const H = new Float64Array(b * b);
  for (let i = 0; i < b; i++) for (let j = 0; j < b; j++) H[i * b + j] = popcount(i & j) % 2 ? -1 : 1;
  return H;
}

/** Dense Q (n×n) of a plan, for tests. */
export function rotationMatrix_ref(plan: RotationPlan): Float64Array {
  const n = plan.cols;
  const Q = new Float64Array(n * n);
  for (let i = 0; i < plan.salient; i++) Q[i * n + i] = 1;
  if (plan.block > 0) {
    const b = plan.block,
      Hb = hadamardMatrix_ref(b),
      s = 1 / Math.sqrt(b);
    for (let o = plan.salient; o < n; o += b) for (let i = 0; i < b; i++) for (let j = 0; j < b; j++) Q[(o + i) * n + o + j] = Hb[i * b + j] * s;
  }
  return Q;
}

function popcount(x: number): number {
  let c = 0;
  while (x) {
    x &= x - 1;
    c++;
  }
  return c;
}
