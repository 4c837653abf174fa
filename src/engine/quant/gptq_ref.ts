// GPTQ on one thread in float64 (Frantar et al., arXiv 2210.17323, Algorithm 1), written to behave exactly
// like the original `GPTQ.fasterquant` of IST-DASLab/gptq (commit 2d65066): the twin that the golden tests
// pin to the original's outputs and that both backends' GPTQ (quant/gptq.ts on backend/cpu and
// backend/gpu) is compared with. Steps numbered as ../../../../shared/golden/README.md §5.
//
// Precision: W, H and Hinv are float64 (README §7: f64 from the stored H gives 0 differing codes on all 24
// golden GPTQ cases; we match 23 of 24 exactly, and the 512×1024 case differs in 2 of 512 rows that start
// at a sym rounding tie); the quantizer itself has float32 semantics (quantizer.ts), so Q = scale·(code −
// zero) holds bit-exactly in float32.

import { ProtocolError } from '../../protocol/rpc';
import { ErrorCode } from '../../protocol/messages';
import { argsortDiagDesc, invertPermutation, isPermutation, permuteColumns, permuteSymmetric } from './gptq_kernels';
import { choleskyInverseUpper } from './gptq_linalg';
import { gptqColumnLoop } from './gptq_loop';
import { findParams, maxqFor } from './quantizer';
import { assertFiniteArray } from './quantizer_checks';
import { groupCount, type QuantizedWeight } from './rtn';
import { choleskyFallbackNote, type GptqOptions, type GptqResult } from './gptq';

export interface GptqRefResult extends QuantizedWeight, Omit<GptqResult, 'seconds'> {}

export function gptqQuantize_ref(wVals: Float32Array | Float64Array, rows: number, cols: number, hVals: Float32Array | Float64Array, opts: GptqOptions): GptqRefResult {
  const where = opts.name ?? 'gptq';
  if (wVals.length !== rows * cols) throw new ProtocolError(ErrorCode.ShapeMismatch, `W has ${wVals.length} values, expected ${rows}×${cols}`, where);
  if (hVals.length !== cols * cols) throw new ProtocolError(ErrorCode.ShapeMismatch, `H has ${hVals.length} values, expected ${cols}×${cols}`, where);
  assertFiniteArray(wVals, 'W', where);
  assertFiniteArray(hVals, 'H', where);
  const groupSize = opts.groupSize ?? -1,
    sym = opts.sym ?? false,
    percDamp = opts.percDamp ?? 0.01,
    clip = opts.clip ?? 'minmax';
  const actOrder = opts.actOrder ?? false;
  const staticGroups = (opts.staticGroups ?? false) && groupSize !== -1;
  const blockSize = opts.blockSize ?? 128;
  if (!(Number.isInteger(blockSize) && blockSize > 0)) throw new RangeError(`blockSize must be a positive integer, got ${blockSize}`);
  if (actOrder && opts.perm) throw new ProtocolError(ErrorCode.BadConfig, 'actOrder and a caller-provided perm are exclusive', where, 'pass one of them');
  const maxq = maxqFor(opts.bits);
  const G = groupCount(cols, groupSize);
  const scale = new Float32Array(rows * G),
    zero = new Float32Array(rows * G);
  let W = Float64Array.from(wVals);
  let H = Float64Array.from(hVals);

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

  // 6. Hinv: upper U with UᵀU = H_d⁻¹. On failure, llm-compressor's fallback: Hinv = I (= RTN).
  let Hinv: Float64Array;
  let choleskyFallback = false;
  try {
    Hinv = choleskyInverseUpper(H, cols);
  } catch (e) {
    if (!(e instanceof Error && e.name === 'NotPositiveDefiniteError')) throw e;
    (opts.onWarning ?? console.warn)(choleskyFallbackNote(where, e));
    Hinv = new Float64Array(cols * cols);
    for (let i = 0; i < cols; i++) Hinv[i * cols + i] = 1;
    choleskyFallback = true;
  }

  // 7. Lazy batches of blockSize columns.
  const slot = new Int32Array(cols),
    gIdx = new Int32Array(cols);
  for (let k = 0; k < cols; k++) {
    slot[k] = groupSize === -1 ? 0 : staticGroups ? Math.floor(order[k] / groupSize) : Math.floor(k / groupSize);
    gIdx[order[k]] = slot[k];
  }
  const Q = new Float32Array(rows * cols),
    codes = new Uint8Array(rows * cols);
  const loss = gptqColumnLoop(
    W,
    rows,
    cols,
    Hinv,
    { blockSize, maxq, sym, clip, groupSize, dynamic: groupSize !== -1 && !staticGroups, groups: G, slot, order },
    { codes, scale, zero, Q },
  );
  return { Q, codes, scale, zero, gIdx, groups: G, perm: order, invPerm: invertPermutation(order), loss, deadColumns, damp, choleskyFallback };
}
