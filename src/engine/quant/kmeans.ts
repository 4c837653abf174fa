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

/** The arrays one k-means run works on (SharedArrayBuffer-backed when workers share them). */
export interface KMeansArrays {
  P: Float64Array;
  Wt: Float64Array;
  C: Float64Array;
  best: Float64Array;
  assign: Uint16Array;
  pd: Float64Array;
}

/** The per-point passes, over points [p0, p1): the only O(N·k) work, so the part worth splitting over threads. */
export type KMeansPass = { kind: 'best'; c: number } | { kind: 'nearest' };

/** best[p] = min(best[p], dist(p, c)) for p in [p0, p1). */
export function kmeansBest(a: KMeansArrays, d: number, c: number, p0: number, p1: number): void {
  const { P, Wt, C, best } = a,
    co = c * d;
  for (let p = p0; p < p1; p++) {
    const po = p * d;
    let s = 0;
    for (let t = 0; t < d; t++) {
      const e = P[po + t] - C[co + t];
      s += Wt[po + t] * e * e;
    }
    if (s < best[p]) best[p] = s;
  }
}

/** assign[p], pd[p] = the nearest centre and its distance, for p in [p0, p1). */
export function kmeansNearest(a: KMeansArrays, d: number, k: number, p0: number, p1: number): void {
  const { P, Wt, C, assign, pd } = a;
  for (let p = p0; p < p1; p++) {
    let bc = 0,
      bv = Infinity;
    if (d === 2) {
      const x0 = P[2 * p],
        x1 = P[2 * p + 1],
        w0 = Wt[2 * p],
        w1 = Wt[2 * p + 1];
      for (let c = 0; c < k; c++) {
        const e0 = x0 - C[2 * c],
          e1 = x1 - C[2 * c + 1];
        const v = w0 * e0 * e0 + w1 * e1 * e1; // = (0 + w0·e0·e0) + w1·e1·e1: both terms ≥ 0
        if (v < bv) {
          bv = v;
          bc = c;
        }
      }
    } else {
      const po = p * d;
      for (let c = 0; c < k; c++) {
        const co = c * d;
        let v = 0;
        for (let t = 0; t < d; t++) {
          const e = P[po + t] - C[co + t];
          v += Wt[po + t] * e * e;
        }
        if (v < bv) {
          bv = v;
          bc = c;
        }
      }
    }
    assign[p] = bc;
    pd[p] = bv;
  }
}

function kmeansArrays(points: ArrayLike<number>, weights: ArrayLike<number>, N: number, d: number, k: number, alloc: (bytes: number) => ArrayBuffer): KMeansArrays {
  const f64 = (n: number, src?: ArrayLike<number>) => {
    const a = new Float64Array(alloc(8 * n), 0, n);
    if (src) a.set(src);
    return a;
  };
  return { P: f64(N * d, points), Wt: f64(N * d, weights), C: f64(k * d), best: f64(N).fill(Infinity), assign: new Uint16Array(alloc(2 * N), 0, N), pd: f64(N) };
}

/**
 * The k-means driver as a sequence of per-point passes (yielded, run by the caller over all points, on
 * this thread or split over workers) and the sequential steps between them (seeding, sums in point
 * order, centre updates): the same arithmetic in the same order as weightedKMeans_ref, whoever runs the passes.
 */
