// The GPTQ Hessian H = (2/N)·Σ_k X_kᵀX_k of a linear layer's input, accumulated as the reference
// `GPTQ.add_batch` does (IST-DASLab/gptq gptq.py; golden README §4):
//
//     H *= nsamples / (nsamples + tmp);  nsamples += tmp;  H += (2/nsamples) · XᵀX
//
// as a running average. N (`nsamples`) counts calibration *sequences* (the leading dim of each
// call; a 2-D call is one sample), not tokens. We accumulate in float64: the reference's float32 H
// is within 4.3e-7·max|H| of the exact value, ours ~2e-15 (README §7), and GPTQ run from either
// gives identical codes on the golden cases.
//
// Only the upper triangle (j ≥ i) is accumulated; `finish` mirrors it.

import { assertFiniteArray } from './quantizer_checks';

/** A full XᵀX (cols×cols, row-major) of a tokens×cols block; lets the pipeline plug in an ORT kernel. */
export type GramFn = (xVals: Float32Array, tokens: number, cols: number) => Float32Array | Float64Array;

/**
 * One `add_batch` step on the upper triangle of `hUpper` (cols×cols, float64). `samples` is the
 * number of sequences in this call (1 for a 2-D [tokens, cols] call). Returns the new nsamples.
 */
export function accumulateHessian(hUpper: Float64Array, nsamples: number, xVals: Float32Array, tokens: number, cols: number, samples: number, gram?: GramFn): number {
  if (xVals.length !== tokens * cols) throw new RangeError(`X has ${xVals.length} values, expected tokens·cols = ${tokens}·${cols}`);
  if (hUpper.length !== cols * cols) throw new RangeError(`H has ${hUpper.length} values, expected cols² = ${cols * cols}`);
  if (!(Number.isInteger(samples) && samples > 0)) throw new RangeError(`samples must be a positive integer, got ${samples}`);
  const n = nsamples + samples;
  const decay = nsamples / n,
    c = 2 / n;
  if (decay !== 1) for (let i = 0; i < cols; i++) for (let j = i, o = i * cols; j < cols; j++) hUpper[o + j] *= decay;
  if (gram) {
    const G = gram(xVals, tokens, cols);
    for (let i = 0; i < cols; i++) for (let j = i, o = i * cols; j < cols; j++) hUpper[o + j] += c * G[o + j];
  } else {
    addGramUpper(hUpper, xVals, tokens, cols, c);
  }
  return n;
}

/**
 * hUpper[i, j≥i] += c · Σ_t X[t,i]·X[t,j]. Four tokens per pass over H so H (cols² doubles, the
 * memory-bound part) is read and written a quarter as often as one rank-1 update per token.
 */
export function addGramUpper(hUpper: Float64Array, xVals: Float32Array, tokens: number, cols: number, c: number): void {
  let t = 0;
  for (; t + 4 <= tokens; t += 4) {
    const o0 = t * cols,
      o1 = o0 + cols,
      o2 = o1 + cols,
      o3 = o2 + cols;
    for (let i = 0; i < cols; i++) {
      const a0 = c * xVals[o0 + i],
        a1 = c * xVals[o1 + i],
        a2 = c * xVals[o2 + i],
        a3 = c * xVals[o3 + i];
      if (a0 === 0 && a1 === 0 && a2 === 0 && a3 === 0) continue; // dead channels stay exactly 0
      const h = i * cols;
      for (let j = i; j < cols; j++) hUpper[h + j] += a0 * xVals[o0 + j] + a1 * xVals[o1 + j] + a2 * xVals[o2 + j] + a3 * xVals[o3 + j];
    }
  }
  for (; t < tokens; t++) {
    const o = t * cols;
    for (let i = 0; i < cols; i++) {
      const a = c * xVals[o + i];
      if (a === 0) continue;
      const h = i * cols;
      for (let j = i; j < cols; j++) hUpper[h + j] += a * xVals[o + j];
    }
  }
}

/** Copies the upper triangle onto the lower one, in place. */
export function mirrorUpper(hVals: Float64Array, cols: number): Float64Array {
  for (let i = 0; i < cols; i++) for (let j = i + 1; j < cols; j++) hVals[j * cols + i] = hVals[i * cols + j];
  return hVals;
}

/**
 * Streaming Hessian of one linear input: `add` each calibration batch as it is captured,
 * `finish` once. Usage: `const acc = new HessianAccumulator(cols); acc.add(x, tokens, 1); … H = acc.finish();`
 */
export class HessianAccumulator {
  private readonly hUpper: Float64Array;
  private samples = 0;
  private done = false;

  constructor(
    readonly cols: number,
    private readonly opts: { gram?: GramFn; name?: string } = {},
  ) {
    if (!(Number.isInteger(cols) && cols > 0)) throw new RangeError(`cols must be a positive integer, got ${cols}`);
    this.hUpper = new Float64Array(cols * cols);
  }

  /** Number of sequences seen so far (the reference's `nsamples`). */
  get nsamples(): number {
    return this.samples;
  }

  /** X is tokens×cols row-major; `samples` = sequences in it (1 per [seqlen, cols] sequence). */
  add(xVals: Float32Array, tokens: number, samples = 1): void {
    if (this.done) throw new Error('HessianAccumulator.add after finish');
    assertFiniteArray(xVals, 'X', this.opts.name ?? 'HessianAccumulator.add');
    this.samples = accumulateHessian(this.hUpper, this.samples, xVals, tokens, this.cols, samples, this.opts.gram);
  }

  /** The symmetric H (float64, cols×cols). All zeros if nothing was added. */
  finish(): Float64Array {
    this.done = true;
    return mirrorUpper(this.hUpper, this.cols);
  }
}
