// Deterministic test data (mulberry32) shared by the compute and linalg tests.
import { mulberry32 } from '../../../src/engine/util/random';

export const rng = mulberry32;

/** Uniform in [-1, 1). */
export function randF32(n: number, seed: number): Float32Array {
  const r = rng(seed);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = 2 * r() - 1;
  return out;
}

export function randF64(n: number, seed: number): Float64Array {
  return Float64Array.from(randF32(n, seed));
}

/** SPD n×n: XᵀX/m + damp·I for a random m×n X with correlated columns (GPTQ-like Hessian). */
export function randSpd(n: number, seed: number, damp = 0.01): Float64Array {
  const m = n + 8;
  const x = randF64(m * n, seed);
  // Correlate neighbouring columns so the matrix is not close to diagonal.
  for (let r = 0; r < m; r++) for (let c = 1; c < n; c++) x[r * n + c] += 0.5 * x[r * n + c - 1];
  const h = new Float64Array(n * n);
  for (let r = 0; r < m; r++) {
    const row = r * n;
    for (let i = 0; i < n; i++) {
      const xi = x[row + i];
      if (xi === 0) continue;
      const hi = i * n;
      for (let j = 0; j < n; j++) h[hi + j] += xi * x[row + j];
    }
  }
  let mean = 0;
  for (let i = 0; i < n; i++) mean += h[i * n + i];
  mean /= n;
  for (let i = 0; i < n * n; i++) h[i] /= m;
  for (let i = 0; i < n; i++) h[i * n + i] += (damp * mean) / m;
  return h;
}

/** max |a-b| / max(|b|, tiny): a relative error over the whole array. */
export function relMaxErr(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`length ${a.length} != ${b.length}`);
  let num = 0;
  let den = 1e-30;
  for (let i = 0; i < a.length; i++) {
    num = Math.max(num, Math.abs(a[i] - b[i]));
    den = Math.max(den, Math.abs(b[i]));
  }
  return num / den;
}
