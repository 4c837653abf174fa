// LoPRo's stages A, B and the reconstruction, row/column-parallel on the GptqPool workers, exact:
// every parallel piece computes the same float64 sums in the same order as the single-threaded code
// (mat-vecs split by rows; Aᵀ·y and column sums split by columns, each still summed over rows in
// order; deflation, low-rank product, gather + FWHT and dequantization split by rows). The scalar
// steps (start vectors, norms, FP8/FP16 rounding, argsort) stay here, copied from r1svd.ts /
// permute.ts so the result is bit-identical to quant/lopro.ts (tested). H′ = QᵀH_pQ is built on the
// pool too (rows permuted + FWHT, transpose + FWHT, symmetrise: rotation.ts's passes, split by rows).

import type { LayerConfig } from '../../protocol/config';
import { ErrorCode } from '../../protocol/messages';
import { ProtocolError } from '../../protocol/rpc';
import type { GptqOptions } from './gptq';
import { columnScaleAlpha, R1svdFactorSet, r1svdRoundsAsync, type LowRankFactors, type R1svdOptions } from './r1svd';
import { argsortDescending, importanceFromAbsSums } from './permute';
import { planRotation, type RotationPlan } from './rotation';
import { frob2 } from './lopro_mat';
import { loproStoredLayer, type LoproStoredLayer } from './lopro_dequant';
import type { GptqEngine, FastLoproResult } from './gptq_device_lopro';
import type { GptqPool } from './gptq_parallel';
import { weightedKMeansSplit, type KMeansArrays, type KMeansPass } from './kmeans';
import { stageClock } from './report';

/** One piece of row/column-parallel work (all arrays SharedArrayBuffer-backed unless noted). */
export type ParallelTask =
  | { kind: 'mv'; A: Float32Array; n: number; x: Float64Array; y: Float64Array; r0: number; r1: number }
  | { kind: 'mtv'; A: Float32Array; m: number; n: number; y: Float64Array; z: Float64Array; c0: number; c1: number }
  | { kind: 'deflate'; A: Float32Array; n: number; u: Float64Array; v: Float64Array; s: number; r0: number; r1: number }
  | { kind: 'residual'; W: Float32Array; R: Float64Array; n: number; rank: number; U: Float64Array; sigma: Float64Array; V: Float64Array; alpha: Float64Array; r0: number; r1: number }
  | { kind: 'colAbsSum'; R: Float64Array; m: number; n: number; out: Float64Array; c0: number; c1: number }
  | { kind: 'gatherRotate'; R: Float64Array; Rt: Float64Array; n: number; perm: Int32Array; plan: RotationPlan; r0: number; r1: number }
  /** H′ = QᵀH_pQ in three passes (rotation.ts rotateHessian + permute.ts permuteSymmetric, same order). */
  | { kind: 'permRotRows'; H: Float64Array; M: Float64Array; n: number; perm: Int32Array; plan: RotationPlan; r0: number; r1: number }
  | { kind: 'transRotRows'; M: Float64Array; T: Float64Array; n: number; plan: RotationPlan; r0: number; r1: number }
  | { kind: 'symmetrize'; T: Float64Array; n: number; r0: number; r1: number }
  /** `stored` is a plain (copied) row slice; `out` the shared rows×cols Ŵ. */
  | { kind: 'dequant'; stored: LoproStoredLayer; out: Float32Array; r0: number }
  /** W → Wsh (copy) and A = W·diag(α) (scaleColumns), rows r0..r1. */
  | { kind: 'scaleCols'; W: Float32Array; Wsh: Float32Array; A: Float32Array; alpha: Float64Array; n: number; r0: number; r1: number }
  /** dst[i0:i1] = float32(src[i0:i1]); throws at the first value that is not finite as float32 ('non-finite value … at flat index i'). */
  | { kind: 'toF32'; src: Float64Array; dst: Float32Array; i0: number; i1: number }
  /** k-means' per-point passes (kmeans.ts kmeansBest / kmeansNearest) over points r0..r1 of shared arrays. */
  | { kind: 'kmeans'; a: KMeansArrays; pass: KMeansPass; d: number; k: number; r0: number; r1: number };

