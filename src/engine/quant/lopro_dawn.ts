// One LoPRo layer (spec §1, method lopro) with every matrix resident on the engine's own WebGPU device
// (compute/dawn.ts): W and H go up once (through the staging ring; H converted to float32 on the way),
// codes, params, the column sums, the layer view's sampled rows and Ŵ come down. Everything between —
// A = W·diag(α), R1SVD, the residual, the importance sums, R′ = R_p·Q, H′ = Q·H_p·Q, damping, the
// Cholesky, the fused GPTQ loop, and Ŵ rebuilt from the stored parts — runs as WGSL kernels.
// Why: the row-parallel driver (gptq_parallel_lopro.ts) spent ~1–3 s per 7B layer in host passes
// and copies (permute+rotate 0.3–1.7 s, reconstruct 0.35–0.76 s, R1SVD's A and H′ uploaded separately:
// bench/RESULTS.md, session 5), against 0.8–2.9 s for the whole PyTorch GPTQ of the same layer.
//
// Same stored format and the same decisions as quant/lopro.ts (α, R1SVD's rounded factors, the importance
// permutation, the rotation plan, GPTQ with dynamic groups) in float32: codes agree with the float64
// driver except at rounding boundaries, and Ŵ = dequantizeLoPRo(stored) to float32 rounding (tests).
// Configs it implements: loproDawnSupports; the callers keep the pool driver for the rest.

import type { LayerConfig } from '../../protocol/config';
import { ErrorCode } from '../../protocol/messages';
import { ProtocolError } from '../../protocol/rpc';
import type { DawnGpu } from '../compute/dawn';
import { choleskyInverseUpperDawn } from '../linalg/cholesky_dawn';
import { decodeF16 } from './fp8';
import type { GptqResult } from './gptq';
import { choleskyFallbackHinv } from './gptq_core';
import { FUSED_MAX_BLOCK, fusedColumnLoop } from './gptq_fused';
import { maxqFor } from './quantizer';
import { decodeLowRank, loproStoredLayer, type LoproStoredLayer } from './lopro_dequant';
import { detailRowStep } from './lopro';
import { argsortDescending, importanceFromAbsSums } from './permute';
import { columnScaleAlpha, type LowRankFactors } from './r1svd';
import { r1svdDawnResident } from './r1svd_dawn';
import { gptvqOnDawn, type KMeansFn } from './gptvq_dawn';
import { planRotation, type RotationPlan } from './rotation';
import { SCALE_COLS_WGSL, SYMMETRIZE_WGSL, ZERO_COLS_WGSL, diagWgsl, strideGroups } from './lopro_dawn_wgsl';
import { LayerKernels } from './dawn_kernels';
import { stageClock } from './report';

/** Widest Hadamard block the rotation kernel holds in workgroup memory (16 KiB of float32). */
export const DAWN_MAX_HADAMARD = 4096;

/** True when quantizeLayerLoPRoDawn implements `cfg` for a rows×cols layer on a device whose largest binding is `maxBinding` bytes. */
export function loproDawnSupports(cfg: LayerConfig, rows: number, cols: number, maxBinding: number): boolean {
  const fits = cfg.hadamardBlock <= DAWN_MAX_HADAMARD && rows <= 65535 && cols <= 65535 && 4 * rows * cols <= maxBinding && 4 * cols * cols <= maxBinding;
  // lopro_v: any GPTVQ config (gptvqShape refuses the invalid ones with the same errors as quant/lopro.ts).
  if (cfg.method === 'lopro_v') return fits;
  return fits && cfg.method === 'lopro' && !cfg.actOrder && !cfg.staticGroups && cfg.groupSize !== -1 && cfg.clip === 'minmax'
    && Math.min(cfg.blockSize, cols) <= FUSED_MAX_BLOCK;
}

export interface DawnLoproResult {
  stored: LoproStoredLayer;
  /** Ŵ (rows×cols) rebuilt on the device from the stored parts. */
  reconstructed: Float32Array;
  gptq: GptqResult;
  seconds: Record<string, number>;
  factors: LowRankFactors | null;
  importance: Float64Array;
  plan: RotationPlan;
  /** Rows 0, step, 2·step… of R (original column order) and of R′ (permuted + rotated), for the layer view. */
  sampled: { step: number; R: Float32Array; Rt: Float32Array };
  notes: string[];
}

