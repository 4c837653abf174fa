// The CPU backend: the TypeScript kernels of quant/ over the worker pool (pool.ts, tasks.ts), float64
// wherever the reference is (W, H, Hinv, R, R′, H′; A = W·diag(α) in float32 as r1svd.ts keeps it). Every
// operation gives the same bits as the float64 twins (gptq_ref.ts, lopro_ref.ts) for any thread count.

import { ErrorCode } from '../../../protocol/messages';
import { ProtocolError } from '../../../protocol/rpc';
import type { Backend, ColumnLoopResult, ColumnLoopSpec, GroupParams, LayerSession, Mat, ParamsSpec, VqLoopResult, VqLoopSpec } from '../../quant/backend';
import { choleskyInverseUpper } from '../../quant/gptq_linalg';
import { PROXY_LOSS_ROWS } from '../../quant/gptq_kernels';
import { vqLoopSteps } from '../../quant/gptvq';
import { weightedKMeansSplit } from '../../quant/kmeans';
import { frob2 } from '../../quant/lopro_mat';
import type { LoproStoredLayer } from '../../quant/lopro_dequant';
import { assertFiniteArray } from '../../quant/quantizer_checks';
import { R1svdFactorSet, r1svdRoundsAsync, type LowRankFactors, type R1svdOptions } from '../../quant/r1svd';
import type { RotationPlan } from '../../quant/rotation';
import { groupCount } from '../../quant/rtn';
import { WorkerPool } from './pool';

type Data = Float32Array | Float64Array;

/** A matrix of the CPU backend: host memory (shared with the workers when there are any). */
class HostMat implements Mat {
  constructor(
    readonly rows: number,
    readonly cols: number,
    readonly data: Data,
    readonly isIdentity = false,
  ) {}
}

function host(m: Mat): HostMat {
  if (!(m instanceof HostMat)) throw new Error('a matrix of another backend was given to the CPU backend');
  return m;
}

/** f64(m): m's values as the float64 array the kernels take (the CPU keeps W, H, R… in float64). */
function f64(m: Mat): Float64Array {
  const d = host(m).data;
  if (!(d instanceof Float64Array)) throw new Error('the CPU backend expected a float64 matrix here');
  return d;
}

export class CpuBackend implements Backend {
  readonly kind = 'cpu' as const;
  readonly label: string;
  private constructor(readonly pool: WorkerPool) {
    this.label = `cpu: ${pool.size} thread${pool.size > 1 ? 's' : ''}`;
  }

  static create(threads: number): CpuBackend {
    return new CpuBackend(WorkerPool.create(threads));
  }

  session(): LayerSession {
    return new CpuSession(this.pool);
  }

  close(): Promise<void> {
    return this.pool.close();
  }
}

class CpuSession implements LayerSession {
  constructor(private readonly pool: WorkerPool) {}

  private mat(rows: number, cols: number, f32 = false): HostMat {
    return new HostMat(rows, cols, f32 ? this.pool.alloc(Float32Array, rows * cols) : this.pool.alloc(Float64Array, rows * cols));
  }

  async upload(data: Float32Array | Float64Array, rows: number, cols: number, what: string, where: string): Promise<Mat> {
    if (data.length !== rows * cols) throw new ProtocolError(ErrorCode.ShapeMismatch, `${what} has ${data.length} values, expected ${rows}×${cols}`, where);
    assertFiniteArray(data, what, where);
    const m = this.mat(rows, cols);
    m.data.set(data);
    return m;
  }

  async download(m: Mat): Promise<Float32Array> {
    return Float32Array.from(host(m).data);
  }

  async sampleRows(m: Mat, step: number): Promise<ArrayLike<number>> {
    const { rows, cols, data } = host(m);
    const rs = Math.ceil(rows / step);
    const out = new (data.constructor as Float64ArrayConstructor)(rs * cols);
    for (let s = 0; s < rs; s++) out.set(data.subarray(s * step * cols, (s * step + 1) * cols), s * cols);
    return out;
  }

  async copy(m: Mat): Promise<Mat> {
    const { rows, cols, data, isIdentity } = host(m);
    const out = new HostMat(rows, cols, this.mat(rows, cols, data instanceof Float32Array).data, isIdentity);
    out.data.set(data);
    return out;
  }