function shared<T extends Float32Array | Float64Array>(Arr: { new (b: ArrayBuffer): T; BYTES_PER_ELEMENT: number }, n: number): T {
  return new Arr(new SharedArrayBuffer(n * Arr.BYTES_PER_ELEMENT) as unknown as ArrayBuffer);
}

/** Runs `make(a, b)` for each of `pool.size` slices of [0, total) (equal, or `cut(k, n)`) and waits for all (the pool held exclusively). */
export function runSlices(pool: GptqPool, total: number, make: (a: number, b: number) => ParallelTask, cut?: (k: number, n: number) => number): Promise<void> {
  return pool.exclusive(() => runSlicesOwned(pool, total, make, cut));
}

async function runSlicesOwned(pool: GptqPool, total: number, make: (a: number, b: number) => ParallelTask, cut?: (k: number, n: number) => number): Promise<void> {
  const n = Math.max(1, Math.min(pool.size, total));
  const at = cut ?? ((k: number, p: number) => Math.round((k * total) / p));
  await Promise.all(
    pool.workers.slice(0, n).map((w, k) => new Promise<void>((resolve, reject) => {
      const onMsg = (m: { type: string; message?: string }) => {
        if (m.type !== 'taskDone' && m.type !== 'taskError') return;
        w.off('message', onMsg);
        if (m.type === 'taskError') reject(new Error(m.message));
        else resolve();
      };
      w.on('message', onMsg);
      w.postMessage({ type: 'task', task: make(at(k, n), at(k + 1, n)) });
    })),
  );
}

/** r1svdInPlace (r1svd.ts) with its mat-vecs and deflations on the pool; deflates the shared `A`. */
export async function r1svdParallel(pool: GptqPool, A: Float32Array, m: number, n: number, opts: R1svdOptions): Promise<LowRankFactors> {
  const total = frob2(A);
  const f = new R1svdFactorSet(m, n, opts.roundFactors !== false);
  // The workers read x and write out in shared buffers: copy in and out of the rounds' own vectors.
  const xs = shared(Float64Array, Math.max(m, n)), ys = shared(Float64Array, Math.max(m, n));
  const u = shared(Float64Array, m), v = shared(Float64Array, n);
  const mv = async (x: Float64Array, out: Float64Array) => {
    xs.set(x);
    await runSlices(pool, m, (r0, r1) => ({ kind: 'mv', A, n, x: xs, y: ys, r0, r1 }));
    out.set(ys.subarray(0, m));
  };
  const mtv = async (y: Float64Array, out: Float64Array) => {
    xs.set(y);
    await runSlices(pool, n, (c0, c1) => ({ kind: 'mtv', A, m, n, y: xs, z: ys, c0, c1 }));
    out.set(ys.subarray(0, n));
  };
  await r1svdRoundsAsync(m, n, opts, f, mv, mtv, async ({ uHat, vHat, sHat }) => {
    u.set(uHat);
    v.set(vHat);
    await runSlices(pool, m, (r0, r1) => ({ kind: 'deflate', A, n, u, v, s: sHat, r0, r1 }));
  });
  const energy = total > 0 ? 1 - frob2(A) / total : 0;
  return { ...f.layout(), energy };
}

/** rotateHessian(permuteSymmetric(H, perm), plan) on the pool: the same float64 operations in the same order. */
export async function rotateHessianParallel(pool: GptqPool, H: Float64Array, n: number, perm: Int32Array, plan: RotationPlan): Promise<Float64Array> {
  let Hs = H;
  if (!(H.buffer instanceof SharedArrayBuffer)) {
    Hs = shared(Float64Array, n * n);
    Hs.set(H);
  }
  const M = shared(Float64Array, n * n);
  await runSlices(pool, n, (r0, r1) => ({ kind: 'permRotRows', H: Hs, M, n, perm, plan, r0, r1 }));
  if (plan.block === 0) return M;
  const T = shared(Float64Array, n * n);
  await runSlices(pool, n, (r0, r1) => ({ kind: 'transRotRows', M, T, n, plan, r0, r1 }));
  // Row i of the upper triangle holds n−1−i pairs: cut so that every worker gets about the same number.
  await runSlices(pool, n, (r0, r1) => ({ kind: 'symmetrize', T, n, r0, r1 }), (k, p) => (k >= p ? n : Math.round(n - n * Math.sqrt(1 - k / p))));
  return T;
}

