// Round-to-nearest (RTN) on one thread: the reference quantizer applied to each group of columns
// independently, with no Hessian; groupSize −1 is one group per row, i.e. `opt.py --nearest` of
// IST-DASLab/gptq. Bit-exact against the golden RTN cases (float32 semantics through quantizer.ts): the twin
// both backends' RTN (quant/rtn.ts) is compared with.

import { findParams, maxqFor, quantizeCode, dequantizeCode } from './quantizer';
import { assertFiniteArray } from './quantizer_checks';
import { groupCount, type QuantizedWeight } from './rtn';

export interface RtnOptions {
  /** 2, 3, 4 or 8 (any width 1..8 works). */
  bits: number;
  /** Columns per group; −1 = the whole row. */
  groupSize: number;
  sym: boolean;
  /** Group range fit (default 'minmax'). */
  clip?: 'minmax' | 'mse';
}

export function rtnQuantize_ref(wVals: Float32Array | Float64Array, rows: number, cols: number, opts: RtnOptions): QuantizedWeight {
  if (wVals.length !== rows * cols) throw new RangeError(`wVals has ${wVals.length} values, expected rows·cols = ${rows}·${cols}`);
  assertFiniteArray(wVals, 'W', 'rtn');
  const maxq = maxqFor(opts.bits);
  const g = opts.groupSize === -1 ? cols : opts.groupSize;
  const G = groupCount(cols, opts.groupSize);
  const scale = new Float32Array(rows * G),
    zero = new Float32Array(rows * G);
  const gIdx = new Int32Array(cols);
  for (let c = 0; c < cols; c++) gIdx[c] = opts.groupSize === -1 ? 0 : Math.floor(c / g);
  for (let gi = 0; gi < G; gi++) findParams(wVals, rows, cols, gi * g, gi * g + g, maxq, opts.sym, scale, zero, G, gi, opts.clip);
  const Q = new Float32Array(rows * cols),
    codes = new Uint8Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) {
      const k = r * G + gIdx[c],
        i = r * cols + c;
      const code = quantizeCode(wVals[i], scale[k], zero[k], maxq);
      codes[i] = code;
      Q[i] = dequantizeCode(code, scale[k], zero[k]);
    }
  }
  return { Q, codes, scale, zero, gIdx, groups: G };
}
