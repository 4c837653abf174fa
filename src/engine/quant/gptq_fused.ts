// GPTQ with the whole column loop fused into WGSL kernels on the engine's own WebGPU device
// (compute/dawn.ts): per lazy batch of B columns, ONE dispatch runs the reference's inner loop for
// every row at once (quant/gptq_fused_wgsl.ts: gptqBatchWgsl), and one more applies the lazy update
// W[:, i2:] −= Err1·Hinv[i1:i2, i2:] (compute/wgsl_gemm.ts). A 4096-column layer is 64 dispatches in one
// command buffer; the ORT device loop (gptq_device_loop.ts) needs 7 graph nodes per column (~28 000),
// and its ~10–15 µs per node bounded it at ~0.3–0.4 s per 4096 columns before any arithmetic.
//
// Hinv: by default from the Cholesky on the same device (linalg/cholesky_dawn.ts), so a layer's only
// copies are W and H up, codes, params and row losses down.
//
// Semantics = gptqCore (same preparation: gptqPrepare; order, dead columns, damping, the Cholesky's
// RTN fallback, per-row / static / dynamic group params including the reference's find_params on the
// lagging global W), in float32 with round-half-even as the reference (WGSL round), and x / s as a
// division. Differences from the float64 core are float32 rounding only (tests: codes ≥ 99 % equal,
// loss within 1e-3, the golden-tested core as the reference). Dynamic group params with clip 'mse' are
// quantize_wgsl.ts's search in the batch kernel; per-row and static params come from gptqPrepare (host).

import type { DawnGpu } from '../compute/dawn';
import type { GptqOptions, GptqResult } from './gptq';
import { choleskyFallbackHinv, gptqPrepare } from './gptq_core';
import { invertPermutation } from './gptq_kernels';
import { choleskyInverseUpperDawn } from '../linalg/cholesky_dawn';
import { dequantizeCode } from './quantizer';
import { PARAMS_WORDS, gptqBatchWgsl } from './gptq_fused_wgsl';
import { gemmGroups, gemmWgsl, gemmWords } from '../compute/wgsl_gemm';

const now = () => performance.now() / 1000;

/**
 * Widest lazy batch the batch kernel holds per invocation in a private array; wider batches keep the
 * row slices in a storage scratch buffer (rows × B floats; gptq_fused_wgsl.ts `scratch`).
 */
export const FUSED_MAX_BLOCK = 256;

/**
 * True when the fused kernels implement `opts` and W, Hinv (and the scratch of a batch wider than
 * FUSED_MAX_BLOCK, ≤ W) fit the device's largest binding. Any clip and blockSize.
 */
export function fusedSupports(opts: Partial<GptqOptions>, rows: number, cols: number, maxBindingBytes = Infinity): boolean {
  // `opts`: every option is implemented now (kept: the callers ask per layer, and a future limit may need it).
  return 4 * rows * cols <= maxBindingBytes && 4 * cols * cols <= maxBindingBytes;
}

export interface FusedHooks {
  /**
   * Where Hinv comes from: 'dawn' (default) the Cholesky on the same device (linalg/cholesky_dawn.ts,
   * U never leaves it), 'hooks' the callbacks below (A/B runs, the ORT Cholesky).
   */
  hinvFrom?: 'dawn' | 'hooks';
  /**
   * Hinv as float32 (upper U with UᵀU = H_d⁻¹), e.g. the ORT device Cholesky's tensor read back;
   * throws NotPositiveDefiniteError → the RTN fallback. Preferred over the float64 hook when given.
   */
  choleskyInverseUpperF32?: (H: Float64Array, n: number) => Promise<Float32Array>;
  choleskyInverseUpperAsync?: (H: Float64Array, n: number) => Promise<Float64Array>;
}

export interface FusedSeconds {
  /** Host → device copies queued (W, Hinv, params) and the kernels' run until the results are read back. */
  upload: number;
  kernels: number;
  unpack: number;
}