  async identity(n: number): Promise<Mat> {
    const m = new HostMat(n, n, this.pool.alloc(Float64Array, n * n), true);
    for (let i = 0; i < n; i++) m.data[i * n + i] = 1;
    return m;
  }

  free(): void {
    // Host memory: the garbage collector frees what is no longer referenced.
  }

  async scaleColumns(X: Mat, a: Float64Array): Promise<Mat> {
    const { rows, cols } = X;
    const A = this.mat(rows, cols, true);
    const alpha = this.pool.share(a);
    await this.pool.run(rows, (r0, r1) => ({ kind: 'scaleCols', X: f64(X), A: A.data as Float32Array, alpha, n: cols, r0, r1 }));
    return A;
  }

  async columnSums(X: Mat, f: 'abs' | 'sq'): Promise<Float64Array> {
    const { rows, cols } = X;
    const out = this.pool.alloc(Float64Array, cols);
    await this.pool.run(cols, (c0, c1) => ({ kind: 'colSum', X: f64(X), f, m: rows, n: cols, out, c0, c1 }));
    return Float64Array.from(out);
  }

  async diagonal(H: Mat): Promise<Float64Array> {
    const { cols: n, data } = host(H);
    return Float64Array.from({ length: n }, (_, j) => data[j * n + j]);
  }

  /** r1svd.ts's rounds with the mat-vecs and deflations on the pool; deflates A (float32). */
  async r1svd(Am: Mat, opts: R1svdOptions): Promise<LowRankFactors> {
    const { rows: m, cols: n } = Am;
    const A = host(Am).data as Float32Array;
    const total = frob2(A);
    const f = new R1svdFactorSet(m, n, opts.roundFactors !== false);
    // The workers read x and write out in shared buffers: copy in and out of the rounds' own vectors.
    const xs = this.pool.alloc(Float64Array, Math.max(m, n)),
      ys = this.pool.alloc(Float64Array, Math.max(m, n));
    const u = this.pool.alloc(Float64Array, m),
      v = this.pool.alloc(Float64Array, n);
    const mv = async (x: Float64Array, out: Float64Array) => {
      xs.set(x);
      await this.pool.run(m, (r0, r1) => ({ kind: 'mv', A, n, x: xs, y: ys, r0, r1 }));
      out.set(ys.subarray(0, m));
    };
    const mtv = async (y: Float64Array, out: Float64Array) => {
      xs.set(y);
      await this.pool.run(n, (c0, c1) => ({ kind: 'mtv', A, m, n, y: xs, z: ys, c0, c1 }));
      out.set(ys.subarray(0, n));
    };
    await r1svdRoundsAsync(m, n, opts, f, mv, mtv, async ({ uHat, vHat, sHat }) => {
      u.set(uHat);
      v.set(vHat);
      await this.pool.run(m, (r0, r1) => ({ kind: 'deflate', A, n, u, v, s: sHat, r0, r1 }));
    });
    const energy = total > 0 ? 1 - frob2(A) / total : 0;
    return { ...f.layout(), energy };
  }

  async subtract(A: Mat, B: Mat): Promise<Mat> {
    const a = host(A).data,
      b = host(B).data;
    const D = this.mat(A.rows, A.cols);
    for (let i = 0; i < a.length; i++) D.data[i] = a[i] - b[i];
    return D;
  }

  async subtractLowRank(W: Mat, f: LowRankFactors, alpha: Float64Array): Promise<Mat> {
    const { rows, cols } = W;
    const R = this.mat(rows, cols);
    const r = f.rank,
      sigma = this.pool.share(f.sigma),
      V = this.pool.share(f.V),
      a = this.pool.share(alpha);
    await this.pool.run(rows, (r0, r1) => ({ kind: 'residual', W: f64(W), R: R.data as Float64Array, n: cols, rank: r, U: f.U.slice(r0 * r, r1 * r), sigma, V, alpha: a, r0, r1 }));
    return R;
  }

  async permuteRotate(X: Mat, perm: Int32Array, plan: RotationPlan): Promise<Mat> {
    const { rows, cols } = X;
    const Y = this.mat(rows, cols);
    await this.pool.run(rows, (r0, r1) => ({ kind: 'gatherRotate', X: f64(X), Y: Y.data as Float64Array, n: cols, perm, plan, r0, r1 }));
    return Y;
  }

