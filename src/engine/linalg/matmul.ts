// Matrix products on ONNX Runtime, each with a naive float64 `_ref` twin.
// Row-major flat Float32Array operands. Shapes are symbolic in the graphs, so one session per
// (op, flags) serves every size.
//
// - matmul:          C = op(A)·op(B)                         (transpose flags as in BLAS)
// - gemmAccumulate:  C += alpha·A·B on strided views         (GPTQ's lazy update W[:, i2:] -= Err1·Hinv[i1:i2, i2:])
// - accumulateXtX:   H = beta·H + alpha·XᵀX                  (the Hessian of a linear layer)

import { GraphBuilder } from '../compute/graph';
import { getRuntime, type ComputeRuntime, type Tensor } from '../compute/runtime';

export interface MatmulOptions {
  /** A is stored k×m (A stored transposed). */
  transA?: boolean;
  /** B is stored n×k. */
  transB?: boolean;
  rt?: ComputeRuntime;
}

/** C (m×n) = op(A) (m×k) · op(B) (k×n). */
export async function matmul(a: Float32Array, b: Float32Array, m: number, k: number, n: number, opts: MatmulOptions = {}): Promise<Float32Array> {
  checkLen('A', a, m * k);
  checkLen('B', b, k * n);
  const rt = opts.rt ?? (await getRuntime());
  const tA = opts.transA ? 1 : 0;
  const tB = opts.transB ? 1 : 0;
  const out = await rt.runF32(`matmul/${tA}${tB}`, () => gemmModel(tA, tB, 1, false), {
    a: [a, tA ? [k, m] : [m, k]],
    b: [b, tB ? [n, k] : [k, n]],
  });
  return out.y;
}

export function matmul_ref(a: ArrayLike<number>, b: ArrayLike<number>, m: number, k: number, n: number, transA = false, transB = false): Float64Array {
  const c = new Float64Array(m * n);
  for (let i = 0; i < m; i++)
    for (let j = 0; j < n; j++) {
      let s = 0;
      for (let p = 0; p < k; p++) s += (transA ? a[p * m + i] : a[i * k + p]) * (transB ? b[j * k + p] : b[p * n + j]);
      c[i * n + j] = s;
    }
  return c;
}

/** A rows×cols window of a row-major matrix: element (i, j) is data[offset + i*ld + j]. */
export interface MatView {
  data: Float32Array;
  offset?: number;
  /** Row stride (the full matrix's column count). */
  ld: number;
}

/** C (m×n) += alpha·A (m×k)·B (k×n), in place on C's window. alpha defaults to −1 (GPTQ's update). */
export async function gemmAccumulate(c: MatView, a: MatView, b: MatView, m: number, k: number, n: number, opts: { alpha?: number; rt?: ComputeRuntime } = {}): Promise<void> {
  if (m === 0 || n === 0 || k === 0) return;
  const rt = opts.rt ?? (await getRuntime());
  const alpha = opts.alpha ?? -1;
  const cPacked = pack(c, m, n);
  const out = await rt.runF32(`gemmacc/${alpha}`, () => gemmModel(0, 0, alpha, true), {
    a: [pack(a, m, k), [m, k]],
    b: [pack(b, k, n), [k, n]],
    c: [cPacked, [m, n]],
  });
  unpack(out.y, c, m, n);
}

export function gemmAccumulate_ref(c: { data: Float64Array; offset?: number; ld: number }, a: { data: ArrayLike<number>; offset?: number; ld: number }, b: { data: ArrayLike<number>; offset?: number; ld: number }, m: number, k: number, n: number, alpha = -1): void {
  const co = c.offset ?? 0;
  const ao = a.offset ?? 0;
  const bo = b.offset ?? 0;
  for (let i = 0; i < m; i++)
    for (let j = 0; j < n; j++) {
      let s = 0;
      for (let p = 0; p < k; p++) s += a.data[ao + i * a.ld + p] * b.data[bo + p * b.ld + j];
      c.data[co + i * c.ld + j] += alpha * s;
    }
}

/** H (n×n) = beta·H + alpha·XᵀX for X (tokens×n), in place on `h`. */
export async function accumulateXtX(h: Float32Array, x: Float32Array, tokens: number, n: number, opts: { alpha?: number; beta?: number; rt?: ComputeRuntime } = {}): Promise<void> {
  checkLen('H', h, n * n);
  checkLen('X', x, tokens * n);
  if (tokens === 0) return;
  const rt = opts.rt ?? (await getRuntime());
  const s = await rt.session(`xtx`, xtxModel);
  const out = await rt.run(s, { x: rt.host(x, [tokens, n]), h: rt.host(h, [n, n]), ab: rt.host(Float32Array.of(opts.alpha ?? 1, opts.beta ?? 1), [2]) });
  h.set(await rt.download(out.y));
  rt.release(out.y);
}

