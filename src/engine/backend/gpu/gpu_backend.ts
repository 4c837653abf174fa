// The GPU backend: every layer operation as WGSL kernels on the engine's own WebGPU device (dawn.ts), the
// matrices resident there in float32 from the upload of W and H to Ŵ. Only what decides the next step
// comes back to the host (diagonals, column sums, R1SVD's vectors, codes and params, a few sampled rows);
// GPTVQ's k-means and codeword search run there too (gptvq_loop.ts), its codes read back once per layer.
// Semantics = the CPU backend's in float32: codes agree except at rounding boundaries, Ŵ equals the host
// decoder's (lopro_dequant.ts) on the same stored parts to float32 rounding (tests).

import { ErrorCode } from '../../../protocol/messages';
import { ProtocolError } from '../../../protocol/rpc';
import type { Backend, ColumnLoopResult, ColumnLoopSpec, GroupParams, LayerSession, Mat, ParamsSpec, VqLoopResult, VqLoopSpec } from '../../quant/backend';
import type { DawnGpu } from './dawn';
import { choleskyInverseUpperDawn } from './cholesky';
import { fusedColumnLoop } from './gptq_loop';
import { gptvqOnDawn } from './gptvq_loop';
import { LayerKernels, MAX_GROUPS } from './kernels';
import { ROW_DOT_WGSL, SCALE_COLS_WGSL, SUB_WGSL, ZERO_COLS_WGSL, diagWgsl, strideGroups, symmetrizeWgsl } from './layer_wgsl';
import { MAX_PARTS, maxSquareCols, rowParts, splitEntries, squareBinds } from './split';
import { groupParamsDawn, rtnCodesDawn, vqDequantDawn } from './quantize_wgsl';
import { r1svdOnDawn } from './r1svd';
import { gemmGroups, gemmWgsl, gemmWords } from './wgsl_gemm';
import { decodeF16 } from '../../quant/fp8';
import { decodeLowRank, rotationPlanOf, type LoproStoredLayer } from '../../quant/lopro_dequant';
import type { LowRankFactors, R1svdOptions } from '../../quant/r1svd';
import type { RotationPlan } from '../../quant/rotation';

/** A float32 matrix in a device buffer, bound whole or (an n×n matrix wider than one binding) in row parts. */
class DeviceMat implements Mat {
  constructor(
    readonly rows: number,
    readonly cols: number,
    readonly buf: GPUBuffer,
    /** Element offsets of its binding parts (split.ts); [0]: bound whole. */
    readonly starts: readonly number[],
    readonly isIdentity = false,
  ) {}

  /** Its bind-group entries at binding b. */
  at(b: number): GPUBindGroupEntry[] {
    return splitEntries(b, this.buf, this.starts, this.rows * this.cols);
  }

  /** The buffer, for kernels that bind a whole matrix only: a matrix in parts here is a bug of the caller. */
  get whole(): GPUBuffer {
    if (this.starts.length !== 1) throw new Error(`a ${this.rows}×${this.cols} matrix in ${this.starts.length} binding parts was given to a kernel that binds it whole`);
    return this.buf;
  }
}

function dev(m: Mat): DeviceMat {
  if (!(m instanceof DeviceMat)) throw new Error('a matrix of another backend was given to the GPU backend');
  return m;
}

export class GpuBackend implements Backend {
  readonly kind = 'gpu' as const;
  readonly label: string;
  private constructor(
    readonly gpu: DawnGpu,
    /** The largest binding the kernels use (the device's; tests lower it to split small matrices). */
    private readonly bindingBytes: number,
  ) {
    this.label = `gpu: ${gpu.label}`;
  }

  /** A weight must fit one binding. */
  get maxMatrixBytes(): number {
    return this.bindingBytes;
  }

  /** An n×n matrix may span MAX_PARTS bindings (its flat index must stay below 2³², the kernels' u32). */
  get maxSquareCols(): number {
    return maxSquareCols(this.bindingBytes);
  }

