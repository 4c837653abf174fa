// Data-free RTN over a matrix too large to hold comfortably: RTN's groups live inside one row, so
// the matrix is read, quantized and measured in row slices (readRowsFloat32) on the run's backend and only
// the 1-byte codes of the whole matrix are kept. Peak memory ≈ codes + one slice, instead of ~5 float32
// copies of the matrix. The codes, scales and zeros are exactly those of a whole-matrix RTN on the same
// backend, so the stored layer is the same as quantize_layer.ts would give.

import { bitsPerWeight, type LayerConfig } from '../../protocol/config';
import type { LayerReport } from '../../protocol/messages';
import type { Backend } from '../quant/backend';
import { decodeF16 } from '../quant/fp8';
import { rtn } from '../quant/rtn';
import { baselineAsStored, type StoredLayer } from './stored';

/** Rows per slice: about `sliceValues` weights. */
export function rowsPerSlice(cols: number, sliceValues = 1 << 22): number {
  return Math.max(1, Math.floor(sliceValues / cols));
}

export async function rtnByRows(
  backend: Backend,
  readRows: (r0: number, n: number) => Float32Array,
  name: string,
  block: number,
  module: string,
  rows: number,
  cols: number,
  lc: LayerConfig,
  sliceValues?: number,
): Promise<{ stored: StoredLayer; report: LayerReport }> {
  const t0 = performance.now();
  const step = rowsPerSlice(cols, sliceValues);
  const codes = new Uint8Array(rows * cols);
  let scale: Float32Array | undefined,
    zero: Float32Array | undefined,
    gIdx: Int32Array | undefined,
    groups = 0;
  let loss = 0,
    energy = 0;
  for (let r0 = 0; r0 < rows; r0 += step) {
    const n = Math.min(step, rows - r0);
    const W = readRows(r0, n);
    const s = backend.session();
    let q: Awaited<ReturnType<typeof rtn>>;
    try {
      q = await rtn(s, await s.upload(W, n, cols, 'W', name), { bits: lc.bits, groupSize: lc.groupSize, sym: lc.sym, clip: lc.clip });
    } finally {
      s.close();
    }
    if (!scale) {
      groups = q.groups;
      scale = new Float32Array(rows * groups);
      zero = new Float32Array(rows * groups);
      gIdx = q.gIdx;
    }
    codes.set(q.codes, r0 * cols);
    scale.set(q.scale, r0 * groups);
    zero!.set(q.zero, r0 * groups);
    // ‖W − Ŵ‖² with Ŵ rebuilt from the FP16-rounded scales, as the stored layer dequantizes.
    const s16 = decodeF16(baselineAsStored(q, n, cols, lc, false).scaleBits!);
    for (let r = 0; r < n; r++)
      for (let c = 0; c < cols; c++) {
        const k = r * groups + gIdx![c],
          i = r * cols + c;
        const w = W[i],
          d = w - Math.fround(s16[k] * (q.codes[i] - q.zero[k]));
        loss += d * d;
        energy += w * w;
      }
  }
  const stored = baselineAsStored({ codes, scale: scale!, zero: zero!, gIdx: gIdx!, groups }, rows, cols, lc, false);
  const seconds = (performance.now() - t0) / 1000;
  const report: LayerReport = {
    name,
    block,
    module,
    rows,
    cols,
    config: lc,
    bpw: bitsPerWeight(lc, rows, cols),
    proxyLoss: loss,
    relProxyLoss: energy > 0 ? loss / energy : 0,
    notes: [`data-free RTN in slices of ${step} rows`],
    seconds: { quantize: seconds, total: seconds },
  };
  return { stored, report };
}
