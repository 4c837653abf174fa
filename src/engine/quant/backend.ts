// The operations the quantization drivers of this folder (gptq.ts, gptvq.ts, lopro.ts, rtn.ts) need, and the two
// backends that supply them (../backend/): cpu/ (TypeScript kernels over a worker pool, float64 where the reference is)
// and gpu/ (WGSL kernels on the engine's own WebGPU device, float32). A driver reads like its paper and
// never knows where its matrices live: it holds `Mat` handles of one `LayerSession` and asks the session
// for each step. A session owns every matrix it hands out and frees them all when closed.

import type { ClipMode } from '../../protocol/config';
import type { LowRankFactors, R1svdOptions } from './r1svd';
import type { RotationPlan } from './rotation';
import type { LoproStoredLayer } from './lopro_dequant';

export type BackendKind = 'cpu' | 'gpu';

/** A rows×cols row-major matrix of one session: a host array (cpu) or a device buffer (gpu). */
export interface Mat {
  readonly rows: number;
  readonly cols: number;
}

/** How a group's scale and zero are fitted (quantizer.ts findParams). */
export interface ParamsSpec {
  /** 2^bits − 1. */
  maxq: number;
  sym: boolean;
  clip: ClipMode;
}

/** Scale and zero per row and group (rows × groups; zero holds an integer). */
export interface GroupParams {
  scale: Float32Array;
  zero: Float32Array;
  groups: number;
}

/** GPTQ's column loop (quant/gptq.ts step 7) over a prepared W and the upper Hinv factor. */
export interface ColumnLoopSpec extends ParamsSpec {
  /** Lazy-batch width. */
  blockSize: number;
  /**
   * Group width along the quantization order, or −1 (one group per row, params given). With `dynamic`,
   * params are fitted at each group's first column from the global W, which lags the batch's own
   * updates (the reference's find_params quirk).
   */
  groupSize: number;
  dynamic: boolean;
  /** Groups per row; slot[k] = the group of the k-th quantized column. */
  groups: number;
  slot: Int32Array;
  /** The params when not `dynamic` (per row, or static groups). */
  params?: GroupParams;
  /** order[k] = the column quantized k-th: the codes come back in that original column order. */
  order: Int32Array;
}

export interface ColumnLoopResult {
  /** rows×cols codes in original column order. */
  codes: Uint8Array;
  scale: Float32Array;
  zero: Float32Array;
  /** Σ err²/2 (the reference's printed `error`). */
  loss: number;
}

/** GPTVQ's loop (quant/gptvq.ts) over a prepared W and the upper Hinv factor. */
export interface VqLoopSpec {
  vqDim: number;
  /** Bits per weight dimension: 2^(vqDim·bits) codewords. */
  bits: number;
  /** Columns per codebook (a multiple of vqDim), or −1 = all columns. */
  groupSize: number;
  blockSize: number;
  kmeansIters: number;
  seed: number;
}

export interface VqLoopResult {
  /** rows × (cols/vqDim) codeword indices. */
  codes: Uint16Array;
  /** FP16 bits of the codebooks (groups × entries × vqDim) and their values. */
  codebookBits: Uint16Array;
  codebooks: Float32Array;
  groups: number;
  entries: number;
  loss: number;
  /** kmeans: the groups' k-means, where the backend times it apart (the GPU backend's queue runs it between the loop's steps). */
  seconds: { kmeans?: number };
}

/** One layer's work on a backend. Every method may be called in any order; matrices never leave it. */
export interface LayerSession {
  /**
   * A copy of `data` as a matrix of this session. Non-finite values are an E_NON_FINITE error naming
   * `what` and `where` (the layer). `f32` is the same values as float32 when the caller has them
   * (the GPU takes it as is; the CPU keeps float64).
   */
  upload(data: Float32Array | Float64Array, rows: number, cols: number, what: string, where: string, f32?: Float32Array): Promise<Mat>;
  /** The matrix as float32 values on the host. */
  download(m: Mat): Promise<Float32Array>;
  /** Rows 0, step, 2·step, … of m (the layer view reads these). */
  sampleRows(m: Mat, step: number): Promise<ArrayLike<number>>;
  copy(m: Mat): Promise<Mat>;
  /** The n×n identity (Hinv of GPTQ's round-to-nearest fallback). */
  identity(n: number): Promise<Mat>;
  free(...m: (Mat | undefined)[]): void;

