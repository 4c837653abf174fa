// Fast Walsh–Hadamard transform, normalised by 1/√b, Sylvester (natural) order.
// The normalised Sylvester Hadamard matrix is symmetric and orthogonal, hence its own inverse: every
// function here is its own inverse transform (LoPRo stage B, spec step 7: Q = blockdiag(I_bI, H_b, …)).
//
// In-place butterflies (b·log2 b adds per segment); the GPU backend's WGSL does the same per workgroup.

import { ProtocolError } from '../../protocol/rpc';
import { ErrorCode } from '../../protocol/messages';

type Vec = Float32Array | Float64Array;

export function isPowerOfTwo(b: number): boolean {
  return Number.isInteger(b) && b >= 1 && (b & (b - 1)) === 0;
}

/** In-place normalised FWHT of data[off .. off+b). */
export function fwht(data: Vec, off: number, b: number): void {
  for (let h = 1; h < b; h <<= 1) {
    for (let i = off; i < off + b; i += h << 1) {
      for (let j = i; j < i + h; j++) {
        const x = data[j];
        const y = data[j + h];
        data[j] = x + y;
        data[j + h] = x - y;
      }
    }
  }
  const s = 1 / Math.sqrt(b);
  for (let j = off; j < off + b; j++) data[j] *= s;
}

function checkBlocks(_rows: number, cols: number, start: number, b: number, what: string): number {
  if (!isPowerOfTwo(b)) throw new ProtocolError(ErrorCode.BadConfig, `Hadamard block size ${b} is not a power of two`, 'hadamardBlock');
  if (!(start >= 0 && start <= cols) || (cols - start) % b !== 0)
    throw new ProtocolError(
      ErrorCode.BadConfig,
      `${what}: ${cols - start} ${what === 'columns' ? 'columns' : 'rows'} after the first ${start} are not a multiple of the Hadamard block ${b}`,
      'hadamardBlock',
      'use a smaller power-of-two block that divides the width (spec step 7)',
    );
  return (cols - start) / b;
}

/** R ← R·Q on the row-major rows×cols matrix: every b-wide column block from `start` is transformed. */
export function blockHadamardColumns(R: Vec, rows: number, cols: number, start: number, b: number): void {
  const blocks = checkBlocks(rows, cols, start, b, 'columns');
  for (let r = 0; r < rows; r++) for (let k = 0; k < blocks; k++) fwht(R, r * cols + start + k * b, b);
}

/**
 * R ← Qᵀ·R: every block of b rows from row `start` is transformed (for H' = Qᵀ·H·Q together with the
 * column version). The butterflies run over whole rows, so the inner loop is contiguous.
 */
export function blockHadamardRows(R: Vec, rows: number, cols: number, start: number, b: number): void {
  const blocks = checkBlocks(cols, rows, start, b, 'rows');
  const s = 1 / Math.sqrt(b);
  for (let k = 0; k < blocks; k++) {
    const r0 = start + k * b;
    for (let h = 1; h < b; h <<= 1)
      for (let i = r0; i < r0 + b; i += h << 1)
        for (let j = i; j < i + h; j++) {
          const pj = j * cols;
          const ph = (j + h) * cols;
          for (let c = 0; c < cols; c++) {
            const x = R[pj + c];
            const y = R[ph + c];
            R[pj + c] = x + y;
            R[ph + c] = x - y;
          }
        }
    for (let i = r0 * cols; i < (r0 + b) * cols; i++) R[i] *= s;
  }
}

/** Dense normalised Sylvester Hadamard matrix: H[i][j] = (−1)^popcount(i & j) / √b. */
export function hadamardMatrix(b: number): Float64Array {
  if (!isPowerOfTwo(b)) throw new RangeError(`Hadamard size ${b} is not a power of two`);
  const out = new Float64Array(b * b);
  const s = 1 / Math.sqrt(b);
  for (let i = 0; i < b; i++)
    for (let j = 0; j < b; j++) {
      let v = i & j;
      let parity = 0;
      while (v) {
        parity ^= v & 1;
        v >>>= 1;
      }
      out[i * b + j] = parity ? -s : s;
    }
  return out;
}

/** Float64 twin of blockHadamardColumns: explicit dense products, new array. */
export function blockHadamardColumns_ref(R: ArrayLike<number>, rows: number, cols: number, start: number, b: number): Float64Array {
  const blocks = checkBlocks(rows, cols, start, b, 'columns');
  const H = hadamardMatrix(b);
  const out = Float64Array.from(R);
  for (let r = 0; r < rows; r++)
    for (let k = 0; k < blocks; k++) {
      const c0 = start + k * b;
      for (let j = 0; j < b; j++) {
        let s = 0;
        for (let i = 0; i < b; i++) s += R[r * cols + c0 + i] * H[i * b + j];
        out[r * cols + c0 + j] = s;
      }
    }
  return out;
}