  /** rotation.ts rotateHessian(permute.ts permuteSymmetric(H, perm), plan): the same float64 operations in the same order. */
  async permuteRotateSymmetric(Hm: Mat, perm: Int32Array, plan: RotationPlan): Promise<Mat> {
    const n = Hm.cols,
      H = f64(Hm);
    const M = this.mat(n, n);
    await this.pool.run(n, (r0, r1) => ({ kind: 'permRotRows', H, M: M.data as Float64Array, n, perm, plan, r0, r1 }));
    if (plan.block === 0) return M;
    const T = this.mat(n, n);
    await this.pool.run(n, (r0, r1) => ({ kind: 'transRotRows', M: M.data as Float64Array, T: T.data as Float64Array, n, plan, r0, r1 }));
    // Row i of the upper triangle holds n−1−i pairs: cut so that every worker gets about the same number.
    await this.pool.run(
      n,
      (r0, r1) => ({ kind: 'symmetrize', T: T.data as Float64Array, n, r0, r1 }),
      (k, p) => (k >= p ? n : Math.round(n - n * Math.sqrt(1 - k / p))),
    );
    return T;
  }

  async groupParams(W: Mat, groupSize: number, spec: ParamsSpec): Promise<GroupParams> {
    const { rows, cols } = W;
    const G = groupCount(cols, groupSize);
    const scale = this.pool.alloc(Float32Array, rows * G),
      zero = this.pool.alloc(Float32Array, rows * G);
    await this.pool.run(rows, (r0, r1) => ({ kind: 'groupParams', W: f64(W), n: cols, g: groupSize, G, maxq: spec.maxq, sym: spec.sym, clip: spec.clip, scale, zero, r0, r1 }));
    return { scale, zero, groups: G };
  }

  async quantizeRtn(W: Mat, groupSize: number, params: GroupParams, maxq: number): Promise<Uint8Array> {
    const { rows, cols } = W;
    const codes = this.pool.alloc(Uint8Array, rows * cols);
    const scale = this.pool.share(params.scale),
      zero = this.pool.share(params.zero);
    await this.pool.run(rows, (r0, r1) => ({ kind: 'rtnCodes', W: f64(W), n: cols, g: groupSize, G: params.groups, maxq, scale, zero, codes, r0, r1 }));
    return Uint8Array.from(codes);
  }

  async markDead(Wm: Mat, Hm: Mat, dead: Int32Array): Promise<void> {
    const W = f64(Wm),
      H = f64(Hm),
      { rows, cols } = Wm;
    for (const j of dead) {
      H[j * cols + j] = 1;
      for (let r = 0; r < rows; r++) W[r * cols + j] = 0;
    }
  }

  async addToDiagonal(Hm: Mat, d: number): Promise<void> {
    const H = f64(Hm),
      n = Hm.cols;
    for (let i = 0; i < n; i++) H[i * n + i] += d;
  }

  async choleskyInverseUpper(H: Mat): Promise<Mat> {
    const n = H.cols;
    return new HostMat(n, n, this.pool.share(choleskyInverseUpper(f64(H), n)));
  }

  async gptqColumnLoop(Wm: Mat, Hinv: Mat, spec: ColumnLoopSpec): Promise<ColumnLoopResult> {
    const { rows, cols } = Wm;
    const G = spec.groups;
    const codes = this.pool.alloc(Uint8Array, rows * cols);
    const scale = this.pool.alloc(Float32Array, rows * G),
      zero = this.pool.alloc(Float32Array, rows * G);
    if (spec.params) {
      scale.set(spec.params.scale);
      zero.set(spec.params.zero);
    }
    const parts = this.pool.slices(rows);
    const loss = this.pool.alloc(Float64Array, parts);
    const shape = {
      blockSize: spec.blockSize,
      maxq: spec.maxq,
      sym: spec.sym,
      clip: spec.clip,
      groupSize: spec.groupSize,
      dynamic: spec.dynamic,
      groups: G,
      slot: spec.slot,
      order: spec.order,
    };
    await this.pool.run(rows, (r0, r1, part) => ({ kind: 'gptqLoop', W: f64(Wm), n: cols, Hinv: f64(Hinv), shape, codes, scale, zero, loss, part, r0, r1 }));
    return { codes: Uint8Array.from(codes), scale: Float32Array.from(scale), zero: Float32Array.from(zero), loss: loss.reduce((a, v) => a + v, 0) };
  }

