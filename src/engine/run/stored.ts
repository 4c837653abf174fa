// Every quantized layer of a run is kept as a `LoproStoredLayer` and written with the native LoPRo
// format's own tensors (io/lopro_format.ts) — in the block checkpoints and in the native output
// alike. RTN and GPTQ results are the special case rank 0, no rotation, identity permutation,
// α = 1, original column order (with their group index when act-order reordered the groups).
// Scales are FP16 in that format, so a baseline's Ŵ is rebuilt with FP16-rounded scales
// (relative change ≤ 2^-11 of a step): the weights the run continues with are exactly the
// weights it exports.

import type { LayerConfig } from '../../protocol/config';
import { decodeF16, encodeF16 } from '../quant/fp8';
import { dequantizeLoPRo, type LoproStoredLayer } from '../quant/lopro_dequant';
import type { QuantizedWeight } from '../quant/rtn';

export type StoredLayer = LoproStoredLayer;

/**
 * Ŵ from the stored parts. Unrotated rank-0 layers in original order (RTN/GPTQ) take a direct
 * float32 path: the same values as dequantizeLoPRo (scale·(code − zero) is exact in float64 for an
 * FP16 scale and small integers, then rounded once to float32) without its two float64 rows×cols
 * temporaries, which matters for data-free runs over very large matrices.
 */
export function dequantizeStored(s: StoredLayer): Float32Array {
  if (s.rank !== 0 || s.hadamardBlock !== 0 || s.method !== 'lopro' || !s.codes || !s.scaleBits || !s.zeros || !s.perm.every((p, k) => p === k)) return dequantizeLoPRo(s);
  const { rows, cols, groups: G } = s;
  const scale = decodeF16(s.scaleBits);
  const out = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++)
    for (let c = 0; c < cols; c++) {
      const k = r * G + (s.gIdx ? s.gIdx[c] : Math.floor(c / s.groupSize));
      out[r * cols + c] = scale[k] * (s.codes[r * cols + c] - s.zeros[k]);
    }
  return out;
}

const F16_ONE = 0x3c00;

/** An RTN/GPTQ result in the native layout (codes and groups in original column order). */
export function baselineAsStored(
  q: Pick<QuantizedWeight, 'codes' | 'scale' | 'zero' | 'gIdx' | 'groups'>,
  rows: number,
  cols: number,
  lc: LayerConfig,
  hasGroupIndex: boolean,
): StoredLayer {
  const g = lc.groupSize === -1 ? cols : Math.min(lc.groupSize, cols);
  const s: StoredLayer = {
    rows,
    cols,
    method: 'lopro',
    bits: lc.bits,
    groupSize: g,
    sym: lc.sym,
    perm: Int32Array.from({ length: cols }, (_, k) => k),
    alphaBits: new Uint16Array(cols).fill(F16_ONE),
    rank: 0,
    uCodes: new Uint8Array(0),
    vCodes: new Uint8Array(0),
    sigmaBits: new Uint16Array(0),
    uScale: Math.sqrt(rows),
    vScale: Math.sqrt(cols),
    rotation: 'none',
    salientBlock: cols,
    hadamardBlock: 0,
    codes: q.codes,
    scaleBits: encodeF16(q.scale),
    zeros: Uint8Array.from(q.zero),
    groups: q.groups,
  };
  if (hasGroupIndex) s.gIdx = q.gIdx;
  return s;
}
