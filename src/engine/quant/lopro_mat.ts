// Small dense kernels shared by the LoPRo stages (row-major flat arrays, float64 accumulation).
// Also the seeded PRNG every random choice of LoPRo goes through (R1SVD starts, k-means init).

export type FloatArray = Float32Array | Float64Array;

/** mulberry32: tiny, fast, seedable; quality is plenty for start vectors and k-means seeding. */
export class SeededRng {
  private s: number;
  private spare: number | undefined;
  constructor(seed: number) {
    // Mix the seed so that seeds 0, 1, 2 … give unrelated streams.
    this.s = (Math.imul((seed | 0) ^ 0x9e3779b9, 0x85ebca6b) ^ 0xc2b2ae35) >>> 0;
  }
  /** Uniform in [0, 1). */
  next(): number {
    let t = (this.s = (this.s + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  /** Standard normal (Box–Muller, the second value kept for the next call). */
  gaussian(): number {
    if (this.spare !== undefined) {
      const v = this.spare;
      this.spare = undefined;
      return v;
    }
    let u = 0;
    while (u === 0) u = this.next();
    const v = this.next();
    const r = Math.sqrt(-2 * Math.log(u));
    this.spare = r * Math.sin(2 * Math.PI * v);
    return r * Math.cos(2 * Math.PI * v);
  }
  /** Integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
}

/** y = A·x, A rows×cols. */
export function matVec(aVals: ArrayLike<number>, rows: number, cols: number, x: ArrayLike<number>, y: Float64Array = new Float64Array(rows)): Float64Array {
  for (let i = 0; i < rows; i++) {
    let s = 0;
    const o = i * cols;
    for (let j = 0; j < cols; j++) s += aVals[o + j] * x[j];
    y[i] = s;
  }
  return y;
}

/** z = Aᵀ·y, A rows×cols (row-major walk: axpy per row, so A is read once, in order). */
export function matTVec(aVals: ArrayLike<number>, rows: number, cols: number, y: ArrayLike<number>, z: Float64Array = new Float64Array(cols)): Float64Array {
  z.fill(0);
  for (let i = 0; i < rows; i++) {
    const yi = y[i];
    if (yi === 0) continue;
    const o = i * cols;
    for (let j = 0; j < cols; j++) z[j] += yi * aVals[o + j];
  }
  return z;
}

/** C = A·B, A m×k, B k×n (i-k-j order: contiguous inner loop). Float64 result. */
export function matmul(aVals: ArrayLike<number>, bVals: ArrayLike<number>, m: number, k: number, n: number): Float64Array {
  const C = new Float64Array(m * n);
  for (let i = 0; i < m; i++) {
    const ci = i * n;
    for (let p = 0; p < k; p++) {
      const a = aVals[i * k + p];
      if (a === 0) continue;
      const bp = p * n;
      for (let j = 0; j < n; j++) C[ci + j] += a * bVals[bp + j];
    }
  }
  return C;
}

/** ‖x‖₂. */
export function norm2(x: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < x.length; i++) s += x[i] * x[i];
  return Math.sqrt(s);
}

/** ‖A‖²_F. */
export function frob2(aVals: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < aVals.length; i++) s += aVals[i] * aVals[i];
  return s;
}

/** Transpose rows×cols → cols×rows (same element type as the input). */
export function transpose<T extends FloatArray>(aVals: T, rows: number, cols: number): T {
  const out = new (aVals.constructor as new (n: number) => T)(rows * cols);
  for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) out[j * rows + i] = aVals[i * cols + j];
  return out;
}