  /** Every kernel runs on `gpu`: no host worker threads. */
  static create(gpu: DawnGpu, opts: { bindingBytes?: number } = {}): GpuBackend {
    return new GpuBackend(gpu, Math.min(opts.bindingBytes ?? Infinity, gpu.maxBindingBytes));
  }

  session(): LayerSession {
    return new GpuSession(this.gpu, this.bindingBytes);
  }

  async close(): Promise<void> {}
}

class GpuSession implements LayerSession {
  private readonly k: LayerKernels;
  constructor(
    private readonly gpu: DawnGpu,
    private readonly bindingBytes: number,
  ) {
    this.k = new LayerKernels(gpu);
  }

  private parts(rows: number, cols: number): number[] {
    return rowParts(rows, cols, this.bindingBytes);
  }

  private mat(rows: number, cols: number, label: string, isIdentity = false): DeviceMat {
    return new DeviceMat(rows, cols, this.k.own(this.gpu.buffer(4 * rows * cols, label)), this.parts(rows, cols), isIdentity);
  }

  /**
   * The device's binding limit, as a clear error naming the layer: a rows×cols matrix must fit one binding,
   * an n×n one (a Hessian and what is made from it) MAX_PARTS of them.
   */
  private fits(rows: number, cols: number, what: string, where: string): void {
    if (this.parts(rows, cols).length === 1 || (rows === cols && squareBinds(rows, this.bindingBytes))) return;
    const gib = (b: number) => (b / 2 ** 30).toFixed(2);
    throw new ProtocolError(
      ErrorCode.OutOfMemory,
      `${what} (${rows}×${cols} float32, ${gib(4 * rows * cols)} GiB) exceeds what the GPU backend can bind (${rows === cols ? `${MAX_PARTS} × ` : ''}${gib(this.bindingBytes)} GiB, the device's largest buffer binding)`,
      where,
      'use --backend cpu for this model',
    );
  }

  async upload(data: Float32Array | Float64Array, rows: number, cols: number, what: string, where: string, f32?: Float32Array): Promise<Mat> {
    if (data.length !== rows * cols) throw new ProtocolError(ErrorCode.ShapeMismatch, `${what} has ${data.length} values, expected ${rows}×${cols}`, where);
    this.fits(rows, cols, what, where);
    const m = new DeviceMat(rows, cols, this.k.own(await this.gpu.bufferFrom(f32 && f32.length === data.length ? f32 : data, what)), this.parts(rows, cols));
    await this.k.assertFinite(m.at(1), m.starts, rows * cols, what, where);
    return m;
  }

  async download(m: Mat): Promise<Float32Array> {
    const out = new Float32Array(m.rows * m.cols);
    await this.gpu.readInto(dev(m).buf, out); // a copy: no binding, any size
    return out;
  }

  async sampleRows(m: Mat, step: number): Promise<ArrayLike<number>> {
    return this.k.sampleRows(dev(m).whole, m.rows, m.cols, step);
  }

  async copy(m: Mat): Promise<Mat> {
    const d = dev(m);
    const out = this.mat(d.rows, d.cols, 'copy', d.isIdentity); // the same parts: same shape, same binding limit
    await this.k.copy(d.buf, out.buf, 4 * d.rows * d.cols);
    return out;
  }

  async identity(n: number): Promise<Mat> {
    this.fits(n, n, 'the identity', 'identity');
    const I = this.mat(n, n, 'identity', true); // buffers start zeroed
    await this.k.run(diagWgsl('set', I.starts), [this.k.elem(n, n), I.at(1), this.k.f32(new Float32Array(n).fill(1))], [Math.ceil(n / 256), 1, 1]);
    return I;
  }

  free(...ms: (Mat | undefined)[]): void {
    for (const m of ms) if (m) this.k.drop(dev(m).buf);
  }