/** GPTQ on `gpu` with the fused kernels (see the header). Check fusedSupports first. */
export async function gptqQuantizeFused(
  gpu: DawnGpu, wVals: Float32Array | Float64Array, rows: number, cols: number,
  hVals: Float32Array | Float64Array, opts: GptqOptions & FusedHooks,
): Promise<GptqResult & { fused: FusedSeconds }> {
  if (!fusedSupports(opts, rows, cols, gpu.maxBindingBytes)) {
    throw new RangeError(`the fused GPTQ kernels do not implement this layer (clip ${opts.clip}, blockSize ${opts.blockSize}, ${rows}×${cols} against a ${gpu.maxBindingBytes}-byte binding limit)`);
  }
  const t0 = now();
  const p = gptqPrepare(wVals, rows, cols, hVals, opts, 'f32');
  const { blockSize: B, groupSize, staticGroups, sym, maxq, order, scale, zero, G: ng, clip } = p;
  const t1 = now();
  let U: Float32Array | undefined, Ub: GPUBuffer | undefined;
  let choleskyFallback = false;
  try {
    if ((opts.hinvFrom ?? 'dawn') === 'dawn') Ub = await choleskyInverseUpperDawn(gpu, p.H, cols);
    else if (opts.choleskyInverseUpperF32) U = await opts.choleskyInverseUpperF32(Float64Array.from(p.H), cols);
    else if (opts.choleskyInverseUpperAsync) U = Float32Array.from(await opts.choleskyInverseUpperAsync(Float64Array.from(p.H), cols));
    else throw new Error("hinvFrom 'hooks' without a Cholesky hook");
  } catch (e) {
    U = Float32Array.from(choleskyFallbackHinv(e, cols, p.where, opts));
    choleskyFallback = true;
  }
  const t2 = now();

  // Group slot of the k-th quantized column, and the params the kernel starts from.
  const dynamic = groupSize !== -1 && !staticGroups;
  const slot = new Uint32Array(cols);
  for (let k = 0; k < cols; k++) slot[k] = groupSize === -1 ? 0 : staticGroups ? Math.floor(order[k] / groupSize) : Math.floor(k / groupSize);
  const params = new Float32Array(rows * ng * 2);
  if (!dynamic) for (let i = 0; i < rows * ng; i++) {
    params[2 * i] = scale[i];
    params[2 * i + 1] = zero[i];
  }
  const wordsPerRow = Math.ceil(cols / 4);

  let tUp = 0, tKernels = 0;
  let codeWords: Uint32Array, paramsOut: Float32Array, rowLoss: Float32Array;
  try {
    const tu = now();
    Ub ??= await gpu.bufferFrom(U!, 'Hinv');
    const Wb = await gpu.bufferFrom(p.W, 'W');
    const Hinv: GPUBuffer = Ub;
    tUp = now() - tu;
    const tk = now();
    try {
      ({ codeWords, paramsOut, rowLoss } = await fusedColumnLoop(gpu, Wb, Hinv, rows, cols, { B, maxq, sym, groupSize, dynamic, G: ng, slot, params, clip }));
    } finally {
      Wb.destroy();
    }
    tKernels = now() - tk;
  } finally {
    Ub?.destroy();
  }

  // Unpack: codes in quantization order → original columns, params, Q = dequantized codes.
  const tp = now();
  const wantQ = opts.dequantized !== false;
  const Q = new Float32Array(wantQ ? rows * cols : 0), codes = new Uint8Array(rows * cols), gIdx = new Int32Array(cols);
  for (let k = 0; k < cols; k++) gIdx[order[k]] = slot[k];
  for (let i = 0; i < rows * ng; i++) {
    scale[i] = paramsOut[2 * i];
    zero[i] = paramsOut[2 * i + 1];
  }
  const bytes = new Uint8Array(codeWords.buffer, codeWords.byteOffset, codeWords.byteLength);
  // Q through a per-row table of each group's 2^bits dequantized values (= dequantizeCode's float32
  // product): this unpacking is host time on the critical path (45 M values for a 7B MLP layer).
  const L = maxq + 1, tab = new Float32Array(ng * L), slotL = Int32Array.from(slot, (g) => g * L);
  let identity = true;
  for (let k = 0; k < cols && identity; k++) identity = order[k] === k;
  let loss = 0;
  for (let r = 0; r < rows; r++) {
    const src = r * wordsPerRow * 4, dst = r * cols, rg = r * ng;
    if (wantQ) for (let g = 0; g < ng; g++) for (let c = 0; c < L; c++) tab[g * L + c] = dequantizeCode(c, scale[rg + g], zero[rg + g]);
    if (identity) {
      codes.set(bytes.subarray(src, src + cols), dst);
      if (wantQ) for (let k = 0; k < cols; k++) Q[dst + k] = tab[slotL[k] + bytes[src + k]];
    } else if (!wantQ) {
      for (let k = 0; k < cols; k++) codes[dst + order[k]] = bytes[src + k];
    } else {
      for (let k = 0; k < cols; k++) {
        const code = bytes[src + k], col = dst + order[k];
        codes[col] = code;
        Q[col] = tab[slotL[k] + code];
      }
    }
    loss += rowLoss[r];
  }
  const t3 = now();
  return {
    Q, codes, scale, zero, gIdx, groups: ng,
    perm: order, invPerm: invertPermutation(order),
    loss, deadColumns: p.deadColumns, damp: p.damp, choleskyFallback,
    seconds: { prep: t1 - t0, cholesky: t2 - t1, columnLoop: t3 - t2, lazyUpdate: 0, total: t3 - t0 },
    fused: { upload: tUp, kernels: tKernels, unpack: t3 - tp },
  };
}

