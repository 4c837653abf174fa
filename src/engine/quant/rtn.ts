// Round-to-nearest (RTN) on a backend: each group of columns gets the reference quantizer's scale and zero
// (quantizer.ts findParams: min-max, or the mse=True range search) and every weight its nearest code, no
// Hessian. groupSize −1 is one group per row (`opt.py --nearest` of IST-DASLab/gptq). rtn_ref.ts is the
// one-thread twin, bit-exact against the golden RTN cases.

import type { ClipMode } from '../../protocol/config';
import type { LayerSession, Mat } from './backend';
import { maxqFor } from './quantizer';

export interface RtnOptions {
  /** 2, 3, 4 or 8 (any width 1..8 works). */
  bits: number;
  /** Columns per group; −1 = the whole row. */
  groupSize: number;
  sym: boolean;
  /** Group range fit (default 'minmax'). */
  clip?: ClipMode;
}

/** A quantized weight in the layout the golden files use (original column order). */
export interface QuantizedWeight {
  /** Dequantized weight, rows×cols, original column order (empty where a caller rebuilds Ŵ from the stored parts). */
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

/** RTN of the rows×cols W of session `s` (Q left empty: Ŵ comes from the stored parts). */
export async function rtn(s: LayerSession, W: Mat, opts: RtnOptions): Promise<QuantizedWeight> {
  const { cols } = W;
  const maxq = maxqFor(opts.bits);
  const g = opts.groupSize === -1 ? cols : opts.groupSize;
  groupCount(cols, opts.groupSize);
  const params = await s.groupParams(W, g, { maxq, sym: opts.sym, clip: opts.clip ?? 'minmax' });
  const codes = await s.quantizeRtn(W, g, params, maxq);
  const gIdx = Int32Array.from({ length: cols }, (_, c) => Math.floor(c / g));
  return { Q: new Float32Array(0), codes, scale: params.scale, zero: params.zero, gIdx, groups: params.groups };
}