export function accumulateXtX_ref(h: Float64Array, x: ArrayLike<number>, tokens: number, n: number, alpha = 1, beta = 1): void {
  for (let i = 0; i < n; i++)
    for (let j = 0; j < n; j++) {
      let s = 0;
      for (let t = 0; t < tokens; t++) s += x[t * n + i] * x[t * n + j];
      h[i * n + j] = beta * h[i * n + j] + alpha * s;
    }
}

/**
 * Keeps H on the device between batches (WebGPU gpu-buffer; plain host memory on CPU), so each
 * batch costs one upload of X and the result one download.
 */
export class HessianAccumulator {
  private h: Tensor | undefined;
  private constructor(private readonly rt: ComputeRuntime, readonly n: number) {}

  static async create(n: number, rt?: ComputeRuntime): Promise<HessianAccumulator> {
    const acc = new HessianAccumulator(rt ?? (await getRuntime()), n);
    acc.h = await acc.rt.upload(acc.rt.host(new Float32Array(n * n), [n, n]));
    return acc;
  }

  /** H = beta·H + alpha·XᵀX (GPTQ's add_batch uses beta = n/(n+t), alpha = 2/(n+t)). */
  async add(x: Float32Array, tokens: number, alpha = 1, beta = 1): Promise<void> {
    checkLen('X', x, tokens * this.n);
    if (!this.h) throw new Error('HessianAccumulator used after result()');
    const s = await this.rt.session('xtx', xtxModel, 'device');
    const out = await this.rt.run(s, { x: this.rt.host(x, [tokens, this.n]), h: this.h, ab: this.rt.host(Float32Array.of(alpha, beta), [2]) });
    this.rt.release(this.h);
    this.h = out.y;
  }

  /** The accumulated H (host copy); releases the device buffer. */
  async result(): Promise<Float32Array> {
    if (!this.h) throw new Error('HessianAccumulator.result() called twice');
    const host = await this.rt.download(this.h);
    this.rt.release(this.h);
    this.h = undefined;
    return host;
  }
}

/** Gemm(A, B[, C]) with fixed alpha (beta = 1 when C is given). */
function gemmModel(transA: number, transB: number, alpha: number, withC: boolean): Uint8Array {
  const g = new GraphBuilder('gemm');
  const a = g.input('a', 'float32', ['Ra', 'Ca']);
  const b = g.input('b', 'float32', ['Rb', 'Cb']);
  const inputs = withC ? [a, b, g.input('c', 'float32', ['M', 'N'])] : [a, b];
  g.output(g.op('Gemm', inputs, { transA, transB, alpha, beta: 1 }), 'y');
  return g.toModel();
}

/** y = beta·h + alpha·XᵀX with alpha, beta as inputs (one session for every scaling). */
function xtxModel(): Uint8Array {
  const g = new GraphBuilder('xtx');
  const x = g.input('x', 'float32', ['T', 'N']);
  const h = g.input('h', 'float32', ['N', 'N']);
  const ab = g.input('ab', 'float32', [2]);
  const alpha = g.op('Slice', [ab, g.constI64([0]), g.constI64([1])]);
  const beta = g.op('Slice', [ab, g.constI64([1]), g.constI64([2])]);
  const xtx = g.op('Gemm', [x, x], { transA: 1 });
  g.output(g.op('Add', [g.op('Mul', [h, beta]), g.op('Mul', [xtx, alpha])]), 'y');
  return g.toModel();
}

function pack(v: MatView, rows: number, cols: number): Float32Array {
  const off = v.offset ?? 0;
  if (v.ld === cols) return v.data.subarray(off, off + rows * cols);
  const out = new Float32Array(rows * cols);
  for (let i = 0; i < rows; i++) out.set(v.data.subarray(off + i * v.ld, off + i * v.ld + cols), i * cols);
  return out;
}

function unpack(src: Float32Array, v: MatView, rows: number, cols: number): void {
  const off = v.offset ?? 0;
  if (v.ld === cols) {
    v.data.set(src, off);
    return;
  }
  for (let i = 0; i < rows; i++) v.data.set(src.subarray(i * cols, (i + 1) * cols), off + i * v.ld);
}

function checkLen(name: string, arr: ArrayLike<number>, expected: number): void {
  if (arr.length !== expected) throw new RangeError(`${name}: ${arr.length} elements, expected ${expected}`);
}