/** kmeans.ts weightedKMeans with its per-point passes on the pool (bit-identical; ~N·k work per pass). */
export async function kmeansOnPool(pool: GptqPool, pts: Float64Array, wts: Float64Array, N: number, d: number, K: number, o: { iters: number; seed: number }): Promise<Float64Array> {
  const r = await weightedKMeansSplit(pts, wts, N, d, K, o, (a, pass) => runSlices(pool, N, (r0, r1) => ({ kind: 'kmeans', a, pass, d, k: K, r0, r1 })));
  return r.centroids;
}

/** dst = float32(src) on the pool; a non-finite value is a NonFinite ProtocolError naming `what`. */
async function toFloat32(pool: GptqPool, src: Float64Array, dst: Float32Array, what: string): Promise<void> {
  try {
    await runSlices(pool, src.length, (i0, i1) => ({ kind: 'toF32', src, dst, i0, i1 }));
  } catch (e) {
    const msg = e instanceof Error ? e.message : String(e);
    if (!msg.startsWith('non-finite')) throw e;
    throw new ProtocolError(ErrorCode.NonFinite, `${what}: ${msg}`, 'lopro', 'check the layer weights and the calibration activations for overflow');
  }
}

/** A row slice of a stored lopro layer (everything dequantizeLoPRo reads per row), copied so it clones small. */
function rowSlice(s: LoproStoredLayer, r0: number, r1: number): LoproStoredLayer {
  const { cols, groups: G, rank } = s;
  return {
    ...s, rows: r1 - r0,
    codes: s.codes?.slice(r0 * cols, r1 * cols), scaleBits: s.scaleBits?.slice(r0 * G, r1 * G), zeros: s.zeros?.slice(r0 * G, r1 * G),
    uCodes: s.uCodes.slice(r0 * rank, r1 * rank),
  };
}

const now = () => performance.now() / 1000;

/** FastLoproResult plus what loproReport (quant/lopro.ts) needs for the report and the layer details. */
export interface ParallelLoproResult extends FastLoproResult {
  factors: LowRankFactors | null;
  importance: Float64Array;
  plan: RotationPlan;
  /** R = W − W_r (original column order) and R′ (permuted + rotated), rows×cols, shared buffers. */
  residual: Float64Array;
  rotated: Float64Array;
}

