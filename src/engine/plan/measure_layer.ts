// One layer's candidates, each quantized and scored by its layer-output error on the calibration tokens.
// The loss is a sum over rows and GPTQ quantizes rows independently, so each candidate is quantized on every
// step-th row only and its loss scaled up: ~MEASURE_ROWS rows per candidate instead of all of them. Rank is the
// exception (the low-rank part couples the rows): the layer is factored once, on all rows, at the largest rank,
// and each rank's residual W − W_r is what the row sample quantizes (rank 0 then: stages B and C only).

import { bitsPerWeight, type LayerConfig, type Method } from '../../protocol/config';
import type { Candidate, LayerMeasurement } from '../../protocol/plan';
import type { Backend } from '../quant/backend';
import { columnScaleAlpha, leadingFactors } from '../quant/r1svd';
import { layerSeed, quantizeLayer, type LayerInput } from '../run/quantize_layer';

/** Rows each candidate is quantized on (about; every ⌊rows/MEASURE_ROWS⌋-th row). */
export const MEASURE_ROWS = 128;
/** Code widths a plan chooses from. */
export const PLAN_BITS = [2, 3, 4] as const;
/** Low-rank ranks a plan chooses from (LoPRo methods; clamped to the layer's shape). */
export const PLAN_RANKS = [0, 4, 16] as const;

/**
 * The candidate grid of a layer whose own config is `lc`: its method at every PLAN_BITS width and, for LoPRo
 * methods, every PLAN_RANKS rank — plus plain GPTQ, whose lack of α and permutation (32/m bits per weight)
 * can be the better buy on narrow layers. Every other key (group, clip, b_I, b_H, …) stays the layer's.
 */
export function candidateConfigs(lc: LayerConfig, rows: number, cols: number): Candidate['config'][] {
  const lopro = lc.method === 'lopro' || lc.method === 'lopro_v';
  const methods: Method[] = lopro ? ['gptq', lc.method] : [lc.method];
  const out: Candidate['config'][] = [];
  for (const method of methods) {
    const ranks = method === 'lopro' || method === 'lopro_v' ? [...new Set(PLAN_RANKS.map((r) => Math.min(r, rows, cols)))] : [0];
    for (const rank of ranks) for (const bits of PLAN_BITS) out.push({ method, bits, rank });
  }
  return out;
}

export async function measureLayer(backend: Backend, x: LayerInput, lc: LayerConfig, seed: number): Promise<LayerMeasurement> {
  const { rows, cols } = x;
  const step = Math.max(1, Math.floor(rows / MEASURE_ROWS));
  const configs = candidateConfigs(lc, rows, cols);
  const maxRank = Math.max(0, ...configs.map((c) => (c.method === 'lopro' || c.method === 'lopro_v' ? c.rank : 0)));
  const residuals = new Map<number, Float32Array>(); // rank → rows step-sampled of W − W_r (rank 0: of W)
  const s = backend.session();
  try {
    const W = await s.upload(x.W, rows, cols, 'W', x.name);
    residuals.set(0, Float32Array.from(await s.sampleRows(W, step)));
    if (maxRank > 0) {
      const { alpha } = columnScaleAlpha(x.absMean ?? null, cols, lc.beta);
      const A = await s.scaleColumns(W, alpha);
      const f = await s.r1svd(A, { rank: maxRank, powerIters: lc.powerIters, seed: layerSeed(seed, x.name) });
      s.free(A);
      for (const c of configs) {
        if (c.rank === 0 || residuals.has(c.rank)) continue;
        const R = await s.subtractLowRank(W, leadingFactors(f, c.rank), alpha);
        residuals.set(c.rank, Float32Array.from(await s.sampleRows(R, step)));
        s.free(R);
      }
    }
  } finally {
    s.close();
  }
  const sampled = Math.ceil(rows / step);
  const candidates: Candidate[] = [];
  for (const c of configs) {
    // The residual of rank r quantized as a rank-0 layer: stages B and C exactly as the full layer runs them.
    const out = await quantizeLayer(backend, { ...x, rows: sampled, W: residuals.get(c.rank)! }, { ...lc, ...c, rank: 0 }, { seed });
    candidates.push({ config: c, bpw: bitsPerWeight({ ...lc, ...c }, rows, cols), loss: (out.report.proxyLoss * rows) / sampled });
  }
  return { name: x.name, block: x.block, module: x.module, rows, cols, sampledRows: sampled, candidates };
}