  async scaleColumns(X: Mat, a: Float64Array): Promise<Mat> {
    const { rows, cols } = X;
    const A = this.mat(rows, cols, 'A');
    await this.k.run(SCALE_COLS_WGSL, [this.k.elem(rows, cols), dev(X).whole, this.k.f32(a), A.whole], [strideGroups(rows * cols).groups, 1, 1]);
    return A;
  }

  columnSums(X: Mat, f: 'abs' | 'sq'): Promise<Float64Array> {
    return this.k.colSums(dev(X).whole, X.rows, X.cols, f);
  }

  async diagonal(H: Mat): Promise<Float64Array> {
    const d = dev(H);
    return Float64Array.from(new Float32Array(await this.k.readBack(d.at(1), H.cols, diagWgsl('get', d.starts))));
  }

  async r1svd(A: Mat, opts: R1svdOptions): Promise<LowRankFactors> {
    const frob2 = (await this.columnSums(A, 'sq')).reduce((s, v) => s + v, 0);
    return r1svdOnDawn(this.gpu, dev(A).whole, frob2, A.rows, A.cols, opts);
  }

  async subtract(A: Mat, B: Mat): Promise<Mat> {
    const { rows, cols } = A;
    const D = this.mat(rows, cols, 'A − B');
    await this.k.run(SUB_WGSL, [this.k.elem(rows, cols), dev(A).whole, dev(B).whole, D.whole], [strideGroups(rows * cols).groups, 1, 1]);
    return D;
  }

  async subtractLowRank(W: Mat, f: LowRankFactors, alpha: Float64Array): Promise<Mat> {
    const { rows, cols } = W;
    const R = this.mat(rows, cols, 'R');
    if (f.rank > 0) await this.k.lowRank(f.U, f.sigma, f.V, f.rank, alpha, rows, cols, R.whole, -1, dev(W).whole);
    else await this.k.copy(dev(W).buf, R.buf, 4 * rows * cols);
    return R;
  }

  async permuteRotate(X: Mat, perm: Int32Array, plan: RotationPlan): Promise<Mat> {
    const { rows, cols } = X;
    const Y = this.mat(rows, cols, 'X[:, perm]·Q');
    const permB = this.k.u32(perm);
    await this.k.rotate('gatherR', dev(X).whole, permB, Y.whole, rows, cols, plan);
    this.k.drop(permB);
    return Y;
  }

  /** Q·H[perm][:, perm]·Q: gather + row FWHT into M, then M's transpose + row FWHT, symmetrised. */
  async permuteRotateSymmetric(H: Mat, perm: Int32Array, plan: RotationPlan): Promise<Mat> {
    const n = H.cols;
    const Hd = dev(H);
    const permB = this.k.u32(perm);
    const M = this.mat(n, n, 'H_p·Q');
    await this.k.rotate('gatherH', Hd.at(1), permB, M.at(3), n, n, plan, undefined, { x: Hd.starts, y: M.starts });
    if (plan.block === 0) {
      this.k.drop(permB);
      return M;
    }
    const T = this.mat(n, n, 'Q·H_p·Q');
    await this.k.rotate('transpose', M.at(1), permB, T.at(3), n, n, plan, undefined, { x: M.starts, y: T.starts });
    this.k.drop(permB);
    this.free(M);
    await this.k.run(symmetrizeWgsl(T.starts), [this.k.elem(n, n), T.at(1)], [strideGroups(n * n).groups, 1, 1]);
    return T;
  }

  async groupParams(W: Mat, groupSize: number, spec: ParamsSpec): Promise<GroupParams> {
    const { rows, cols } = W;
    const G = Math.ceil(cols / groupSize);
    const pb = this.k.own(this.gpu.buffer(8 * rows * G, 'params'));
    await groupParamsDawn(this.gpu, dev(W).whole, { rows, cols, groupSize }, spec, pb);
    const p = new Float32Array(2 * rows * G);
    await this.gpu.readInto(pb, p);
    this.k.drop(pb);
    const scale = new Float32Array(rows * G),
      zero = new Float32Array(rows * G);
    for (let i = 0; i < rows * G; i++) {
      scale[i] = p[2 * i];
      zero[i] = p[2 * i + 1];
    }
    return { scale, zero, groups: G };
  }