export interface FusedLoopShape {
  /** Lazy batch width (any; > FUSED_MAX_BLOCK: row slices in a scratch buffer), 2^bits − 1, symmetric grid, group width (−1: one group per row), dynamic group params. */
  B: number; maxq: number; sym: boolean; groupSize: number; dynamic: boolean;
  /** Group slots per row, the slot of the k-th quantized column, the starting params (scale, zero per slot; dynamic: overwritten). */
  G: number; slot: Uint32Array; params: Float32Array;
  /** Range fit of the dynamic group params (default 'minmax'). */
  clip?: 'minmax' | 'mse';
}

/**
 * The column loop on buffers already on `gpu`: W (rows×cols float32, quantization order, modified in
 * place) and Hinv (cols×cols float32 upper). Returns the codes packed 4 per word (rows × ⌈cols/4⌉ words),
 * the final params and the per-row losses. The callers: gptqQuantizeFused above, quant/lopro_dawn.ts.
 */
export async function fusedColumnLoop(
  gpu: DawnGpu, Wb: GPUBuffer, Hinv: GPUBuffer, rows: number, cols: number, sh: FusedLoopShape,
  /** keepCodes: also return the packed codes' buffer (the caller destroys it; lopro_dawn.ts rebuilds Ŵ from it). */
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
      const i2 = Math.min(i1 + B, cols), count = i2 - i1;
      const u = own(gpu.uniforms([rows, cols, i1, count, i2, wordsPerRow, ng, 0].slice(0, PARAMS_WORDS)));
      // W[:, i2:] −= Err1 (rows×count, row stride B) · Hinv[i1:i2, i2:]
      const g = i2 < cols ? own(gpu.uniforms(gemmWords({ M: rows, N: cols - i2, K: count, lda: B, ldb: cols, ldc: cols, offA: 0, offB: i1 * cols + i2, offC: i2, alpha: -1, beta: 1 }))) : undefined;
      batches.push({
        bBatch: gpu.bindGroup(batchPipe, [u, Wb, Hinv, Eb, codesB, paramsB, lossB, slotB, Sb]),
        bUpdate: g && gpu.bindGroup(updatePipe, [g, Eb, Hinv, Wb]),
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
    const codeWords = new Uint32Array(rows * wordsPerRow), rowLoss = new Float32Array(rows);
    const paramsOut = dynamic ? new Float32Array(params.length) : params;
    await Promise.all([
      gpu.readInto(codesB, codeWords),
      dynamic ? gpu.readInto(paramsB, paramsOut) : Promise.resolve(),
      gpu.readInto(lossB, rowLoss),
    ]);
    return { codeWords, paramsOut, rowLoss, codesB: opts.keepCodes ? codesB : undefined };
  } catch (e) {
    if (opts.keepCodes) codesB.destroy();
    throw e;
  } finally {
    for (const b of buffers) b.destroy();
  }
}
