// LoPRo (`lopro`) for one layer with a pluggable, asynchronous GPTQ engine for stage C: the same
// stages and the same stored parts as quant/lopro.ts (whose GPTQ call is synchronous and fixed), so
// the benches can put stage C on workers or a device. With the synchronous TypeScript GPTQ this gives
// exactly lopro.ts's stored codes (tested); it builds no report and no layer details (bench use).
// Per-stage seconds: lowrank (α + R1SVD mat-vecs), permute, rotate (FWHT of R′ and H′ = QᵀH_pQ),
// gptq (stage C, with its own breakdown), reconstruct.

import type { LayerConfig } from '../../protocol/config';
import type { GptqOptions, GptqResult } from './gptq';
import { columnScaleAlpha, r1svd, scaleColumns, lowRankWeight, type LowRankFactors } from './r1svd';
import { argsortDescending, columnImportance, gatherColumns, permuteSymmetric } from './permute';
import { planRotation, rotateColumns, rotateHessian } from './rotation';
import { dequantizeLoPRo, loproStoredLayer, type LoproStoredLayer } from './lopro_dequant';
import { stageClock } from './report';

/** Any GPTQ driver: gptqQuantize, gptqQuantizeParallel, gptqQuantizeDevice... */
export type GptqEngine = (W: Float64Array, rows: number, cols: number, H: Float64Array, opts: GptqOptions) => Promise<GptqResult>;

export interface FastLoproResult {
  stored: LoproStoredLayer;
  reconstructed: Float32Array;
  gptq: GptqResult;
  seconds: Record<string, number>;
}


export async function quantizeLayerLoPRoWith(
  engine: GptqEngine,
  W: Float32Array, rows: number, cols: number, H: Float64Array, actStats: ArrayLike<number> | null,
  cfg: LayerConfig, seed: number, name = 'layer',
): Promise<FastLoproResult> {
  if (cfg.method !== 'lopro') throw new Error(`quantizeLayerLoPRoWith: method ${cfg.method} (only lopro; lopro_v uses gptvq.ts)`);
  const { seconds, lap } = stageClock();
  const { alpha, alphaBits } = columnScaleAlpha(actStats, cols, cfg.beta);
  let factors: LowRankFactors | null = null;
  let Wr: Float64Array | null = null;
  if (cfg.rank > 0) {
    factors = r1svd(scaleColumns(W, rows, cols, alpha), rows, cols, { rank: cfg.rank, powerIters: cfg.powerIters, seed });
    Wr = lowRankWeight(factors.U, factors.sigma, factors.V, rows, cols, factors.rank, alpha);
  }
  const R = new Float64Array(rows * cols);
  for (let i = 0; i < R.length; i++) R[i] = W[i] - (Wr ? Wr[i] : 0);
  lap('lowrank');
  const hDiag = new Float64Array(cols);
  for (let j = 0; j < cols; j++) hDiag[j] = H[j * cols + j];
  const perm = argsortDescending(columnImportance(hDiag, R, rows, cols));
  const Rp = gatherColumns(R, rows, cols, perm);
  const Hp = permuteSymmetric(H, cols, perm);
  lap('permute');
  const plan = planRotation(cols, cfg.rotation, cfg.salientBlock, cfg.hadamardBlock);
  const Rt = rotateColumns(Rp, rows, plan);
  const Ht = rotateHessian(Hp, plan);
  lap('rotate');
  const g = cfg.groupSize === -1 ? cols : Math.min(cfg.groupSize, cols);
  const q = await engine(Rt, rows, cols, Ht, {
    bits: cfg.bits, groupSize: cfg.groupSize === -1 ? -1 : g, sym: cfg.sym, clip: cfg.clip, percDamp: cfg.percDamp, blockSize: cfg.blockSize,
    actOrder: cfg.actOrder, staticGroups: cfg.staticGroups, name, onWarning: () => {},
    dequantized: false, // Ŵ comes from the stored codes below
  });
  lap('gptq');
  const stored = loproStoredLayer({ rows, cols, cfg, groupSize: g, perm, alphaBits, factors, plan, q });
  const reconstructed = dequantizeLoPRo(stored);
  lap('reconstruct');
  return { stored, reconstructed, gptq: q, seconds };
}
