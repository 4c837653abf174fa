// The launcher of the GPU backend's kernels for one layer session (gpu_backend.ts, gptvq_loop.ts): it owns the
// session's GPU buffers (all destroyed by release()), builds the uniform blocks, and runs one kernel per submit.

import { ErrorCode } from '../../../protocol/messages';
import { ProtocolError } from '../../../protocol/rpc';
import type { Binding, DawnGpu } from './dawn';
import type { RotationPlan } from '../../quant/rotation';
import { SAMPLE_ROWS_WGSL, SLAB, SUBMATRIX_WGSL, blockRotateWgsl, colSlabsWgsl, lowRankApplyWgsl, nonFiniteWgsl, strideGroups, type RotateMode } from './layer_wgsl';
import { rowWindow } from './split';

/** WebGPU's largest workgroup count in one dimension. */
export const MAX_GROUPS = 65535;

/** The kernels' launcher for one layer: owns the layer's buffers (released at the end), one submit per call. */
export class LayerKernels {
  private readonly bufs = new Set<GPUBuffer>();
  constructor(private readonly gpu: DawnGpu) {}

  own(b: GPUBuffer): GPUBuffer {
    this.bufs.add(b);
    return b;
  }

  drop(b: GPUBuffer): void {
    if (this.bufs.delete(b)) b.destroy();
  }

  release(): void {
    for (const b of this.bufs) b.destroy();
    this.bufs.clear();
  }

  f32(a: ArrayLike<number>): GPUBuffer {
    return this.own(this.gpu.buffer(Float32Array.from(a)));
  }

  u32(a: ArrayLike<number>): GPUBuffer {
    return this.own(this.gpu.buffer(Uint32Array.from(a)));
  }

  /** The elementwise kernels' uniforms (m, n, r, stride, total = m·n, step, sign). */
  elem(m: number, n: number, r = 0, step = 1, sign = 1, total = m * n): GPUBuffer {
    const w = new Uint32Array(8);
    w.set([m, n, r, strideGroups(total).stride, total, step]);
    new Float32Array(w.buffer, 24, 1)[0] = sign;
    return this.own(this.gpu.uniforms(w));
  }

  async run(code: string, bindings: Binding[], size: [number, number, number]): Promise<void> {
    const pipe = await this.gpu.pipeline(code);
    const group = this.gpu.bindGroup(pipe, bindings);
    await this.gpu.submit((enc) => {
      const pass = enc.beginComputePass();
      pass.setPipeline(pipe);
      pass.setBindGroup(0, group);
      pass.dispatchWorkgroups(...size);
      pass.end();
    });
    this.gpu.counters.dispatches++;
  }

  async copy(src: GPUBuffer, dst: GPUBuffer, bytes: number): Promise<void> {
    await this.gpu.submit((enc) => enc.copyBufferToBuffer(src, 0, dst, 0, bytes));
  }

  /** Runs `code` (bindings P, X, out) writing `count` float32 values and reads them back. */
  async readBack(X: Binding, count: number, code: string): Promise<ArrayBuffer> {
    const out = this.own(this.gpu.buffer(4 * count));
    await this.run(code, [this.elem(count, count), X, out], [Math.ceil(count / 256), 1, 1]);
    const r = await this.gpu.read(out, 4 * count);
    this.drop(out);
    return r;
  }

  /** Σ_i f(X_ij) per column (float32 partial sums over 64-row slabs, summed in float64 here). */
  async colSums(X: GPUBuffer, m: number, n: number, f: 'abs' | 'sq'): Promise<Float64Array> {
    const slabs = Math.ceil(m / SLAB);
    const part = this.own(this.gpu.buffer(4 * slabs * n));
    await this.run(colSlabsWgsl(f), [this.elem(m, n), X, part], [Math.ceil(n / 256), slabs, 1]);
    const parts = new Float32Array(await this.gpu.read(part, 4 * slabs * n));
    this.drop(part);
    const out = new Float64Array(n);
    for (let s = 0; s < slabs; s++) for (let j = 0; j < n; j++) out[j] += parts[s * n + j];
    return out;
  }

  /** A ProtocolError (non-finite) naming the first flat index of X (`total` values, bound in parts `starts`) that is NaN or ±Inf. */
  async assertFinite(X: Binding, starts: readonly number[], total: number, what: string, where: string): Promise<void> {
    const status = this.own(this.gpu.buffer(Uint32Array.of(0xffffffff)));
    await this.run(nonFiniteWgsl(starts), [this.elem(1, total, 0, 1, 1, total), X, status], [strideGroups(total).groups, 1, 1]);
    const [first] = new Uint32Array(await this.gpu.read(status, 4));
    this.drop(status);
    if (first !== 0xffffffff) {
      throw new ProtocolError(
        ErrorCode.NonFinite,
        `${what} has a non-finite value (as float32) at flat index ${first}`,
        where,
        'check the layer weights and the calibration activations for overflow',
      );
    }
  }

