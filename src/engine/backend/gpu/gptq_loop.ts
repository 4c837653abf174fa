// GPTQ's column loop (quant/gptq.ts step 7) as WGSL kernels on the engine's own WebGPU device: per lazy batch
// of B columns, ONE dispatch runs the reference's inner loop for every row at once (gptq_wgsl.ts: one
// invocation per row, the batch's row slice private to it), and one more applies the lazy update
// W[:, i2:] −= Err1·Hinv[i1:i2, i2:] (wgsl_gemm.ts). A 4096-column layer is 64 dispatches in one command
// buffer. Semantics = quant/gptq_loop.ts in float32 with round-half-even (WGSL round) and a correctly
// rounded x / s: codes agree with the float64 loop except at rounding boundaries. Dynamic group params,
// min-max or the mse search, are quantize_wgsl.ts's routine inside the batch kernel.

import type { DawnGpu } from './dawn';
import { PARAMS_WORDS, gptqBatchWgsl } from './gptq_wgsl';
import { gemmGroups, gemmWgsl, gemmWords } from './wgsl_gemm';
import { rowWindow } from './split';

/**
 * Widest lazy batch the batch kernel holds per invocation in a private array; wider batches keep the
 * row slices in a storage scratch buffer (rows × B floats; gptq_wgsl.ts `scratch`).
 */
export const FUSED_MAX_BLOCK = 256;

export interface FusedLoopShape {
  /** Lazy batch width (any; > FUSED_MAX_BLOCK: row slices in a scratch buffer), 2^bits − 1, symmetric grid, group width (−1: one group per row), dynamic group params. */
  B: number;
  maxq: number;
  sym: boolean;
  groupSize: number;
  dynamic: boolean;
  /** Group slots per row, the slot of the k-th quantized column, the starting params (scale, zero per slot; dynamic: overwritten). */
  G: number;
  slot: Uint32Array;
  params: Float32Array;
  /** Range fit of the dynamic group params (default 'minmax'). */
  clip?: 'minmax' | 'mse';
}

/**
 * The column loop on buffers already on `gpu`: W (rows×cols float32, quantization order, modified in
 * place) and Hinv (cols×cols float32 upper). Returns the codes packed 4 per word (rows × ⌈cols/4⌉ words),
 * the final params and the per-row losses.
 */
export async function fusedColumnLoop(
  gpu: DawnGpu,
  Wb: GPUBuffer,
  Hinv: GPUBuffer,
  rows: number,
  cols: number,
  sh: FusedLoopShape,
  /** keepCodes: also return the packed codes' buffer (the caller destroys it). */
  opts: { keepCodes?: boolean } = {},
): Promise<{ codeWords: Uint32Array; paramsOut: Float32Array; rowLoss: Float32Array; codesB?: GPUBuffer }> {
  const { B, maxq, sym, groupSize, dynamic, G: ng, slot, params, clip = 'minmax' } = sh;
  const scratch = B > FUSED_MAX_BLOCK;
  const wordsPerRow = Math.ceil(cols / 4);
  const buffers: GPUBuffer[] = [];
  const own = (b: GPUBuffer) => (buffers.push(b), b);
  const codesB = gpu.buffer(4 * rows * wordsPerRow, 'codes');
  if (!opts.keepCodes) own(codesB);
  try {
    const [batchPipe, updatePipe] = await Promise.all([
      gpu.pipeline(gptqBatchWgsl({ B, maxq, sym, dynamic, G: groupSize, clip, scratch })),
      gpu.pipeline(gemmWgsl(false, false, false, false)),
    ]);
    const Eb = own(gpu.buffer(4 * rows * B, 'Err1'));
    const Sb = scratch ? own(gpu.buffer(4 * rows * B, 'row slices')) : undefined;
    const paramsB = own(await gpu.bufferFrom(params, 'params'));
    const lossB = own(gpu.buffer(4 * rows, 'loss'));
    const slotB = own(gpu.buffer(slot, 'slot'));
    const batches: { bBatch: GPUBindGroup; bUpdate?: GPUBindGroup; tailCols: number }[] = [];
    for (let i1 = 0; i1 < cols; i1 += B) {
      const i2 = Math.min(i1 + B, cols),
        count = i2 - i1;
      // Only the batch's rows of Hinv are bound: the whole of a wide layer's may exceed one binding.
      const hw = rowWindow(Hinv, cols, i1, i2);
      const u = own(gpu.uniforms([rows, cols, i1, count, i2, wordsPerRow, ng, hw.skip].slice(0, PARAMS_WORDS)));
      // W[:, i2:] −= Err1 (rows×count, row stride B) · Hinv[i1:i2, i2:]
      const g =
        i2 < cols
          ? own(gpu.uniforms(gemmWords({ M: rows, N: cols - i2, K: count, lda: B, ldb: cols, ldc: cols, offA: 0, offB: hw.skip + i2, offC: i2, alpha: -1, beta: 1 })))
          : undefined;
      batches.push({
        bBatch: gpu.bindGroup(batchPipe, [u, Wb, hw.binding, Eb, codesB, paramsB, lossB, slotB, Sb]),
        bUpdate: g && gpu.bindGroup(updatePipe, [g, Eb, hw.binding, Wb]),
        tailCols: cols - i2,
      });
    }
    await gpu.submit((enc) => {
      const pass = enc.beginComputePass();
      for (const b of batches) {
        pass.setPipeline(batchPipe);
        pass.setBindGroup(0, b.bBatch);
        pass.dispatchWorkgroups(Math.ceil(rows / 64));
        if (!b.bUpdate) continue;
        pass.setPipeline(updatePipe);
        pass.setBindGroup(0, b.bUpdate);
        pass.dispatchWorkgroups(...gemmGroups(rows, b.tailCols));
      }
      pass.end();
    });
    gpu.counters.dispatches += batches.length * 2 - 1;
    const codeWords = new Uint32Array(rows * wordsPerRow),
      rowLoss = new Float32Array(rows);
    const paramsOut = dynamic ? new Float32Array(params.length) : params;
    await Promise.all([gpu.readInto(codesB, codeWords), dynamic ? gpu.readInto(paramsB, paramsOut) : Promise.resolve(), gpu.readInto(lossB, rowLoss)]);
    return { codeWords, paramsOut, rowLoss, codesB: opts.keepCodes ? codesB : undefined };
  } catch (e) {
    if (opts.keepCodes) codesB.destroy();
    throw e;
  } finally {
    for (const b of buffers) b.destroy();
  }
}
