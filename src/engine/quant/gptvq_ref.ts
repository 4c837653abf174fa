// GPTVQ on one thread in float64 (gptvq.ts's math without a backend): the twin that both backends'
// GPTVQ is compared with. Dead inputs and damping as GPTQ's reference (gptq_ref.ts), Hinv from the
// float64 Cholesky, the loop of gptvq.ts with its codebooks from kmeans.ts on this thread.

import { choleskyInverseUpper } from './gptq_linalg';
import { lazyUpdate } from './gptq_kernels';
import { gptvqShape, vqLoopSteps, type GptvqOptions } from './gptvq';
import { weightedKMeans } from './kmeans';
import { assertFiniteArray } from './quantizer_checks';

export function gptvqQuantize_ref(wVals: Float32Array | Float64Array, rows: number, cols: number, hVals: Float32Array | Float64Array, opts: GptvqOptions) {
  const where = opts.name ?? 'gptvq';
  const { B } = gptvqShape(cols, opts, where);
  assertFiniteArray(wVals, 'W', where);
  assertFiniteArray(hVals, 'H', where);
  const W = Float64Array.from(wVals);
  const H = Float64Array.from(hVals);
  for (let j = 0; j < cols; j++) {
    if (H[j * cols + j] !== 0) continue;
    H[j * cols + j] = 1;
    for (let r = 0; r < rows; r++) W[r * cols + j] = 0;
  }
  let diagSum = 0;
  for (let i = 0; i < cols; i++) diagSum += H[i * cols + i];
  const damp = (opts.percDamp ?? 0.01) * (diagSum / cols);
  for (let i = 0; i < cols; i++) H[i * cols + i] += damp;
  let U: Float64Array;
  let choleskyFallback = false;
  try {
    U = choleskyInverseUpper(H, cols);
  } catch (e) {
    if (!(e instanceof Error && e.name === 'NotPositiveDefiniteError')) throw e;
    choleskyFallback = true;
    U = new Float64Array(cols * cols);
    for (let i = 0; i < cols; i++) U[i * cols + i] = 1;
  }
  const steps = vqLoopSteps(W, rows, cols, U, {
    vqDim: opts.vqDim,
    bits: opts.bits,
    groupSize: opts.groupSize,
    blockSize: B,
    kmeansIters: opts.kmeansIters ?? 20,
    seed: opts.seed,
  });
  for (let r = steps.next(undefined); ; ) {
    if (r.done) return { ...r.value, damp, choleskyFallback };
    const q = r.value;
    if (q.kind === 'lazy') {
      lazyUpdate(W, rows, cols, q.err, q.count, U, q.i1, q.i2);
      r = steps.next(undefined);
    } else r = steps.next(weightedKMeans(q.pts, q.wts, q.N, q.d, q.K, { iters: q.iters, seed: q.seed }).centroids);
  }
}
