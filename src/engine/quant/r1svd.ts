// Stage A of LoPRo (spec §1, steps 1–4): the activation-derived column scale α and the rank-r
// part of A = W·diag(α) by R1SVD (rank-one power iterations with deflation), with the factors
// rounded to their storage precision *inside* the loop: û = u·√m and v̂ = v·√n in FP8 E4M3,
// σ̂ = σ/√(mn) in FP16. Deflating with the rounded factors lets later rounds absorb the FP8
// error of earlier ones [I]. W_r is rebuilt from the stored (rounded) factors only.

import type { AlphaNorm } from '../../protocol/config';
import { encodeF16, encodeF8E4M3 } from './fp8';
import { SeededRng, frob2, matTVec, matVec, norm2, type FloatArray } from './lopro_mat';

/** The stored low-rank factors of one layer, with their decoded values. */
export interface LowRankFactors {
  rows: number;
  cols: number;
  /** Rank actually kept (≤ requested; stops early on an exactly-low-rank A). */
  rank: number;
  /** FP8 E4M3 codes of U·√m, m×r row-major (column k = û_k). */
  uCodes: Uint8Array;
  /** FP8 E4M3 codes of V·√n, r×n row-major (row k = v̂_k). */
  vCodes: Uint8Array;
  /** FP16 bits of σ_k/√(mn) (the factor scales folded in). */
  sigmaBits: Uint16Array;
  /** Multipliers applied to the unit vectors before FP8 (√m, √n); σ̂ already divides by both. */
  uScale: number;
  vScale: number;
  /** Decoded values: U m×r, V r×n, σ̂ (length r); W_r·diag(α) = U·diag(σ̂)·V exactly. */
  U: Float64Array;
  V: Float64Array;
  sigma: Float64Array;
  /** Fraction of ‖A‖²_F captured: 1 − ‖A − U·diag(σ̂)·V‖²_F / ‖A‖²_F. */
  energy: number;
}

/** The authors' lower clamp of α before normalising ('clampRange'). */
const ALPHA_CLAMP = 1e-4;

export interface R1svdOptions {
  rank: number;
  powerIters: number;
  seed: number;
  /** Round û, v̂ to FP8 and σ̂ to FP16 (default true; false gives the plain R1SVD for tests). */
  roundFactors?: boolean;
}

/**
 * α_j = (mean_t |x_tj|)^β, normalised (`norm`, config.ts AlphaNorm), then rounded to FP16 (its stored form).
 * `meanAbs` null (data-free) or β = 0 → α = 1. 'geomean': columns with mean|x| = 0 (dead inputs) get the floor
 * 1e-6·max so that diag(α)⁻¹ exists (their weights do not affect the output anyway), divided by the geometric mean;
 * 'clampRange': α clamped below at 1e-4 and divided by √(max·min), which centres the log range in FP16's.
 * Only α's spread matters: a common factor scales σ and leaves W_r unchanged.
 */
export function columnScaleAlpha(meanAbs: ArrayLike<number> | null, cols: number, beta: number, norm: AlphaNorm = 'geomean'): { alpha: Float64Array; alphaBits: Uint16Array } {
  const raw = new Float64Array(cols).fill(1);
  if (meanAbs && beta > 0) {
    if (meanAbs.length !== cols) throw new RangeError(`actStats has ${meanAbs.length} columns, the layer has ${cols}`);
    let mx = 0;
    for (let j = 0; j < cols; j++) if (meanAbs[j] > mx) mx = meanAbs[j];
    if (mx > 0 && norm === 'geomean') {
      const floor = 1e-6 * mx;
      let logSum = 0;
      for (let j = 0; j < cols; j++) {
        raw[j] = Math.max(meanAbs[j], floor) ** beta;
        logSum += Math.log(raw[j]);
      }
      const gm = Math.exp(logSum / cols);
      for (let j = 0; j < cols; j++) raw[j] /= gm;
    } else if (mx > 0) {
      let lo = Infinity,
        hi = 0;
      for (let j = 0; j < cols; j++) {
        raw[j] = Math.max(meanAbs[j] ** beta, ALPHA_CLAMP);
        lo = Math.min(lo, raw[j]);
        hi = Math.max(hi, raw[j]);
      }
      const mid = Math.sqrt(lo * hi);
      for (let j = 0; j < cols; j++) raw[j] /= mid;
    }
  }
  const alpha = new Float64Array(cols);
  const alphaBits = encodeF16(raw, alpha);
  return { alpha, alphaBits };
}

/** A = W·diag(α) as a float32 working copy (the matrix R1SVD deflates in place). */
export function scaleColumns(wVals: ArrayLike<number>, rows: number, cols: number, alpha: ArrayLike<number>, out: FloatArray = new Float32Array(rows * cols)): FloatArray {
  for (let i = 0; i < rows; i++) {
    const o = i * cols;
    for (let j = 0; j < cols; j++) out[o + j] = wVals[o + j] * alpha[j];
  }
  return out;
}