  async quantizeRtn(W: Mat, groupSize: number, params: GroupParams, maxq: number): Promise<Uint8Array> {
    const { rows, cols } = W;
    const G = params.groups,
      p = new Float32Array(2 * rows * G);
    for (let i = 0; i < rows * G; i++) {
      p[2 * i] = params.scale[i];
      p[2 * i + 1] = params.zero[i];
    }
    const pb = this.k.own(await this.gpu.bufferFrom(p, 'params'));
    const wpr = Math.ceil(cols / 4);
    const cb = this.k.own(this.gpu.buffer(4 * rows * wpr, 'codes'));
    await rtnCodesDawn(this.gpu, dev(W).whole, pb, { rows, cols, groupSize }, maxq, cb);
    const words = new Uint32Array(rows * wpr);
    await this.gpu.readInto(cb, words);
    this.k.drop(pb);
    this.k.drop(cb);
    return unpackRows(words, rows, cols);
  }

  async markDead(W: Mat, H: Mat, dead: Int32Array): Promise<void> {
    const n = H.cols,
      Hd = dev(H);
    const d = new Float32Array(await this.k.readBack(Hd.at(1), n, diagWgsl('get', Hd.starts)));
    for (const j of dead) d[j] = 1;
    await this.k.run(diagWgsl('set', Hd.starts), [this.k.elem(n, n), Hd.at(1), this.k.f32(d)], [Math.ceil(n / 256), 1, 1]);
    const cols = this.k.u32(dead);
    for (let row0 = 0; row0 < W.rows; row0 += MAX_GROUPS)
      await this.k.run(
        ZERO_COLS_WGSL,
        [this.k.elem(W.rows, W.cols, dead.length, row0), dev(W).whole, cols],
        [Math.ceil(dead.length / 256), Math.min(MAX_GROUPS, W.rows - row0), 1],
      );
  }

  async addToDiagonal(H: Mat, v: number): Promise<void> {
    const n = H.cols,
      Hd = dev(H);
    const d = new Float32Array(await this.k.readBack(Hd.at(1), n, diagWgsl('get', Hd.starts)));
    for (let j = 0; j < n; j++) d[j] += v; // float32 +=, as the float32 H holds it
    await this.k.run(diagWgsl('set', Hd.starts), [this.k.elem(n, n), Hd.at(1), this.k.f32(d)], [Math.ceil(n / 256), 1, 1]);
  }

  async choleskyInverseUpper(H: Mat): Promise<Mat> {
    const n = H.cols,
      Hd = dev(H);
    return new DeviceMat(n, n, this.k.own(await choleskyInverseUpperDawn(this.gpu, Hd.buf, n, Hd.starts)), Hd.starts);
  }

