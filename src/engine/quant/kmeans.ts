// Weighted k-means for GPTVQ codebook initialisation (van Baalen et al. 2024, §3.2): points are
// d-dimensional weight vectors, each dimension weighted by the importance of its column
// (1/[Hinv]_jj², Hinv the upper Cholesky factor of H⁻¹, GPTQ's per-column loss weight), so the
// distance is Σ_c w_c·(x_c − μ_c)². Seeded k-means++ start, Lloyd iterations, empty clusters
// re-seeded at the worst-fit point. Deterministic for a given seed.

import { SeededRng } from './lopro_mat';

export interface KMeansResult {
  /** k×d centroids, row-major. */
  centroids: Float64Array;
  /** Cluster of every point. */
  assign: Uint16Array;
  /** Σ_p Σ_c w_pc (x_pc − μ_{a(p),c})² at the end. */
  inertia: number;
  iterations: number;
}

/**
 * points: N×d, weights: N×d (per point, per dimension, ≥ 0). k ≤ 65536. When N ≤ k every point is
 * its own centroid and the rest are copies of the last one.
 */
export function weightedKMeans(points: ArrayLike<number>, weights: ArrayLike<number>, N: number, d: number, k: number, opts: { iters: number; seed: number }): KMeansResult {
  if (k < 1 || k > 65536) throw new RangeError(`k must be in [1, 65536], got ${k}`);
  const C = new Float64Array(k * d);
  const assign = new Uint16Array(N);
  if (N === 0) return { centroids: C, assign, inertia: 0, iterations: 0 };
  const rng = new SeededRng(opts.seed);
  const dist = (p: number, c: number) => {
    let s = 0;
    for (let t = 0; t < d; t++) {
      const e = points[p * d + t] - C[c * d + t];
      s += weights[p * d + t] * e * e;
    }
    return s;
  };
  // k-means++: first centre uniformly, then proportional to the weighted squared distance.
  const best = new Float64Array(N).fill(Infinity);
  let first = rng.int(N);
  for (let c = 0; c < k; c++) {
    let pick = first;
    if (c > 0) {
      let total = 0;
      for (let p = 0; p < N; p++) total += best[p];
      if (total > 0) {
        let r = rng.next() * total;
        pick = N - 1;
        for (let p = 0; p < N; p++) {
          r -= best[p];
          if (r < 0) {
            pick = p;
            break;
          }
        }
      } else pick = rng.int(N);
    }
    for (let t = 0; t < d; t++) C[c * d + t] = points[pick * d + t];
    for (let p = 0; p < N; p++) {
      const v = dist(p, c);
      if (v < best[p]) best[p] = v;
    }
    first = pick;
  }
  const sumW = new Float64Array(k * d), sumWX = new Float64Array(k * d);
  const pd = new Float64Array(N);
  let inertia = 0, it = 0;
  for (; it < opts.iters; it++) {
    let changed = 0;
    inertia = 0;
    for (let p = 0; p < N; p++) {
      let bc = 0, bv = Infinity;
      for (let c = 0; c < k; c++) {
        const v = dist(p, c);
        if (v < bv) {
          bv = v;
          bc = c;
        }
      }
      if (assign[p] !== bc || it === 0) changed++;
      assign[p] = bc;
      pd[p] = bv;
      inertia += bv;
    }
    if (changed === 0 && it > 0) break;
    sumW.fill(0);
    sumWX.fill(0);
    for (let p = 0; p < N; p++) {
      const c = assign[p];
      for (let t = 0; t < d; t++) {
        const w = weights[p * d + t];
        sumW[c * d + t] += w;
        sumWX[c * d + t] += w * points[p * d + t];
      }
    }
    for (let c = 0; c < k; c++) {
      let empty = true;
      for (let t = 0; t < d; t++) if (sumW[c * d + t] > 0) empty = false;
      if (empty) {
        // Re-seed at the point that is currently worst represented.
        let worst = 0;
        for (let p = 1; p < N; p++) if (pd[p] > pd[worst]) worst = p;
        for (let t = 0; t < d; t++) C[c * d + t] = points[worst * d + t];
        pd[worst] = 0;
        continue;
      }
      for (let t = 0; t < d; t++) if (sumW[c * d + t] > 0) C[c * d + t] = sumWX[c * d + t] / sumW[c * d + t];
    }
  }
  return { centroids: C, assign, inertia, iterations: it };
}
