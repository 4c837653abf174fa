// GPTVQ's loop (quant/gptvq.ts) for the GPU backend, with W′ and Hinv resident on the Dawn device: the lazy
// block updates W[:, i2:] −= E·U[i1:i2, i2:] — the O(rows·cols²) part — run as the WGSL GEMM on the device;
// per batch, only the batch's columns (and a codebook group's, at its start) and U's diagonal block come to the
// host, where the codebook k-means, the nearest-codeword search and the in-batch feedback run as in the CPU
// loop (the same VqStep and codebook points, float64 over the float32 values read back); the k-means'
// per-point passes may be split over worker threads. Why this split: the sequential, data-dependent k-means
// and codeword search are small per batch (rows × B values), while the trailing update touches all of W.

import type { DawnGpu } from './dawn';
import { gemmGroups, gemmWgsl, gemmWords } from './wgsl_gemm';
import type { LayerKernels } from './kernels';
import { diagWgsl } from './layer_wgsl';
import { rowWindow, splitEntries } from './split';
import { VqStep, codebookPoints, gptvqShape, type GptvqOptions } from '../../quant/gptvq';
import { weightedKMeans } from '../../quant/kmeans';

export interface DawnGptvqResult {
  /** rows × (cols/d) codebook indices; codebooks (decoded FP16) and their bits, groups × K × d. */
  codes: Uint16Array;
  codebooks: Float32Array;
  codebookBits: Uint16Array;
  groups: number;
  entries: number;
  /** The quantized R̂′ (rows×cols, the codebook entries), Σ ½‖E‖². */
  Q: Float32Array;
  loss: number;
  seconds: { kmeans: number; loop: number };
}

/** k-means centroids (K×d) of N weighted d-vectors, as kmeans.ts weightedKMeans computes them. */
export type KMeansFn = (pts: Float64Array, wts: Float64Array, N: number, d: number, K: number, o: { iters: number; seed: number }) => Promise<Float64Array>;

const now = () => performance.now() / 1000;

/** GPTVQ of the rows×cols W′ in `Wb` (modified) with the upper Hinv factor in `Ub`, both float32 on `gpu`. */
export async function gptvqOnDawn(
  gpu: DawnGpu,
  k: LayerKernels,
  Wb: GPUBuffer,
  Ub: GPUBuffer,
  rows: number,
  cols: number,
  opts: Pick<GptvqOptions, 'vqDim' | 'bits' | 'groupSize' | 'blockSize' | 'kmeansIters' | 'seed'>,
  where: string,
  /** The codebook k-means (default: kmeans.ts weightedKMeans on this thread; the pipeline splits it over its workers, bit-identical). */
  kmeans: KMeansFn = async (pts, wts, N, d, K, o) => weightedKMeans(pts, wts, N, d, K, o).centroids,
  /** Where Ub's binding parts start (split.ts), when it is wider than one binding. */
  ubParts: readonly number[] = [0],
): Promise<DawnGptvqResult> {
  const t0 = now();
  const { d, g, K, B } = gptvqShape(cols, opts, where);
  const G = Math.ceil(cols / g),
    V = cols / d;
  const Q = new Float32Array(rows * cols),
    codes = new Uint16Array(rows * V);
  const codebooks = new Float32Array(G * K * d),
    codebookBits = new Uint16Array(G * K * d);
  const Ud = Float64Array.from(new Float32Array(await k.readBack(splitEntries(1, Ub, ubParts, cols * cols), cols, diagWgsl('get', ubParts))));
  const step = new VqStep(rows, cols, d, K);
  const Err = new Float64Array(rows * B),
    E32 = new Float32Array(rows * B);
  const Eb = k.own(gpu.buffer(4 * rows * B, 'GPTVQ E'));
  const gemm = await gpu.pipeline(gemmWgsl(false, false, false, false));
  let loss = 0,
    tK = 0;
  for (let i1 = 0; i1 < cols; i1 += B) {
    const i2 = Math.min(i1 + B, cols),
      count = i2 - i1;
    // The window read back: the batch, and the whole of any codebook group that starts in it (its later
    // columns as the device holds them: the lazy updates of earlier batches applied, as in gptvqQuantize).
    let wEnd = i2;
    for (let j = i1; j < i2; j += d) if (j % g === 0) wEnd = Math.max(wEnd, Math.min(j + g, cols));
    const [Wl, Ul] = [await k.submatrix(Wb, cols, 0, rows, i1, wEnd - i1), await k.submatrix(Ub, cols, i1, count, i1, count)];
    for (let j = i1; j < i2; j += d) {
      if (j % g === 0) {
        const tk = now();
        const { pts, wts, N } = codebookPoints(Wl, wEnd - i1, i1, rows, j, Math.min(j + g, cols), d, Ud);
        step.setCodebook(await kmeans(pts, wts, N, d, K, { iters: opts.kmeansIters ?? 20, seed: opts.seed + j }), codebooks, codebookBits, j / g);
        tK += now() - tk;
      }
      loss += step.run(Wl, wEnd - i1, i1, Ul, count, i1, j, i1, i2, Err, count, codes, Q);
    }
    if (i2 >= cols) break;
    // W[:, i2:] −= E (rows×count) · U[i1:i2, i2:] on the device.
    for (let i = 0; i < rows * count; i++) E32[i] = Err[i];
    await gpu.upload(Eb, E32.subarray(0, rows * count));
    const hw = rowWindow(Ub, cols, i1, i2); // only the batch's rows of U are bound
    const u = k.own(gpu.uniforms(gemmWords({ M: rows, N: cols - i2, K: count, lda: count, ldb: cols, ldc: cols, offA: 0, offB: hw.skip + i2, offC: i2, alpha: -1, beta: 1 })));
    const group = gpu.bindGroup(gemm, [u, Eb, hw.binding, Wb]);
    await gpu.submit((enc) => {
      const pass = enc.beginComputePass();
      pass.setPipeline(gemm);
      pass.setBindGroup(0, group);
      pass.dispatchWorkgroups(...gemmGroups(rows, cols - i2));
      pass.end();
    });
    gpu.counters.dispatches++;
    k.drop(u);
  }
  return { codes, codebooks, codebookBits, groups: G, entries: K, Q, loss, seconds: { kmeans: tK, loop: now() - t0 - tK } };
}