  async gptqColumnLoop(W: Mat, Hinv: Mat, spec: ColumnLoopSpec): Promise<ColumnLoopResult> {
    const { rows, cols } = W;
    const G = spec.groups;
    const params = new Float32Array(rows * G * 2);
    if (spec.params)
      for (let i = 0; i < rows * G; i++) {
        params[2 * i] = spec.params.scale[i];
        params[2 * i + 1] = spec.params.zero[i];
      }
    const loop = await fusedColumnLoop(this.gpu, dev(W).whole, dev(Hinv).buf, rows, cols, {
      B: Math.min(spec.blockSize, cols),
      maxq: spec.maxq,
      sym: spec.sym,
      clip: spec.clip,
      groupSize: spec.groupSize,
      dynamic: spec.dynamic,
      G,
      slot: Uint32Array.from(spec.slot),
      params,
    });
    const scale = new Float32Array(rows * G),
      zero = new Float32Array(rows * G);
    for (let i = 0; i < rows * G; i++) {
      scale[i] = loop.paramsOut[2 * i];
      zero[i] = loop.paramsOut[2 * i + 1];
    }
    // The kernel packs codes in quantization order: k-th quantized column → original column order[k].
    const codes = new Uint8Array(rows * cols),
      bytes = new Uint8Array(loop.codeWords.buffer),
      wpr = Math.ceil(cols / 4) * 4;
    let identity = true;
    for (let k = 0; k < cols && identity; k++) identity = spec.order[k] === k;
    for (let r = 0; r < rows; r++) {
      const src = r * wpr,
        dst = r * cols;
      if (identity) codes.set(bytes.subarray(src, src + cols), dst);
      else for (let k = 0; k < cols; k++) codes[dst + spec.order[k]] = bytes[src + k];
    }
    return { codes, scale, zero, loss: loop.rowLoss.reduce((a, v) => a + v, 0) };
  }

  async gptvqLoop(W: Mat, Hinv: Mat, spec: VqLoopSpec): Promise<VqLoopResult> {
    const q = await gptvqOnDawn(this.gpu, this.k, dev(W).whole, dev(Hinv).buf, W.rows, W.cols, spec, 'gptvq', dev(Hinv).starts);
    return { codes: q.codes, codebookBits: q.codebookBits, codebooks: q.codebooks, groups: q.groups, entries: q.entries, loss: q.loss, seconds: {} };
  }

  /**
   * Ŵ from the stored parts (lopro_dequant.ts dequantizeLoPRo): R̂′ from the codes (dequantized on the device)
   * or from GPTVQ's codebooks (decoded on the host), the FWHT of the rotated blocks and the scatter by perm,
   * plus the low-rank W_r from the stored factors.
   */
  async reconstruct(stored: LoproStoredLayer): Promise<Mat> {
    const { rows, cols } = stored;
    const out = this.mat(rows, cols, 'Ŵ');
    const plan = rotationPlanOf(stored);
    const permB = this.k.u32(stored.perm);
    if (stored.method === 'lopro') {
      const wpr = Math.ceil(cols / 4);
      const codesB = this.k.own(await this.gpu.bufferFrom(packRows(stored.codes!, rows, cols), 'codes'));
      const gIdx = Uint32Array.from({ length: cols }, (_, j) => (stored.gIdx ? stored.gIdx[j] : Math.floor(j / stored.groupSize)));
      await this.k.rotate('dequant', codesB, permB, out.buf, rows, cols, plan, {
        wpr,
        G: stored.groups,
        gIdx,
        scale: Float32Array.from(decodeF16(stored.scaleBits!)),
        zero: Float32Array.from(stored.zeros!),
      });
      this.k.drop(codesB);
    } else {
      // R̂′ decoded on the device from the codes and codebooks (a quarter of R̂′'s bytes cross, not all of it).
      const d = stored.vqDim ?? 0;
      if (!stored.vqCodes || !stored.codebookBits || !d) throw new Error('lopro_v layer without codes/codebooks');
      const codebooks = Float32Array.from(decodeF16(stored.codebookBits));
      const codes = new Uint16Array(2 * Math.ceil(stored.vqCodes.length / 2)); // whole u32 words
      codes.set(stored.vqCodes);
      const codesB = this.k.own(await this.gpu.bufferFrom(codes, 'VQ codes'));
      const cbB = this.k.own(await this.gpu.bufferFrom(codebooks, 'codebooks'));
      const Rt = this.k.own(this.gpu.buffer(4 * rows * cols, 'R̂′'));
      await vqDequantDawn(this.gpu, codesB, cbB, { rows, cols, d, groupSize: stored.groupSize, K: codebooks.length / (stored.groups * d) }, Rt);
      this.k.drop(codesB);
      this.k.drop(cbB);
      await this.k.rotate('unrotate', Rt, permB, out.buf, rows, cols, plan);
      this.k.drop(Rt);
    }
    this.k.drop(permB);
    if (stored.rank > 0) {
      const f = decodeLowRank(stored);
      await this.k.lowRank(f.U, f.sigma, f.V, stored.rank, f.alpha, rows, cols, out.buf, +1);
    }
    return out;
  }