/**
 * R1SVD on a working copy of A (m×n). Per round: s ~ N(0, Iₙ); y = A·s; `powerIters` times
 * y ← A·(Aᵀ·y)/‖·‖; u = y/‖y‖; z = Aᵀ·u; σ = ‖z‖; v = z/σ; round; deflate A −= σ̂·û·v̂ᵀ.
 * Cost (2·it + 3)·m·n per rank (the +1 is the deflation), all over float32 A with float64 sums.
 */
/**
 * R1SVD's factors, collected round by round (shared by the TypeScript, worker-pool and device
 * engines). `add` turns one round's unit u = y and z = Aᵀu (σ = ‖z‖) into what is stored —
 * û = u·√m and v̂ = (z/σ)·√n rounded to FP8 E4M3, σ̂ = σ/√(mn) to FP16 (spec §1.3) — and returns
 * exactly those values (deflation uses them); `layout` builds U (m×r), V (r×n) and the codes.
 */
export class R1svdFactorSet {
  readonly Ucols: Float64Array[] = [];
  readonly Vrows: Float64Array[] = [];
  readonly sig: number[] = [];
  private readonly uC: Uint8Array[] = [];
  private readonly vC: Uint8Array[] = [];
  private readonly sB: number[] = [];
  readonly sqm: number;
  readonly sqn: number;
  constructor(
    readonly m: number,
    readonly n: number,
    readonly round: boolean,
  ) {
    this.sqm = Math.sqrt(m);
    this.sqn = Math.sqrt(n);
  }

  add(y: ArrayLike<number>, z: ArrayLike<number>, sigma: number): { uHat: Float64Array; vHat: Float64Array; sHat: number } {
    const { m, n, sqm, sqn, round, uC, vC, sB } = this;
    const uHat = new Float64Array(m),
      vHat = new Float64Array(n);
    for (let i = 0; i < m; i++) uHat[i] = y[i] * sqm;
    for (let j = 0; j < n; j++) vHat[j] = (z[j] / sigma) * sqn;
    let sHat = sigma / (sqm * sqn);
    if (round) {
      uC.push(encodeF8E4M3(uHat, uHat));
      vC.push(encodeF8E4M3(vHat, vHat));
      const sh = new Float64Array(1);
      sB.push(encodeF16([sHat], sh)[0]);
      sHat = sh[0];
    }
    this.Ucols.push(uHat);
    this.Vrows.push(vHat);
    this.sig.push(sHat);
    return { uHat, vHat, sHat };
  }

  layout(): Omit<LowRankFactors, 'energy'> {
    const { m, n, sqm, sqn, round, uC, vC, sB, Ucols, Vrows, sig } = this;
    const r = sig.length;
    const U = new Float64Array(m * r),
      V = new Float64Array(r * n),
      sigma = Float64Array.from(sig);
    const uCodes = new Uint8Array(m * r),
      vCodes = new Uint8Array(r * n);
    for (let k = 0; k < r; k++) {
      for (let i = 0; i < m; i++) U[i * r + k] = Ucols[k][i];
      V.set(Vrows[k], k * n);
      if (round) {
        for (let i = 0; i < m; i++) uCodes[i * r + k] = uC[k][i];
        vCodes.set(vC[k], k * n);
      }
    }
    const sigmaBits = round ? Uint16Array.from(sB) : encodeF16(sigma);
    if (!round) {
      encodeF8E4M3(U).forEach((c, i) => (uCodes[i] = c));
      encodeF8E4M3(V).forEach((c, i) => (vCodes[i] = c));
    }
    return { rows: m, cols: n, rank: r, uCodes, vCodes, sigmaBits, uScale: sqm, vScale: sqn, U, V, sigma };
  }
}

export function r1svd(aVals: ArrayLike<number>, m: number, n: number, opts: R1svdOptions): LowRankFactors {
  const A = Float32Array.from(aVals as ArrayLike<number>);
  return r1svdInPlace(A, m, n, opts);
}

/** A step the R1SVD rounds ask their driver for: out = A_k·x ('mv'), out = A_kᵀ·x ('mtv'), or deflate by a new factor. */
export type R1svdStep =
  | { op: 'mv'; x: Float64Array; out: Float64Array }
  | { op: 'mtv'; x: Float64Array; out: Float64Array }
  | { op: 'added'; uHat: Float64Array; vHat: Float64Array; sHat: number };

/**
 * The R1SVD rounds (start vectors, power iterations, normalisation, stopping rules, f.add), written once
 * as a generator that hands the mat-vecs on the deflated A_k — and the deflation itself — to its driver:
 * r1svdInPlace (TypeScript, synchronous) and r1svdRoundsAsync (the worker pool). The same steps in the
 * same order, so a driver is bit-identical to r1svdInPlace when its mat-vecs are.
 */