  /** gptvq.ts's loop on this thread, its codebook k-means and lazy updates split over the pool (same bits). */
  async gptvqLoop(Wm: Mat, Hinv: Mat, spec: VqLoopSpec): Promise<VqLoopResult> {
    const { rows, cols } = Wm;
    const W = f64(Wm),
      U = f64(Hinv);
    const steps = vqLoopSteps(W, rows, cols, U, spec);
    for (let r = steps.next(undefined); ; ) {
      if (r.done) {
        const { codes, codebookBits, codebooks, groups, entries, loss, seconds } = r.value;
        return { codes, codebookBits, codebooks, groups, entries, loss, seconds };
      }
      const q = r.value;
      if (q.kind === 'lazy') {
        const err = this.pool.share(q.err.subarray(0, rows * q.count));
        await this.pool.run(rows, (r0, r1) => ({ kind: 'lazy', W, n: cols, err, count: q.count, U, i1: q.i1, i2: q.i2, r0, r1 }));
        r = steps.next(undefined);
      } else {
        const km = await weightedKMeansSplit(q.pts, q.wts, q.N, q.d, q.K, { iters: q.iters, seed: q.seed }, (a, pass) =>
          this.pool.run(q.N, (r0, r1) => ({ kind: 'kmeans', a, pass, d: q.d, k: q.K, r0, r1 })),
        );
        r = steps.next(km.centroids);
      }
    }
  }

  async reconstruct(stored: LoproStoredLayer): Promise<Mat> {
    const { rows, cols } = stored;
    const out = this.mat(rows, cols, true);
    await this.pool.run(rows, (r0, r1) => ({ kind: 'dequant', stored: rowSlice(stored, r0, r1), out: out.data as Float32Array, r0 }));
    return out;
  }

  /** The float64 kernel of gptq_kernels.ts; with H = I (data-free) the plain sums of squares. */
  async proxyLosses(Wm: Mat, wHat: Mat, Hm: Mat): Promise<[number, number]> {
    const W = host(Wm).data,
      Q = host(wHat).data,
      H = host(Hm);
    const { rows, cols } = Wm;
    if (H.isIdentity) {
      let loss = 0,
        ref = 0;
      for (let i = 0; i < W.length; i++) {
        const d = W[i] - Q[i];
        loss += d * d;
        ref += W[i] * W[i];
      }
      return [loss, ref];
    }
    // Both sums in one pool run, one partial per PROXY_LOSS_ROWS rows, added in row order (same bits for any thread count).
    const blocks = Math.ceil(rows / PROXY_LOSS_ROWS);
    const loss = this.pool.alloc(Float64Array, blocks),
      ref = this.pool.alloc(Float64Array, blocks);
    await this.pool.run(blocks, (b0, b1) => ({ kind: 'proxyLoss', W, Q, H: H.data, n: cols, loss, ref, r0: b0 * PROXY_LOSS_ROWS, r1: Math.min(rows, b1 * PROXY_LOSS_ROWS) }));
    let l = 0,
      r = 0;
    for (let b = 0; b < blocks; b++) {
      l += loss[b];
      r += ref[b];
    }
    return [l, r];
  }

  close(): void {}
}

/** A row slice of a stored layer (everything dequantizeLoPRo reads per row), copied so that it clones small. */
function rowSlice(s: LoproStoredLayer, r0: number, r1: number): LoproStoredLayer {
  const { cols, groups: G, rank } = s;
  const V = s.vqDim ? cols / s.vqDim : 0;
  return {
    ...s,
    rows: r1 - r0,
    codes: s.codes?.slice(r0 * cols, r1 * cols),
    scaleBits: s.scaleBits?.slice(r0 * G, r1 * G),
    zeros: s.zeros?.slice(r0 * G, r1 * G),
    vqCodes: s.vqCodes?.slice(r0 * V, r1 * V),
    uCodes: s.uCodes.slice(r0 * rank, r1 * rank),
  };
}