  /** tr(D·H·Dᵀ) as Σ_i (D·H)_i·D_i with D = W − Ŵ and the GEMM of wgsl_gemm.ts; likewise tr(W·H·Wᵀ). */
  async proxyLosses(W: Mat, wHat: Mat, H: Mat): Promise<[number, number]> {
    const { rows, cols } = W;
    const D = this.mat(rows, cols, 'W − Ŵ');
    await this.k.run(SUB_WGSL, [this.k.elem(rows, cols), dev(W).whole, dev(wHat).whole, D.whole], [strideGroups(rows * cols).groups, 1, 1]);
    const weighted = async (X: DeviceMat): Promise<number> => {
      let Y = X;
      if (!dev(H).isIdentity) {
        Y = this.mat(rows, cols, 'X·H');
        const Hd = dev(H);
        const gemm = await this.gpu.pipeline(gemmWgsl(false, false, false, false, { b: Hd.starts }));
        const u = this.k.own(this.gpu.uniforms(gemmWords({ M: rows, N: cols, K: cols, lda: cols, ldb: cols, ldc: cols, offA: 0, offB: 0, offC: 0, alpha: 1, beta: 0 })));
        const group = this.gpu.bindGroup(gemm, [u, X.whole, Hd.at(2), Y.whole]);
        await this.gpu.submit((enc) => {
          const pass = enc.beginComputePass();
          pass.setPipeline(gemm);
          pass.setBindGroup(0, group);
          pass.dispatchWorkgroups(...gemmGroups(rows, cols));
          pass.end();
        });
        this.gpu.counters.dispatches++;
        this.k.drop(u);
      }
      const out = this.k.own(this.gpu.buffer(4 * rows, 'row dots'));
      await this.k.run(ROW_DOT_WGSL, [this.k.elem(rows, cols), X.whole, Y.whole, out], [Math.min(rows, 65535), Math.ceil(rows / 65535), 1]);
      const dots = new Float32Array(rows);
      await this.gpu.readInto(out, dots);
      this.k.drop(out);
      if (Y !== X) this.free(Y);
      return dots.reduce((s, v) => s + v, 0);
    };
    const loss = await weighted(D);
    this.free(D);
    return [loss, await weighted(dev(W))];
  }

  close(): void {
    this.k.release();
  }
}

/** rows×cols codes as the kernels read them: 4 per u32 word, each row starting on a word. */
function packRows(codes: Uint8Array, rows: number, cols: number): Uint32Array {
  const wpr = Math.ceil(cols / 4);
  const out = new Uint32Array(rows * wpr);
  const bytes = new Uint8Array(out.buffer);
  if (wpr * 4 === cols) bytes.set(codes);
  else for (let r = 0; r < rows; r++) bytes.set(codes.subarray(r * cols, (r + 1) * cols), r * wpr * 4);
  return out;
}

/** The inverse of packRows. */
function unpackRows(words: Uint32Array, rows: number, cols: number): Uint8Array {
  const wpr = Math.ceil(cols / 4),
    bytes = new Uint8Array(words.buffer, words.byteOffset, words.byteLength);
  if (wpr * 4 === cols) return bytes.slice(0, rows * cols);
  const out = new Uint8Array(rows * cols);
  for (let r = 0; r < rows; r++) out.set(bytes.subarray(r * wpr * 4, r * wpr * 4 + cols), r * cols);
  return out;
}