export function* r1svdRounds(m: number, n: number, opts: R1svdOptions, f: R1svdFactorSet): Generator<R1svdStep, void, void> {
  const rMax = Math.max(0, Math.min(opts.rank, m, n));
  const rng = new SeededRng(opts.seed);
  const s = new Float64Array(n),
    y = new Float64Array(m),
    z = new Float64Array(n);
  for (let k = 0; k < rMax; k++) {
    for (let j = 0; j < n; j++) s[j] = rng.gaussian();
    yield { op: 'mv', x: s, out: y };
    for (let it = 0; it < opts.powerIters; it++) {
      yield { op: 'mtv', x: y, out: z };
      yield { op: 'mv', x: z, out: y };
      const ny = norm2(y);
      if (!(ny > 0)) break;
      for (let i = 0; i < m; i++) y[i] /= ny;
    }
    const ny = norm2(y);
    if (!(ny > 0) || !Number.isFinite(ny)) break; // A is (numerically) exactly rank k
    for (let i = 0; i < m; i++) y[i] /= ny;
    yield { op: 'mtv', x: y, out: z };
    const sigma = norm2(z);
    if (!(sigma > 0) || !Number.isFinite(sigma)) break;
    yield { op: 'added', ...f.add(y, z, sigma) };
  }
}

/** Same as r1svd but deflates `A` itself (float32 or float64: the _ref twin passes float64). */
export function r1svdInPlace(A: FloatArray, m: number, n: number, opts: R1svdOptions): LowRankFactors {
  const total = frob2(A);
  const f = new R1svdFactorSet(m, n, opts.roundFactors !== false);
  for (const st of r1svdRounds(m, n, opts, f)) {
    if (st.op === 'mv') matVec(A, m, n, st.x, st.out);
    else if (st.op === 'mtv') matTVec(A, m, n, st.x, st.out);
    else {
      // Deflate with exactly what will be stored.
      const { uHat, vHat, sHat } = st;
      for (let i = 0; i < m; i++) {
        const a = sHat * uHat[i];
        if (a === 0) continue;
        const o = i * n;
        for (let j = 0; j < n; j++) A[o + j] -= a * vHat[j];
      }
    }
  }
  const energy = total > 0 ? 1 - frob2(A) / total : 0;
  return { ...f.layout(), energy };
}

/** r1svdRounds driven with asynchronous mat-vecs and deflation (the CPU backend's workers: backend/cpu/cpu_backend.ts). */
export async function r1svdRoundsAsync(
  m: number,
  n: number,
  opts: R1svdOptions,
  f: R1svdFactorSet,
  mv: (x: Float64Array, out: Float64Array) => Promise<void>,
  mtv: (y: Float64Array, out: Float64Array) => Promise<void>,
  afterAdd?: (added: { uHat: Float64Array; vHat: Float64Array; sHat: number }) => Promise<void>,
): Promise<void> {
  for (const st of r1svdRounds(m, n, opts, f)) {
    if (st.op === 'mv') await mv(st.x, st.out);
    else if (st.op === 'mtv') await mtv(st.x, st.out);
    else if (afterAdd) await afterAdd(st);
  }
}

/**
 * W_r = U·diag(σ̂)·V·diag(α)⁻¹ from decoded factors (m×n, float64). Matmul-shaped: (U·diag σ̂)·V,
 * then a column scale. `alpha` null means α = 1.
 */
export function lowRankWeight(
  U: ArrayLike<number>,
  sigma: ArrayLike<number>,
  V: ArrayLike<number>,
  m: number,
  n: number,
  r: number,
  alpha: ArrayLike<number> | null,
): Float64Array {
  const out = new Float64Array(m * n);
  const inv = new Float64Array(n).fill(1);
  if (alpha) for (let j = 0; j < n; j++) inv[j] = 1 / alpha[j];
  for (let i = 0; i < m; i++) {
    const o = i * n;
    for (let k = 0; k < r; k++) {
      const a = U[i * r + k] * sigma[k];
      if (a === 0) continue;
      const vk = k * n;
      for (let j = 0; j < n; j++) out[o + j] += a * V[vk + j];
    }
    for (let j = 0; j < n; j++) out[o + j] *= inv[j];
  }
  return out;
}

/** True-scale singular value estimates σ_k = σ̂_k·√m·√n (for the layer view). */
export function singularValuesOf(f: LowRankFactors): number[] {
  return Array.from(f.sigma, (s) => s * f.uScale * f.vScale);
}

/**
 * The first r rank-1 terms of a factorization. R1SVD deflates greedily, one seeded round at a time, so these are
 * the factors a rank-r run with the same seed finds (the measurement pass factors once at its largest rank).
 * `energy` is not recomputed (it describes the whole factorization).
 */
export function leadingFactors(f: LowRankFactors, r: number): LowRankFactors {
  const k = Math.min(r, f.rank);
  if (k === f.rank) return f;
  const { rows: m, cols: n } = f;
  const U = new Float64Array(m * k),
    uCodes = new Uint8Array(m * k);
  for (let i = 0; i < m; i++) {
    U.set(f.U.subarray(i * f.rank, i * f.rank + k), i * k);
    uCodes.set(f.uCodes.subarray(i * f.rank, i * f.rank + k), i * k);
  }
  return {
    ...f,
    rank: k,
    U,
    uCodes,
    V: f.V.slice(0, k * n),
    vCodes: f.vCodes.slice(0, k * n),
    sigma: f.sigma.slice(0, k),
    sigmaBits: f.sigmaBits.slice(0, k),
  };
}