  /** A − B (same shape), a new matrix. */
  subtract(A: Mat, B: Mat): Promise<Mat>;
  /** X·diag(a), a new matrix. */
  scaleColumns(X: Mat, a: Float64Array): Promise<Mat>;
  /** Σ_i |X_ij| or Σ_i X_ij² per column (float64 sums). */
  columnSums(X: Mat, f: 'abs' | 'sq'): Promise<Float64Array>;
  diagonal(H: Mat): Promise<Float64Array>;

  /** R1SVD of A (r1svd.ts: the same start vectors and factor rounding); A may be deflated (left undefined). */
  r1svd(A: Mat, opts: R1svdOptions): Promise<LowRankFactors>;
  /** W − U·diag(σ̂)·V·diag(α)⁻¹ (the stored, rounded factors), a new matrix. */
  subtractLowRank(W: Mat, f: LowRankFactors, alpha: Float64Array): Promise<Mat>;
  /** X[:, perm]·Q (Q the plan's block rotation; none for plan.block = 0), a new matrix. */
  permuteRotate(X: Mat, perm: Int32Array, plan: RotationPlan): Promise<Mat>;
  /** Q·H[perm][:, perm]·Q, exactly symmetric, a new matrix. */
  permuteRotateSymmetric(H: Mat, perm: Int32Array, plan: RotationPlan): Promise<Mat>;

  /** Params of every row and group of `groupSize` columns (the last group may be short). */
  groupParams(W: Mat, groupSize: number, spec: ParamsSpec): Promise<GroupParams>;
  /** Round to nearest with the given params: codes (rows×cols) with column c in group ⌊c/groupSize⌋. */
  quantizeRtn(W: Mat, groupSize: number, params: GroupParams, maxq: number): Promise<Uint8Array>;
  /** GPTQ's dead inputs, in place: H_jj = 1 and W[:, j] = 0 for every j in `dead`. */
  markDead(W: Mat, H: Mat, dead: Int32Array): Promise<void>;
  /** H_jj += d in place (the damping). */
  addToDiagonal(H: Mat, d: number): Promise<void>;
  /** The upper U with UᵀU = H⁻¹ (a new matrix); throws NotPositiveDefiniteError. */
  choleskyInverseUpper(H: Mat): Promise<Mat>;
  /** GPTQ's lazy-batch column loop; W (in quantization order) is modified. */
  gptqColumnLoop(W: Mat, Hinv: Mat, spec: ColumnLoopSpec): Promise<ColumnLoopResult>;
  /** GPTVQ's loop; W is modified. */
  gptvqLoop(W: Mat, Hinv: Mat, spec: VqLoopSpec): Promise<VqLoopResult>;

  /** Ŵ from a layer's stored parts only (lopro_dequant.ts dequantizeLoPRo), a new matrix. */
  reconstruct(stored: LoproStoredLayer): Promise<Mat>;
  /** [tr((W−Ŵ)·H·(W−Ŵ)ᵀ), tr(W·H·Wᵀ)]: the layer's proxy loss and the loss of Ŵ = 0. */
  proxyLosses(W: Mat, wHat: Mat, H: Mat): Promise<[number, number]>;

  /** Frees everything the session still holds. */
  close(): void;
}

export interface Backend {
  readonly kind: BackendKind;
  /** What runs the math, for logs and reports: "cpu: 2 threads", "gpu: NVIDIA H100 …". */
  readonly label: string;
  /** The largest float32 weight a session can hold, bytes (a GPU's largest buffer binding); undefined: no such limit. */
  readonly maxMatrixBytes?: number;
  /** The widest n×n float32 matrix (a Hessian) a session can hold; undefined: no such limit. */
  readonly maxSquareCols?: number;
  session(): LayerSession;
  close(): Promise<void>;
}
