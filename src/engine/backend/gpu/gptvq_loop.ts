// GPTVQ's loop (quant/gptvq.ts) for the GPU backend, entirely on the Dawn device: W′ and Hinv (upper factor U)
// stay where they are, and per lazy batch [i1, i2) the device runs
//   - at each codebook group start j, the group's k-means on W[:, j : j+g] as it stands (kmeans_dawn.ts),
//     leaving the FP16-rounded codebook on the device;
//   - the codeword search with the in-batch feedback, a segment per codebook group (gptvq_wgsl.ts);
//   - the lazy update W[:, i2:] −= E·U[i1:i2, i2:] (wgsl_gemm.ts).
// Nothing comes back per batch: the codes, the codebooks and the per-row losses are read once at the end.
// Semantics = quant/gptvq.ts vqLoopSteps in float32 (the k-means' sums and the seeding's prefix sums included).

import type { DawnGpu, Dispatch } from './dawn';
import { gemmGroups, gemmWgsl, gemmWords } from './wgsl_gemm';
import type { LayerKernels } from './kernels';
import { diagWgsl } from './layer_wgsl';
import { rowWindow, splitEntries } from './split';
import { vqStepWgsl, vqWords } from './gptvq_wgsl';
import { DawnKMeans, seedDraws } from './kmeans_dawn';
import { gptvqShape, type GptvqOptions } from '../../quant/gptvq';
import { encodeF16 } from '../../quant/fp8';

export interface DawnGptvqResult {
  /** rows × (cols/d) codebook indices; codebooks (decoded FP16) and their bits, groups × K × d. */
  codes: Uint16Array;
  codebooks: Float32Array;
  codebookBits: Uint16Array;
  groups: number;
  entries: number;
  /** Σ ½‖E‖². */
  loss: number;
  /** The whole loop, the groups' k-means included (not timed apart: that took two queue drains per group). */
  seconds: { loop: number };
}

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
  /** Where Ub's binding parts start (split.ts), when it is wider than one binding. */
  ubParts: readonly number[] = [0],
): Promise<DawnGptvqResult> {
  const t0 = now();
  const { d, g, K, B } = gptvqShape(cols, opts, where);
  const G = Math.ceil(cols / g),
    V = cols / d,
    wpr = Math.ceil(V / 2);
  const Ud = new Float32Array(await k.readBack(splitEntries(1, Ub, ubParts, cols * cols), cols, diagWgsl('get', ubParts)));
  // The k-means weights as codebookPoints computes them (float64), then float32.
  const colW = k.f32(Float64Array.from(Ud, (u) => 1 / u ** 2));
  const groups = Array.from({ length: G }, (_, gi) => ({ j: gi * g, N: (rows * (Math.min(gi * g + g, cols) - gi * g)) / d }));
  const draws = k.u32(seedDraws(groups, K, opts.seed));
  const codebooksB = k.own(gpu.buffer(4 * G * K * d, 'GPTVQ codebooks'));
  const codesB = k.own(gpu.buffer(4 * rows * wpr, 'GPTVQ codes'));
  const lossB = k.own(gpu.buffer(4 * rows, 'GPTVQ row loss'));
  const Eb = k.own(gpu.buffer(4 * rows * B, 'GPTVQ E'));
  const km = await DawnKMeans.create(gpu, k, { W: Wb, colW, draws, codebooks: codebooksB }, rows, cols, d, K, Math.min(g, cols) / d, opts.kmeansIters ?? 20);
  const [vq, gemm] = await Promise.all([gpu.pipeline(vqStepWgsl({ D: d, K, g, B })), gpu.pipeline(gemmWgsl(false, false, false, false))]);
  const temps: GPUBuffer[] = [];
  const uniforms = (w: ArrayLike<number>) => (temps.push(gpu.uniforms(w)), temps[temps.length - 1]);
  try {
    for (let i1 = 0; i1 < cols; i1 += B) {
      const i2 = Math.min(i1 + B, cols);
      const hw = rowWindow(Ub, cols, i1, i2); // only the batch's rows of U are bound
      const steps: Dispatch[] = [];
      const segment = (s0: number, s1: number) =>
        steps.push({
          pipe: vq,
          group: gpu.bindGroup(vq, [uniforms(vqWords({ rows, cols, i1, i2, s0, s1, uOff: hw.skip, wpr })), Wb, hw.binding, Eb, codesB, lossB, codebooksB]),
          size: [Math.ceil(rows / 64), 1, 1],
        });
      let s0 = i1;
      for (let j = Math.ceil(i1 / g) * g; j < i2; j += g) {
        if (j > s0) segment(s0, j);
        s0 = j;
        // The k-means of group j, queued after the segment before it (the queue keeps their order).
        await gpu.dispatchAll(steps.splice(0));
        await gpu.dispatchAll(km.steps(j, (Math.min(j + g, cols) - j) / d, j / g));
      }
      segment(s0, i2);
      if (i2 < cols) {
        // W[:, i2:] −= E (rows×count, row stride B) · U[i1:i2, i2:]
        const u = uniforms(gemmWords({ M: rows, N: cols - i2, K: i2 - i1, lda: B, ldb: cols, ldc: cols, offA: 0, offB: hw.skip + i2, offC: i2, alpha: -1, beta: 1 }));
        steps.push({ pipe: gemm, group: gpu.bindGroup(gemm, [u, Eb, hw.binding, Wb]), size: gemmGroups(rows, cols - i2) });
      }
      await gpu.dispatchAll(steps);
      for (const b of temps.splice(0)) b.destroy();
    }
    const words = new Uint32Array(rows * wpr),
      codebooks = new Float32Array(G * K * d),
      rowLoss = new Float32Array(rows);
    await Promise.all([gpu.readInto(codesB, words), gpu.readInto(codebooksB, codebooks), gpu.readInto(lossB, rowLoss)]);
    const halves = new Uint16Array(words.buffer);
    const codes = V % 2 === 0 ? halves : new Uint16Array(rows * V);
    if (V % 2 !== 0) for (let r = 0; r < rows; r++) codes.set(halves.subarray(2 * r * wpr, 2 * r * wpr + V), r * V);
    let loss = 0;
    for (const l of rowLoss) loss += l;
    // The device rounded them to FP16 already: encoding gives their bits exactly.
    const codebookBits = encodeF16(codebooks);
    return { codes, codebooks, codebookBits, groups: G, entries: K, loss, seconds: { loop: now() - t0 } };
  } finally {
    for (const b of temps) b.destroy();
    km.release();
    for (const b of [colW, draws, codebooksB, codesB, lossB, Eb]) k.drop(b);
  }
}