  /** Y (±)= (U·diag(σ)·V)·diag(α)⁻¹; with X: Y = X + sign·(…), else in place. */
  async lowRank(
    U: ArrayLike<number>,
    sigma: ArrayLike<number>,
    V: ArrayLike<number>,
    r: number,
    alpha: ArrayLike<number>,
    m: number,
    n: number,
    Y: GPUBuffer,
    sign: number,
    X?: GPUBuffer,
  ): Promise<void> {
    const Us = new Float32Array(m * r);
    for (let i = 0; i < m; i++) for (let c = 0; c < r; c++) Us[i * r + c] = U[i * r + c] * sigma[c];
    const inv = Float32Array.from({ length: n }, (_, j) => 1 / alpha[j]);
    const bind = [this.elem(m, n, r, 1, sign), this.own(this.gpu.buffer(Us)), this.f32(V), this.own(this.gpu.buffer(inv)), Y];
    await this.run(lowRankApplyWgsl(!X), X ? [...bind, X] : bind, [strideGroups(m * n).groups, 1, 1]);
  }

  /** X[r0 : r0+h, c0 : c0+w] of an n-column X, read back as float64 (h×w); binds only those rows of X. */
  async submatrix(X: GPUBuffer, n: number, r0: number, h: number, c0: number, w: number): Promise<Float64Array> {
    const Y = this.own(this.gpu.buffer(4 * h * w));
    const win = rowWindow(X, n, r0, r0 + h);
    await this.run(SUBMATRIX_WGSL, [this.elem(h, w, n, win.skip + c0), win.binding, Y], [strideGroups(h * w).groups, 1, 1]);
    const out = new Float32Array(h * w);
    await this.gpu.readInto(Y, out);
    this.drop(Y);
    return Float64Array.from(out);
  }

  async sampleRows(X: GPUBuffer, m: number, n: number, step: number): Promise<Float32Array> {
    const rs = Math.ceil(m / step);
    const Y = this.own(this.gpu.buffer(4 * rs * n));
    await this.run(SAMPLE_ROWS_WGSL, [this.elem(rs, n, 0, step), X, Y], [strideGroups(rs * n).groups, 1, 1]);
    const out = new Float32Array(rs * n);
    await this.gpu.readInto(Y, out);
    this.drop(Y);
    return out;
  }

  /** Y = mode(X) with the plan's rotation: the head [0, b_I) copied, then one workgroup per (row, block). */
  async rotate(
    mode: RotateMode,
    X: Binding,
    perm: GPUBuffer,
    Y: Binding,
    m: number,
    n: number,
    plan: RotationPlan,
    dq?: { wpr: number; G: number; gIdx: Uint32Array; scale: Float32Array; zero: Float32Array },
    parts: { x: readonly number[]; y: readonly number[] } = { x: [0], y: [0] },
  ): Promise<void> {
    const b = plan.block,
      head = b === 0 ? n : plan.salient;
    const extra = dq ? [this.own(this.gpu.buffer(dq.scale)), this.own(this.gpu.buffer(dq.zero)), this.own(this.gpu.buffer(dq.gIdx))] : [];
    const words = (k0: number, s: number, row0: number) => {
      const w = new Uint32Array(8);
      w.set([n, k0, 0, dq?.wpr ?? 0, dq?.G ?? 0, row0]);
      new Float32Array(w.buffer, 8, 1)[0] = s;
      return this.own(this.gpu.uniforms(w));
    };
    const p = mode === 'transpose' ? undefined : perm; // the transpose reads no perm (its layout has no binding 2)
    // One workgroup row per matrix row: at most 65535 rows per dispatch (WebGPU's limit per dimension).
    for (let row0 = 0; row0 < m; row0 += MAX_GROUPS) {
      const rows = Math.min(MAX_GROUPS, m - row0);
      if (head > 0) await this.run(blockRotateWgsl(mode, 1, parts), [words(head, 1, row0), X, p, Y, ...extra], [Math.ceil(head / 256), rows, 1]);
      if (b > 0) await this.run(blockRotateWgsl(mode, b, parts), [words(plan.salient, 1 / Math.sqrt(b), row0), X, p, Y, ...extra], [(n - plan.salient) / b, rows, 1]);
    }
  }
}
