// Adapter: GPTQ's lazy trailing update W[:, i2:colEnd] −= Err1 @ Hinv[i1:i2, i2:colEnd] as an ONNX Runtime
// MatMul (gptq.ts stays pure; this is the thin bridge to ORT, like tfjs's kernel adapters).
// Float64 by default so the result matches the TypeScript kernel to rounding; float32 is ~2× faster
// and stays within the golden README's "f32-alt" noise. Small updates stay in TypeScript, where
// the session call and copies would cost more than they save.

import * as ort from 'onnxruntime-node';
import { GraphBuilder } from '../compute/graph';
import type { ComputeRuntime } from '../compute/runtime';
import { choleskyInverseUpper } from '../linalg/cholesky';
import { lazyUpdate } from './gptq_kernels';
import { gptqQuantizeAsync, type GptqOptions, type GptqResult, type LazyUpdateRequest } from './gptq';

export interface OrtLazyUpdate {
  update(req: LazyUpdateRequest): Promise<void>;
  /** Seconds spent inside ORT (the MatMul), and in the copies around it. */
  readonly stats: { ortSeconds: number; copySeconds: number; calls: number; tsCalls: number };
  release(): Promise<void>;
}

/** Multiply-adds below which the TypeScript kernel is used (≈ 10 ms of TS work). */
const MIN_MACS = 1 << 25;

export async function createOrtLazyUpdate(
  opts: { dtype?: 'float64' | 'float32'; executionProviders?: string[]; minMacs?: number } = {},
): Promise<OrtLazyUpdate> {
  const dtype = opts.dtype ?? 'float64', minMacs = opts.minMacs ?? MIN_MACS;
  const g = new GraphBuilder('gptq_lazy_update');
  const a = g.input('err1', dtype, ['rows', 'count']);
  const b = g.input('hinv', dtype, ['count', 'n']);
  g.output(g.op('MatMul', [a, b]), 'p');
  const session = await ort.InferenceSession.create(g.toModel(), { executionProviders: opts.executionProviders ?? ['cpu'] });
  const stats = { ortSeconds: 0, copySeconds: 0, calls: 0, tsCalls: 0 };
  const Arr = dtype === 'float64' ? Float64Array : Float32Array;
  return {
    stats,
    async update(q: LazyUpdateRequest) {
      const { W, rows, cols, err1, count, hinvUpper, i1, i2 } = q;
      const colEnd = q.colEnd ?? cols, n = colEnd - i2;
      if (rows * count * n < minMacs) {
        stats.tsCalls++;
        lazyUpdate(W, rows, cols, err1, count, hinvUpper, i1, i2, colEnd);
        return;
      }
      let t = performance.now();
      const A = dtype === 'float64' ? err1.subarray(0, rows * count) : Float32Array.from(err1.subarray(0, rows * count));
      const B = new Arr(count * n);
      for (let k = 0; k < count; k++) B.set(hinvUpper.subarray((i1 + k) * cols + i2, (i1 + k) * cols + colEnd), k * n);
      const t1 = performance.now();
      const out = await session.run({ err1: new ort.Tensor(dtype, A, [rows, count]), hinv: new ort.Tensor(dtype, B, [count, n]) });
      const t2 = performance.now();
      const P = out.p.data as Float64Array | Float32Array;
      for (let r = 0; r < rows; r++) {
        const wo = r * cols + i2, po = r * n;
        for (let j = 0; j < n; j++) W[wo + j] -= P[po + j];
      }
      out.p.dispose();
      t = t1 - t + (performance.now() - t2);
      stats.copySeconds += t / 1000;
      stats.ortSeconds += (t2 - t1) / 1000;
      stats.calls++;
    },
    release: () => session.release(),
  };
}

const shared = new Map<string, Promise<OrtLazyUpdate>>();

/**
 * GPTQ's fast path on ONNX Runtime, in one call: the blocked ORT Cholesky of src/engine/linalg for
 * Hinv, ORT MatMuls (CPU EP, float64 by default) for the lazy updates with two-level lazy batching
 * (lazySpan 512, or 4·blockSize when that is smaller than 512), the TypeScript column loop. Same
 * algorithm and options as gptqQuantize; results equal up to rounding (golden: 99.99 % equal codes).
 * The lazy-update session is created once per process and dtype.
 */
export async function gptqQuantizeOrt(
  wVals: Float32Array | Float64Array, rows: number, cols: number,
  hVals: Float32Array | Float64Array,
  opts: GptqOptions & { rt?: ComputeRuntime; lazyDtype?: 'float64' | 'float32' },
): Promise<GptqResult> {
  const dtype = opts.lazyDtype ?? 'float64';
  let lazy = shared.get(dtype);
  if (!lazy) shared.set(dtype, (lazy = createOrtLazyUpdate({ dtype })));
  const upd = await lazy;
  const blockSize = opts.blockSize ?? 128;
  return gptqQuantizeAsync(wVals, rows, cols, hVals, {
    lazySpan: blockSize * Math.max(1, Math.floor(512 / blockSize)),
    ...opts,
    choleskyInverseUpperAsync: (h, n) => choleskyInverseUpper(h, n, opts.rt ? { rt: opts.rt } : {}),
    lazyUpdateAsync: (q) => upd.update(q),
  });
}

const proxySessions = new Map<string, Promise<ort.InferenceSession>>();

/**
 * proxyLoss (tr((W−Q)·H·(W−Q)ᵀ)) with the O(rows·cols²) product on ONNX Runtime (CPU EP):
 * Σ over row chunks of sum(D ⊙ (D·H)), D = W − Q. Float64 by default (same value as proxyLoss to
 * rounding); the TypeScript proxyLoss costs ~30 s for a 4096² layer, this a few seconds.
 */
export async function proxyLossOrt(
  wVals: ArrayLike<number>, qVals: ArrayLike<number>, hVals: Float32Array | Float64Array, rows: number, cols: number,
  opts: { dtype?: 'float64' | 'float32'; rowChunk?: number } = {},
): Promise<number> {
  const dtype = opts.dtype ?? 'float64';
  let session = proxySessions.get(dtype);
  if (!session) {
    const g = new GraphBuilder('proxy_loss');
    const d = g.input('d', dtype, ['r', 'n']);
    const h = g.input('h', dtype, ['n', 'n']);
    g.output(g.op('ReduceSum', [g.op('Mul', [d, g.op('MatMul', [d, h])])], { keepdims: 0 }), 'loss');
    proxySessions.set(dtype, (session = ort.InferenceSession.create(g.toModel(), { executionProviders: ['cpu'] })));
  }
  const s = await session;
  const Arr = dtype === 'float64' ? Float64Array : Float32Array;
  const H = hVals instanceof Arr ? hVals : Arr.from(hVals);
  const hT = new ort.Tensor(dtype, H, [cols, cols]);
  const chunk = Math.max(1, opts.rowChunk ?? 512);
  let total = 0;
  for (let r0 = 0; r0 < rows; r0 += chunk) {
    const rc = Math.min(chunk, rows - r0), D = new Arr(rc * cols);
    for (let i = 0, o = r0 * cols; i < rc * cols; i++) D[i] = wVals[o + i] - qVals[o + i];
    const out = await s.run({ d: new ort.Tensor(dtype, D, [rc, cols]), h: hT });
    total += Number((out.loss.data as Float64Array | Float32Array)[0]);
    out.loss.dispose();
  }
  return total;
}
