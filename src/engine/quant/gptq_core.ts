// The GPTQ algorithm proper (../../../../shared/golden/README.md §5, steps 1–8), as a generator that
// hands its two O(n³) parts to a driver (gptq.ts: gptqQuantize / gptqQuantizeAsync). Names follow
// the reference `fasterquant`: W, H, Hinv, W1, Err1, i1, i2, count, d.

import { ProtocolError } from '../../protocol/rpc';
import { ErrorCode } from '../../protocol/messages';
import { argsortDiagDesc, invertPermutation, isPermutation, permuteColumns, permuteSymmetric } from './gptq_kernels';
import { findParams, maxqFor, quantizeCode, dequantizeCode } from './quantizer';
import { assertFiniteArray } from './quantizer_checks';
import { groupCount } from './rtn';
import type { CoreRequest, GptqOptions, GptqResult } from './gptq';

const now = () => performance.now() / 1000;

/**
 * The algorithm, as a generator that hands its two O(n³) parts (the Cholesky of H⁻¹ and each lazy
 * trailing update) to a driver, so the same code runs with synchronous TypeScript kernels or
 * asynchronous ORT ones.
 */
/** GPTQ's steps 1–5 (params without groups, dead columns, static groups, order, damping): shared by every driver. */
export interface GptqPrepared<T extends Float32Array | Float64Array = Float64Array> {
  /** W (float64, or float32 for the fused kernels) with dead columns zeroed, in quantization order. */
  W: T;
  /** H_d: H in quantization order, damped, dead diagonals set to 1. */
  H: T;
  groupSize: number; sym: boolean; clip: 'minmax' | 'mse'; staticGroups: boolean;
  /** The clamped lazy-batch width, and the one asked for (lazySpan is checked against it). */
  blockSize: number; requestedBlock: number;
  maxq: number;
  /** Groups per row and their params: final for groupSize −1 and static groups, filled by the column loop otherwise. */
  G: number; scale: Float32Array; zero: Float32Array;
  perm: Int32Array | undefined; order: Int32Array;
  deadColumns: number; damp: number;
  where: string;
}

export function gptqPrepare(wVals: Float32Array | Float64Array, rows: number, cols: number, hVals: Float32Array | Float64Array, opts: GptqOptions): GptqPrepared;
/**
 * precision 'f32': W and H_d as float32 (the fused WGSL kernels' inputs) without the float64 copies —
 * for a 11008-column layer that is 970 MB of H copied, scanned and converted again (≈ 1.2 s measured on
 * the H100 host). The damping is added to H's float32 diagonal (one more rounding of 0.01·mean diag).
 */