/** quantizeLayerLoPRoWith (gptq_device_lopro.ts) with the heavy stages on the pool; same stored parts. */
export async function quantizeLayerLoPRoParallel(
  pool: GptqPool, engine: GptqEngine,
  W: Float32Array, rows: number, cols: number, H: Float64Array, actStats: ArrayLike<number> | null,
  cfg: LayerConfig, seed: number, name = 'layer',
  /** Stage A's R1SVD (default: r1svdParallel on the pool; r1svd_device.ts's r1svdDevice keeps A on an EP). */
  lowRank?: (A: Float32Array, m: number, n: number, opts: R1svdOptions) => Promise<LowRankFactors>,
  /** float32Engine: `engine` computes in float32 and takes GptqOptions.f32Inputs (the fused kernels). */
  opts?: { float32Engine?: boolean },
): Promise<ParallelLoproResult> {
  if (cfg.method !== 'lopro') throw new Error(`quantizeLayerLoPRoParallel: method ${cfg.method} (only lopro)`);
  const { seconds, lap } = stageClock();
  const { alpha, alphaBits } = columnScaleAlpha(actStats, cols, cfg.beta);
  const Wsh = shared(Float32Array, rows * cols);
  const R = shared(Float64Array, rows * cols);
  let factors: LowRankFactors | null = null;
  if (cfg.rank > 0) {
    const A = shared(Float32Array, rows * cols);
    // Wsh = W and A = W·diag(α) (scaleColumns) on the pool: two passes over a 7B MLP layer's 45 M weights.
    const Wsrc = W.buffer instanceof SharedArrayBuffer ? W : (Wsh.set(W), Wsh);
    await runSlices(pool, rows, (r0, r1) => ({ kind: 'scaleCols', W: Wsrc, Wsh, A, alpha: Float64Array.from(alpha), n: cols, r0, r1 }));
    const ro = { rank: cfg.rank, powerIters: cfg.powerIters, seed };
    const t1 = now();
    factors = lowRank ? await lowRank(A, rows, cols, ro) : await r1svdParallel(pool, A, rows, cols, ro);
    const t2 = now();
    const f = factors, r = f.rank;
    await runSlices(pool, rows, (r0, r1) => ({ kind: 'residual', W: Wsh, R, n: cols, rank: r, U: f.U.slice(r0 * r, r1 * r), sigma: f.sigma, V: f.V, alpha, r0, r1 }));
    // Sub-stages for the benches (where lowrank's time goes): the R1SVD itself and the residual on the pool.
    seconds['lowrank.r1svd'] = t2 - t1;
    seconds['lowrank.residual'] = now() - t2;
  } else {
    Wsh.set(W);
    for (let i = 0; i < R.length; i++) R[i] = W[i];
  }
  lap('lowrank');
  // columnImportance (permute.ts), with the column sums on the pool.
  const meanAbs = shared(Float64Array, cols); // Σ_i |R_ij|
  await runSlices(pool, cols, (c0, c1) => ({ kind: 'colAbsSum', R, m: rows, n: cols, out: meanAbs, c0, c1 }));
  const hDiag = new Float64Array(cols);
  for (let j = 0; j < cols; j++) hDiag[j] = H[j * cols + j];
  const imp = importanceFromAbsSums(hDiag, meanAbs, rows);
  const perm = argsortDescending(imp);
  const plan = planRotation(cols, cfg.rotation, cfg.salientBlock, cfg.hadamardBlock);
  const Rt = shared(Float64Array, rows * cols);
  const rotating = runSlices(pool, rows, (r0, r1) => ({ kind: 'gatherRotate', R, Rt, n: cols, perm, plan, r0, r1 }));
  await rotating;
  const Ht = await rotateHessianParallel(pool, H, cols, perm, plan);
  lap('permute+rotate');
  // A float32 engine (the fused kernels) gets R′ and H′ converted and checked finite on the pool, and may
  // modify them (they are this call's own): on the main thread that was ~1.2 s per 4096×11008 layer.
  let f32Inputs: GptqOptions['f32Inputs'];
  if (opts?.float32Engine) {
    const W32 = shared(Float32Array, rows * cols), H32 = shared(Float32Array, cols * cols);
    await toFloat32(pool, Rt, W32, 'W′ (the rotated residual)');
    await toFloat32(pool, Ht, H32, 'H′ (the rotated Hessian)');
    f32Inputs = { W: W32, H: H32 };
    lap('gptq');
  }
  const g = cfg.groupSize === -1 ? cols : Math.min(cfg.groupSize, cols);
  const q = await engine(Rt, rows, cols, Ht, {
    f32Inputs,
    bits: cfg.bits, groupSize: cfg.groupSize === -1 ? -1 : g, sym: cfg.sym, clip: cfg.clip, percDamp: cfg.percDamp, blockSize: cfg.blockSize,
    actOrder: cfg.actOrder, staticGroups: cfg.staticGroups, name, onWarning: () => {},
    dequantized: false, // Ŵ comes from the stored codes below
  });
  lap('gptq');
  const stored = loproStoredLayer({ rows, cols, cfg, groupSize: g, perm, alphaBits, factors, plan, q });
  const out = shared(Float32Array, rows * cols);
  await runSlices(pool, rows, (r0, r1) => ({ kind: 'dequant', stored: rowSlice(stored, r0, r1), out, r0 }));
  const reconstructed = Float32Array.from(out); // a plain buffer (ORT and transfers refuse shared ones)
  lap('reconstruct');
  return { stored, reconstructed, gptq: q, seconds, factors, importance: imp, plan, residual: R, rotated: Rt };
}