const now = () => performance.now() / 1000;

/** Quantizes W (rows×cols) with H (cols×cols) as quant/lopro.ts does for `cfg` (check loproDawnSupports first). */
export async function quantizeLayerLoPRoDawn(
  gpu: DawnGpu, W: Float32Array, rows: number, cols: number, H: Float64Array, actStats: ArrayLike<number> | null,
  cfg: LayerConfig, seed: number, name = 'layer',
  /**
   * H32: float32(H) when the caller holds it (the pipeline's Hessians arrive as float32): uploaded as is, no
   * conversion. kmeansIters: lopro_v's codebook k-means (default 20, as quant/lopro.ts); kmeans: where it
   * runs (default this thread; kmeansOnPool splits it over the worker pool, same bits).
   */
  opts: { H32?: Float32Array; kmeansIters?: number; kmeans?: KMeansFn } = {},
): Promise<DawnLoproResult> {
  if (!loproDawnSupports(cfg, rows, cols, gpu.maxBindingBytes)) throw new RangeError(`quantizeLayerLoPRoDawn: not implemented for this config/shape (${rows}×${cols})`);
  if (W.length !== rows * cols) throw new ProtocolError(ErrorCode.ShapeMismatch, `W has ${W.length} values, expected ${rows}×${cols}`, name);
  if (opts.H32 && opts.H32.length !== cols * cols) throw new ProtocolError(ErrorCode.ShapeMismatch, `H32 has ${opts.H32.length} values, expected ${cols}×${cols}`, name);
  if (H.length !== cols * cols) throw new ProtocolError(ErrorCode.ShapeMismatch, `H has ${H.length} values, expected ${cols}×${cols}`, name);
  const { seconds, lap } = stageClock();
  const notes: string[] = [];
  const k = new LayerKernels(gpu);
  const MN = rows * cols, NN = cols * cols;
  try {
    // ── Stage A: α, A = W·diag(α), R1SVD, R = W − W_r (spec §1.1–1.4) ──
    const { alpha, alphaBits } = columnScaleAlpha(actStats, cols, cfg.beta);
    const Wb = k.own(await gpu.bufferFrom(W, 'W'));
    await k.assertFinite(Wb, MN, 'W', name);
    let R = Wb, free: GPUBuffer;
    let factors: LowRankFactors | null = null;
    if (cfg.rank > 0) {
      const Ab = k.own(gpu.buffer(4 * MN, 'A'));
      await k.run(SCALE_COLS_WGSL, [k.elem(rows, cols), Wb, k.f32(alpha), Ab], [strideGroups(MN).groups, 1, 1]);
      const frob2 = (await k.colSums(Ab, rows, cols, 'sq')).reduce((a, v) => a + v, 0);
      const t1 = now();
      factors = await r1svdDawnResident(gpu, Ab, frob2, rows, cols, { rank: cfg.rank, powerIters: cfg.powerIters, seed });
      const t2 = now();
      if (factors.rank < cfg.rank) notes.push(`low rank stopped at ${factors.rank} < ${cfg.rank}: A is exactly rank ${factors.rank}`);
      // R = W − (U·diag(σ̂)·V)·diag(α)⁻¹ into A's buffer (A is done with): the rounded factors, as the host's residual.
      if (factors.rank > 0) await k.lowRank(factors.U, factors.sigma, factors.V, factors.rank, alpha, rows, cols, Ab, -1, Wb);
      else await k.copy(Wb, Ab, 4 * MN);
      R = Ab;
      free = Wb;
      seconds['lowrank.r1svd'] = t2 - t1;
      seconds['lowrank.residual'] = now() - t2;
    } else free = k.own(gpu.buffer(4 * MN, 'W′'));
    lap('lowrank');

    // ── Stage B: importance permutation (§1.6) and partial block rotation (§1.7) ──
    const absSums = await k.colSums(R, rows, cols, 'abs');
    const hDiag = new Float64Array(cols);
    for (let j = 0; j < cols; j++) hDiag[j] = H[j * cols + j];
    const importance = importanceFromAbsSums(hDiag, absSums, rows);
    const perm = argsortDescending(importance);
    const plan = planRotation(cols, cfg.rotation, cfg.salientBlock, cfg.hadamardBlock);
    if (plan.note) notes.push(plan.note);
    const permB = k.own(gpu.buffer(Uint32Array.from(perm), 'perm'));
    const Wp = free; // R′ = R_p·Q, the GPTQ loop's W
    await k.rotate('gatherR', R, permB, Wp, rows, cols, plan);
    const step = detailRowStep(rows, cols);
    const [sR, sRt] = await Promise.all([k.sampleRows(R, rows, cols, step), k.sampleRows(Wp, rows, cols, step)]);
    // H′ = Q·H_p·Q: gather + row FWHT into M, then M's transpose + row FWHT back into H's buffer, symmetrised.
    const Hb = k.own(await gpu.bufferFrom(opts.H32 ?? H, 'H'));
    await k.assertFinite(Hb, NN, 'H', name);
    let Ht = Hb;
    {
      const M = k.own(gpu.buffer(4 * NN, 'H_p·Q'));
      await k.rotate('gatherH', Hb, permB, M, cols, cols, plan);
      if (plan.block > 0) {
        await k.rotate('transpose', M, permB, Hb, cols, cols, plan);
        await k.run(SYMMETRIZE_WGSL, [k.elem(cols, cols), Hb], [strideGroups(NN).groups, 1, 1]);
        k.drop(M);
      } else {
        k.drop(Hb);
        Ht = M;
      }
    }
    lap('permute+rotate');

    // ── Stage C: GPTQ on R′ with H′ (§1.8), gptqPrepare's dead columns and damping on the device ──
    const d = new Float32Array(await k.readBack(Ht, cols, diagWgsl('get')));
    let deadColumns = 0, diagSum = 0;
    const dead: number[] = [];
    for (let j = 0; j < cols; j++) {
      if (d[j] === 0) {
        deadColumns++;
        dead.push(j);
        d[j] = 1;
      }
      diagSum += d[j];
    }
    const damp = cfg.percDamp * (diagSum / cols);
    for (let j = 0; j < cols; j++) d[j] += damp; // float32 += as gptqPrepare(…, 'f32')
    await k.run(diagWgsl('set'), [k.elem(cols, cols), Ht, k.f32(d)], [Math.ceil(cols / 256), 1, 1]);
    if (dead.length) await k.run(ZERO_COLS_WGSL, [k.elem(rows, cols, dead.length), Wp, k.u32(dead)], [Math.ceil(dead.length / 256), rows, 1]);
    const t3 = now();
    let Ub: GPUBuffer, choleskyFallback = false;
    try {
      Ub = k.own(await choleskyInverseUpperDawn(gpu, Ht, cols));
    } catch (e) {
      Ub = k.own(await gpu.bufferFrom(Float32Array.from(choleskyFallbackHinv(e, cols, name, { bits: cfg.bits, onWarning: () => {} })), 'Hinv'));
      choleskyFallback = true;
      notes.push(cfg.method === 'lopro' ? 'H′ not positive definite after damping: residual quantized round-to-nearest' : 'H′ not positive definite after damping: no error feedback');
    }
    k.drop(Ht);
    const t4 = now();
    if (cfg.method === 'lopro_v') {
      const vb = cfg.vqBits || cfg.bits, g = cfg.groupSize === -1 ? cols : Math.min(cfg.groupSize, cols);
      const vq = await gptvqOnDawn(gpu, k, Wp, Ub, rows, cols, {
        vqDim: cfg.vqDim, bits: vb, groupSize: cfg.groupSize === -1 ? -1 : g, blockSize: cfg.blockSize, kmeansIters: opts.kmeansIters, seed: seed + 7919,
      }, name, opts.kmeans);
      k.drop(Ub);
      const t5 = now();
      seconds.kmeans = vq.seconds.kmeans;
      lap('quantize');
      const stored = loproStoredLayer({ rows, cols, cfg, groupSize: g, perm, alphaBits, factors, plan, vq: { bits: vb, vqDim: cfg.vqDim, codes: vq.codes, codebookBits: vq.codebookBits, groups: vq.groups } });
      // Ŵ: R̂′ (the codebook entries, from the host) unrotated and scattered on the device, + W_r.
      const Xq = k.own(await gpu.bufferFrom(vq.Q, 'R̂′'));
      const reconstructed = await rebuild(k, gpu, stored, Xq, 'unrotate', permB, R, plan);
      lap('reconstruct');
      const none = new Int32Array(0);
      const gptq: GptqResult = {
        Q: new Float32Array(0), codes: new Uint8Array(0), scale: new Float32Array(0), zero: new Float32Array(0), gIdx: none, groups: vq.groups, perm: none, invPerm: none,
        loss: vq.loss, deadColumns, damp, choleskyFallback,
        seconds: { prep: 0, cholesky: t4 - t3, columnLoop: t5 - t4, lazyUpdate: 0, total: t5 - t3 },
      };
      return { stored, reconstructed, gptq, seconds, factors, importance, plan, sampled: { step, R: sR, Rt: sRt }, notes };
    }
    const g = Math.min(cfg.groupSize, cols), G = Math.ceil(cols / g), maxq = maxqFor(cfg.bits);
    const slot = Uint32Array.from({ length: cols }, (_, c) => Math.floor(c / g));
    const loop = await fusedColumnLoop(gpu, Wp, Ub, rows, cols, {
      B: Math.min(cfg.blockSize, cols), maxq, sym: cfg.sym, groupSize: g, dynamic: true, G, slot, params: new Float32Array(rows * G * 2),
    }, { keepCodes: true });
    const codesB = k.own(loop.codesB!);
    k.drop(Ub);
    const scale = new Float32Array(rows * G), zero = new Float32Array(rows * G);
    for (let i = 0; i < rows * G; i++) {
      scale[i] = loop.paramsOut[2 * i];
      zero[i] = loop.paramsOut[2 * i + 1];
    }
    const codes = new Uint8Array(MN), bytes = new Uint8Array(loop.codeWords.buffer), wpr = Math.ceil(cols / 4);
    for (let i = 0; i < rows; i++) codes.set(bytes.subarray(i * wpr * 4, i * wpr * 4 + cols), i * cols);
    const t5 = now();
    lap('gptq');

    const gIdx = Int32Array.from(slot);
    const stored = loproStoredLayer({ rows, cols, cfg, groupSize: g, perm, alphaBits, factors, plan, q: { codes, scale, zero, groups: G, gIdx } });

    // ── Ŵ from the stored parts (lopro_dequant.ts dequantizeLoPRo): dequantize + FWHT + scatter, + W_r ──
    const reconstructed = await rebuild(k, gpu, stored, codesB, 'dequant', permB, R, plan, { wpr, G, g, scale: Float32Array.from(decodeF16(stored.scaleBits!)), zero: Float32Array.from(stored.zeros!) });
    lap('reconstruct');

    const order = Int32Array.from({ length: cols }, (_, c) => c);
    const gptq: GptqResult = {
      Q: new Float32Array(0), codes, scale, zero, gIdx, groups: G, perm: order, invPerm: order,
      loss: loop.rowLoss.reduce((a, v) => a + v, 0), deadColumns, damp, choleskyFallback,
      seconds: { prep: 0, cholesky: t4 - t3, columnLoop: t5 - t4, lazyUpdate: 0, total: t5 - t3 },
    };
    return { stored, reconstructed, gptq, seconds, factors, importance, plan, sampled: { step, R: sR, Rt: sRt }, notes };
  } finally {
    k.release();
  }
}

/**
 * Ŵ from a layer's stored parts (lopro_dequant.ts dequantizeLoPRo) into `out` (R's buffer, done with) and
 * back to the host: R̂′ from `X` (the packed codes: dequant; R̂′ itself: unrotate), FWHT, scattered by
 * perm, plus the low-rank W_r from the stored factors.
 */
async function rebuild(
  k: LayerKernels, gpu: DawnGpu, stored: LoproStoredLayer, X: GPUBuffer, mode: 'dequant' | 'unrotate', permB: GPUBuffer, out: GPUBuffer, plan: RotationPlan,
  dq?: { wpr: number; G: number; g: number; scale: Float32Array; zero: Float32Array },
): Promise<Float32Array> {
  const { rows, cols } = stored;
  await k.rotate(mode, X, permB, out, rows, cols, plan, dq);
  if (stored.rank > 0) {
    const f = decodeLowRank(stored);
    await k.lowRank(f.U, f.sigma, f.V, stored.rank, f.alpha, rows, cols, out, +1);
  }
  const reconstructed = new Float32Array(rows * cols);
  await gpu.readInto(out, reconstructed);
  return reconstructed;
}
