// Round-to-nearest (RTN): the reference quantizer applied to each group of columns independently,
// with no Hessian. groupSize −1 is one group per row, i.e. `opt.py --nearest` of IST-DASLab/gptq.
// Bit-exact against the golden RTN cases (float32 semantics through quantizer.ts).

import { findParams, maxqFor, quantizeCode, dequantizeCode } from './quantizer';
import { assertFiniteArray } from './quantizer_checks';

export interface RtnOptions {
  /** 2, 3, 4 or 8 (any width 1..8 works). */
  bits: number;
  /** Columns per group; −1 = the whole row. */
  groupSize: number;
  sym: boolean;
  /** Group range fit (default 'minmax'). */
  clip?: 'minmax' | 'mse';
}

/** A quantized weight in the layout the golden files use (original column order). */
export interface QuantizedWeight {
  /** Dequantized weight, rows×cols, original column order. */
  Q: Float32Array;
  /** Integer codes in 0..maxq, rows×cols. */
  codes: Uint8Array;
  /** Per-row, per-group scale, rows×G. */
  scale: Float32Array;
  /** Per-row, per-group zero point (an integer stored as float, the reference convention), rows×G. */
  zero: Float32Array;
  /** Group (column of scale/zero) of each original column, length cols. */
  gIdx: Int32Array;
  /** Number of groups G. */
  groups: number;
}

/** G = 1 for groupSize −1, else ceil(cols / groupSize). */
export function groupCount(cols: number, groupSize: number): number {
  if (groupSize === -1) return 1;
  if (!Number.isInteger(groupSize) || groupSize < 1) throw new RangeError(`groupSize must be -1 or a positive integer, got ${groupSize}`);
  return Math.ceil(cols / groupSize);
}

export function rtnQuantize(wVals: Float32Array | Float64Array, rows: number, cols: number, opts: RtnOptions): QuantizedWeight {
  if (wVals.length !== rows * cols) throw new RangeError(`wVals has ${wVals.length} values, expected rows·cols = ${rows}·${cols}`);
  assertFiniteArray(wVals, 'W', 'rtnQuantize');
  const maxq = maxqFor(opts.bits);
  const g = opts.groupSize === -1 ? cols : opts.groupSize;
  const G = groupCount(cols, opts.groupSize);
  const scale = new Float32Array(rows * G), zero = new Float32Array(rows * G);
  const gIdx = new Int32Array(cols);
  for (let c = 0; c < cols; c++) gIdx[c] = opts.groupSize === -1 ? 0 : Math.floor(c / g);
  for (let gi = 0; gi < G; gi++) findParams(wVals, rows, cols, gi * g, gi * g + g, maxq, opts.sym, scale, zero, G, gi, opts.clip);
  const Q = new Float32Array(rows * cols), codes = new Uint8Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) {
      const k = r * G + gIdx[c], i = r * cols + c;
      const code = quantizeCode(wVals[i], scale[k], zero[k], maxq);
      codes[i] = code;
      Q[i] = dequantizeCode(code, scale[k], zero[k]);
    }
  }
  return { Q, codes, scale, zero, gIdx, groups: G };
}