export function gptqPrepare(wVals: Float32Array | Float64Array, rows: number, cols: number, hVals: Float32Array | Float64Array, opts: GptqOptions, precision: 'f32'): GptqPrepared<Float32Array>;
export function gptqPrepare(wVals: Float32Array | Float64Array, rows: number, cols: number, hVals: Float32Array | Float64Array, opts: GptqOptions, precision: 'f32' | 'f64' = 'f64'): GptqPrepared<Float32Array> | GptqPrepared<Float64Array> {
  const where = opts.name ?? 'gptqQuantize';
  if (wVals.length !== rows * cols) throw new ProtocolError(ErrorCode.ShapeMismatch, `W has ${wVals.length} values, expected ${rows}×${cols}`, where);
  if (hVals.length !== cols * cols) throw new ProtocolError(ErrorCode.ShapeMismatch, `H has ${hVals.length} values, expected ${cols}×${cols}`, where);
  // f32Inputs (float32 drivers only): the caller's own float32 copies, already checked finite.
  const given = precision === 'f32' ? opts.f32Inputs : undefined;
  if (given && (given.W.length !== rows * cols || given.H.length !== cols * cols)) throw new ProtocolError(ErrorCode.ShapeMismatch, `f32Inputs: W ${given.W.length} / H ${given.H.length} values, expected ${rows}×${cols} / ${cols}×${cols}`, where);
  if (!given) {
    assertFiniteArray(wVals, 'W', where);
    assertFiniteArray(hVals, 'H', where);
  }
  const groupSize = opts.groupSize ?? -1, sym = opts.sym ?? false, percDamp = opts.percDamp ?? 0.01, clip = opts.clip ?? 'minmax';
  const requestedBlock = opts.blockSize ?? 128, actOrder = opts.actOrder ?? false;
  const staticGroups = (opts.staticGroups ?? false) && groupSize !== -1;
  if (!(Number.isInteger(requestedBlock) && requestedBlock > 0)) throw new RangeError(`blockSize must be a positive integer, got ${requestedBlock}`);
  // A lazy batch wider than W is one batch: clamp, so the batch buffers are never larger than W
  // (blockSize 1e9 used to allocate rows × 1e9). Same codes: the loop below already cut at cols.
  const blockSize = Math.max(1, Math.min(requestedBlock, cols));
  if (actOrder && opts.perm) throw new ProtocolError(ErrorCode.BadConfig, 'actOrder and a caller-provided perm are exclusive', where, 'pass one of them');
  const maxq = maxqFor(opts.bits);
  const G = groupCount(cols, groupSize);
  const scale = new Float32Array(rows * G), zero = new Float32Array(rows * G);

  const Arr = precision === 'f32' ? Float32Array : Float64Array;
  let W: Float32Array | Float64Array = given ? given.W : Arr.from(wVals);
  let H: Float32Array | Float64Array = given ? given.H : Arr.from(hVals);

  // 1. Per-row params from the full rows, before dead columns are zeroed (final for groupSize −1).
  if (groupSize === -1) findParams(W, rows, cols, 0, cols, maxq, sym, scale, zero, 1, 0, clip);

  // 2. Dead inputs (never active in calibration): H_jj = 1, W[:, j] = 0, so Q[:, j] = 0.
  let deadColumns = 0;
  for (let j = 0; j < cols; j++) {
    if (H[j * cols + j] !== 0) continue;
    deadColumns++;
    H[j * cols + j] = 1;
    for (let r = 0; r < rows; r++) W[r * cols + j] = 0;
  }

  // 3. Static groups: params of each original group from the dead-zeroed, unpermuted W.
  if (staticGroups) for (let gi = 0; gi < G; gi++) findParams(W, rows, cols, gi * groupSize, (gi + 1) * groupSize, maxq, sym, scale, zero, G, gi, clip);

  // 4. Quantization order.
  let perm: Int32Array | undefined;
  if (opts.perm) {
    if (!isPermutation(opts.perm, cols)) throw new ProtocolError(ErrorCode.InvalidParams, `perm is not a permutation of 0..${cols - 1}`, where);
    perm = opts.perm;
  } else if (actOrder) perm = argsortDiagDesc(H, cols);
  if (perm) {
    W = permuteColumns(W, rows, cols, perm);
    H = permuteSymmetric(H, cols, perm);
  }
  const order = perm ?? Int32Array.from({ length: cols }, (_, k) => k);

  // 5. Damping.
  let diagSum = 0;
  for (let i = 0; i < cols; i++) diagSum += H[i * cols + i];
  const damp = percDamp * (diagSum / cols);
  for (let i = 0; i < cols; i++) H[i * cols + i] += damp;
  return { W, H, groupSize, sym, clip, staticGroups, blockSize, requestedBlock, maxq, G, scale, zero, perm, order, deadColumns, damp, where } as GptqPrepared<Float32Array> | GptqPrepared<Float64Array>;
}

/**
 * Step 6's failure path: H_d not positive definite → llm-compressor's fallback Hinv = I (= RTN), with
 * a warning; any other error is rethrown.
 */
export function choleskyFallbackHinv(e: unknown, cols: number, where: string, opts: GptqOptions): Float64Array {
  if (!(e instanceof Error && e.name === 'NotPositiveDefiniteError')) throw e;
  (opts.onWarning ?? console.warn)(
    `${where}: the damped Hessian is not positive definite (${e.message}); falling back to round-to-nearest for this layer. ` +
      'Increase percDamp (e.g. 0.1), use more calibration samples, or check for near-duplicate input channels.',
  );
  const Hinv = new Float64Array(cols * cols);
  for (let i = 0; i < cols; i++) Hinv[i * cols + i] = 1;
  return Hinv;
}

/**
 * The algorithm, as a generator that hands its two O(n³) parts (the Cholesky of H⁻¹ and each lazy
 * trailing update) to a driver, so the same code runs with synchronous TypeScript kernels or
 * asynchronous ORT ones.
 */