function* kmeansSteps(a: KMeansArrays, N: number, d: number, k: number, opts: { iters: number; seed: number }): Generator<KMeansPass, KMeansResult, void> {
  const { P, Wt, C, best, assign, pd } = a;
  const rng = new SeededRng(opts.seed);
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
    for (let t = 0; t < d; t++) C[c * d + t] = P[pick * d + t];
    yield { kind: 'best', c };
    first = pick;
  }
  const sumW = new Float64Array(k * d),
    sumWX = new Float64Array(k * d);
  const prev = new Uint16Array(N);
  let inertia = 0,
    it = 0;
  for (; it < opts.iters; it++) {
    prev.set(assign);
    yield { kind: 'nearest' };
    let changed = 0;
    inertia = 0;
    for (let p = 0; p < N; p++) {
      if (prev[p] !== assign[p] || it === 0) changed++;
      inertia += pd[p];
    }
    if (changed === 0 && it > 0) break;
    sumW.fill(0);
    sumWX.fill(0);
    for (let p = 0; p < N; p++) {
      const co = assign[p] * d,
        po = p * d;
      for (let t = 0; t < d; t++) {
        const w = Wt[po + t];
        sumW[co + t] += w;
        sumWX[co + t] += w * P[po + t];
      }
    }
    for (let c = 0; c < k; c++) {
      let empty = true;
      for (let t = 0; t < d; t++) if (sumW[c * d + t] > 0) empty = false;
      if (empty) {
        // Re-seed at the point that is currently worst represented.
        let worst = 0;
        for (let p = 1; p < N; p++) if (pd[p] > pd[worst]) worst = p;
        for (let t = 0; t < d; t++) C[c * d + t] = P[worst * d + t];
        pd[worst] = 0;
        continue;
      }
      for (let t = 0; t < d; t++) if (sumW[c * d + t] > 0) C[c * d + t] = sumWX[c * d + t] / sumW[c * d + t];
    }
  }
  return { centroids: C.slice(), assign: assign.slice(), inertia, iterations: it };
}

/**
 * points: N×d, weights: N×d (per point, per dimension, ≥ 0). k ≤ 65536. When N ≤ k every point is
 * its own centroid and the rest are copies of the last one. Bit-identical to weightedKMeans_ref (tested);
 * kmeansSteps + the per-point passes, all on this thread.
 */
export function weightedKMeans(points: ArrayLike<number>, weights: ArrayLike<number>, N: number, d: number, k: number, opts: { iters: number; seed: number }): KMeansResult {
  if (k < 1 || k > 65536) throw new RangeError(`k must be in [1, 65536], got ${k}`);
  if (N === 0) return { centroids: new Float64Array(k * d), assign: new Uint16Array(0), inertia: 0, iterations: 0 };
  const a = kmeansArrays(points, weights, N, d, k, (b) => new ArrayBuffer(b));
  const steps = kmeansSteps(a, N, d, k, opts);
  for (let r = steps.next(); ; r = steps.next()) {
    if (r.done) return r.value;
    if (r.value.kind === 'best') kmeansBest(a, d, r.value.c, 0, N);
    else kmeansNearest(a, d, k, 0, N);
  }
}

/**
 * weightedKMeans with the per-point passes split over `run` (e.g. the CPU backend's workers: backend/cpu/cpu_backend.ts
 * kmeansOnPool), the arrays in SharedArrayBuffers. Same result, bit for bit.
 */
export async function weightedKMeansSplit(
  points: ArrayLike<number>,
  weights: ArrayLike<number>,
  N: number,
  d: number,
  k: number,
  opts: { iters: number; seed: number },
  run: (a: KMeansArrays, pass: KMeansPass) => Promise<void>,
): Promise<KMeansResult> {
  if (k < 1 || k > 65536) throw new RangeError(`k must be in [1, 65536], got ${k}`);
  if (N === 0) return { centroids: new Float64Array(k * d), assign: new Uint16Array(0), inertia: 0, iterations: 0 };
  const a = kmeansArrays(points, weights, N, d, k, (b) => new SharedArrayBuffer(Math.ceil(b / 8) * 8) as unknown as ArrayBuffer);
  const steps = kmeansSteps(a, N, d, k, opts);
  for (let r = steps.next(); ; r = steps.next()) {
    if (r.done) return r.value;
    await run(a, r.value);
  }
}

/**
 * The naive twin of weightedKMeans (the first implementation, kept for tests: the fast one must give the
 * same bits). points: N×d, weights: N×d (per point, per dimension, ≥ 0). k ≤ 65536. When N ≤ k every point is
 * its own centroid and the rest are copies of the last one.
 */
export function weightedKMeans_ref(points: ArrayLike<number>, weights: ArrayLike<number>, N: number, d: number, k: number, opts: { iters: number; seed: number }): KMeansResult {
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
  const sumW = new Float64Array(k * d),
    sumWX = new Float64Array(k * d);
  const pd = new Float64Array(N);
  let inertia = 0,
    it = 0;
  for (; it < opts.iters; it++) {
    let changed = 0;
    inertia = 0;
    for (let p = 0; p < N; p++) {
      let bc = 0,
        bv = Infinity;
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