export function* gptqCore(
  wVals: Float32Array | Float64Array, rows: number, cols: number,
  hVals: Float32Array | Float64Array, opts: GptqOptions,
): Generator<CoreRequest, GptqResult, Float64Array | undefined> {
  const t0 = now();
  const p = gptqPrepare(wVals, rows, cols, hVals, opts);
  const { W, H, groupSize, sym, clip, staticGroups, blockSize, requestedBlock, maxq, G, scale, zero, order, deadColumns, damp } = p;
  const t1 = now();

  // 6. Hinv: upper U with UᵀU = H_d⁻¹. On failure, llm-compressor's fallback: Hinv = I (= RTN).
  let Hinv: Float64Array;
  let choleskyFallback = false;
  try {
    Hinv = (yield { kind: 'cholesky', H, n: cols }) as Float64Array;
  } catch (e) {
    Hinv = choleskyFallbackHinv(e, cols, p.where, opts);
    choleskyFallback = true;
  }
  const t2 = now();

  // 7. Lazy batches of blockSize columns.
  const Q = new Float32Array(rows * cols), codes = new Uint8Array(rows * cols), gIdx = new Int32Array(cols);
  let loss = 0, tLazy = 0;
  const W1 = new Float64Array(rows * blockSize), Err1 = new Float64Array(rows * blockSize), slots = new Int32Array(blockSize);
  let span = opts.lazySpan ?? blockSize;
  if (!(Number.isInteger(span) && span >= requestedBlock && span % requestedBlock === 0) && span !== blockSize) throw new RangeError(`lazySpan must be a multiple of blockSize (${requestedBlock}), got ${span}`);
  if (span > cols) span = blockSize;
  if (groupSize !== -1 && !staticGroups && span % groupSize !== 0) span = blockSize;
  const ErrS = span > blockSize ? new Float64Array(rows * span) : Err1;
  let s1 = 0; // start of the current span
  for (let i1 = 0; i1 < cols; i1 += blockSize) {
    const i2 = Math.min(i1 + blockSize, cols), count = i2 - i1;
    for (let r = 0; r < rows; r++) for (let i = 0; i < count; i++) W1[r * count + i] = W[r * cols + i1 + i];
    // Group params of this block. The global W does not change until the block's lazy update, so
    // computing them all here equals the reference's find_params at column k (including its quirk:
    // the params come from the global W, which lags the intra-block updates).
    for (let i = 0; i < count; i++) {
      const k = i1 + i, col = order[k];
      let slot = 0;
      if (groupSize !== -1) {
        if (staticGroups) slot = Math.floor(col / groupSize);
        else {
          slot = Math.floor(k / groupSize);
          if (k % groupSize === 0) findParams(W, rows, cols, k, k + groupSize, maxq, sym, scale, zero, G, slot, clip);
        }
      }
      gIdx[col] = slot;
      slots[i] = slot;
    }
    // Rows are independent given Hinv and the params, so walk row by row (the row of W1 stays in L1).
    // Columns go four at a time: each is quantized after the updates from the previous ones of its
    // quad, then the quad's four errors reach the rest of the block in one fused pass. Per element
    // the subtractions happen in the same order as one column at a time, so the result is identical.
    for (let r = 0; r < rows; r++) {
      const o = r * count;
      for (let i0 = 0; i0 < count; i0 += 4) {
        const m = Math.min(4, count - i0);
        for (let a = 0; a < m; a++) {
          const i = i0 + a, k = i1 + i, col = order[k], slot = slots[i];
          const s = scale[r * G + slot], z = zero[r * G + slot];
          const w = W1[o + i];
          const code = quantizeCode(w, s, z, maxq);
          const q = dequantizeCode(code, s, z);
          codes[r * cols + col] = code;
          Q[r * cols + col] = q;
          const d = Hinv[k * cols + k];
          const err = (w - q) / d; // err1 of the reference; Losses[r, k] = (w − q)²/d²/2 = err²/2
          loss += (err * err) / 2;
          Err1[o + i] = err;
          // W1[r, i+1 : i0+m] −= err · Hinv[k, …] (the rest of the quad)
          for (let j = i + 1, h = k * cols + i1; j < i0 + m; j++) W1[o + j] -= err * Hinv[h + j];
        }
        // W1[r, i0+m:] −= Σ_a err_a · Hinv[i1+i0+a, i1+i0+m : i2], in column order a = 0, 1, 2, 3.
        if (m === 4) {
          const e0 = Err1[o + i0], e1 = Err1[o + i0 + 1], e2 = Err1[o + i0 + 2], e3 = Err1[o + i0 + 3];
          const h0 = (i1 + i0) * cols + i1, h1 = h0 + cols, h2 = h1 + cols, h3 = h2 + cols;
          for (let j = i0 + 4; j < count; j++) W1[o + j] = W1[o + j] - e0 * Hinv[h0 + j] - e1 * Hinv[h1 + j] - e2 * Hinv[h2 + j] - e3 * Hinv[h3 + j];
        } // m < 4 only for the block's last columns: nothing follows them
      }
    }
    const tl = now();
    if (span === blockSize) {
      if (i2 < cols) yield { kind: 'lazy', W, rows, cols, err1: Err1, count, hinvUpper: Hinv, i1, i2, colEnd: cols };
    } else {
      const s2 = Math.min(s1 + span, cols), spanCount = s2 - s1;
      for (let r = 0; r < rows; r++) ErrS.set(Err1.subarray(r * count, (r + 1) * count), r * spanCount + (i1 - s1));
      if (i2 < s2) yield { kind: 'lazy', W, rows, cols, err1: Err1, count, hinvUpper: Hinv, i1, i2, colEnd: s2 };
      else {
        if (s2 < cols) yield { kind: 'lazy', W, rows, cols, err1: ErrS, count: spanCount, hinvUpper: Hinv, i1: s1, i2: s2, colEnd: cols };
        s1 = s2;
      }
    }
    tLazy += now() - tl;
  }
  const t3 = now();
  return {
    Q, codes, scale, zero, gIdx, groups: G,
    perm: order, invPerm: invertPermutation(order),
    loss, deadColumns, damp, choleskyFallback,
    seconds: { prep: t1 - t0, cholesky: t2 - t1, columnLoop: t3 - t2 - tLazy, lazyUpdate: tLazy, total: t3 - t0 },
  };
}
