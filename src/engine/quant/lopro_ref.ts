// LoPRo for one layer on one thread in float64 (quant/lopro.ts's stages without a backend): the twin that
// both backends' LoPRo is compared with — R1SVD, importance, gathers and block FWHTs of r1svd.ts,
// permute.ts and rotation.ts, stage C by gptq_ref.ts / gptvq_ref.ts, Ŵ by lopro_dequant.ts.

import { AUTO_RANK_MAX, type LayerConfig } from '../../protocol/config';
import { ErrorCode } from '../../protocol/messages';
import { ProtocolError } from '../../protocol/rpc';
import { gptqQuantize_ref } from './gptq_ref';
import { gptvqQuantize_ref } from './gptvq_ref';
import { columnScaleAlpha, leadingFactors, r1svd, scaleColumns, lowRankWeight, type LowRankFactors } from './r1svd';
import { chooseRank, scanRanks } from './auto_rank';
import { argsortDescending, columnImportance, gatherColumns, permuteSymmetric } from './permute';
import { planRotation, rotateColumns, rotateHessian, type RotationPlan } from './rotation';
import { dequantizeLoPRo, loproStoredLayer, type LoproStoredLayer } from './lopro_dequant';
import { assertFiniteArray } from './quantizer_checks';

export interface LoproRefResult {
  reconstructed: Float32Array;
  stored: LoproStoredLayer;
  factors: LowRankFactors | null;
  importance: Float64Array;
  plan: RotationPlan;
  /** R (original column order) and R′ (permuted + rotated), rows×cols. */
  R: Float64Array;
  Rt: Float64Array;
  notes: string[];
}

/** W (rows×cols), H (cols×cols; null = identity), actStats = mean|x| per column (null: α = 1). */
export function quantizeLayerLoPRo_ref(
  W: Float32Array | Float64Array,
  rows: number,
  cols: number,
  H: Float32Array | Float64Array | null,
  actStats: ArrayLike<number> | null,
  cfg: LayerConfig,
  seed: number,
  opts: { name?: string; kmeansIters?: number } = {},
): LoproRefResult {
  const name = opts.name ?? 'layer';
  if (cfg.method !== 'lopro' && cfg.method !== 'lopro_v') throw new ProtocolError(ErrorCode.BadConfig, `quantizeLayerLoPRo_ref got method "${cfg.method}"`, name);
  if (W.length !== rows * cols) throw new ProtocolError(ErrorCode.ShapeMismatch, `W has ${W.length} values, expected ${rows}×${cols}`, name);
  if (H && H.length !== cols * cols) throw new ProtocolError(ErrorCode.ShapeMismatch, `H has ${H.length} values, expected ${cols}×${cols}`, name);
  assertFiniteArray(W, 'W', name);
  const Hm = H ? Float64Array.from(H) : identity(cols);
  assertFiniteArray(Hm, 'H', name);
  const notes: string[] = [];

  // Stage A
  const { alpha, alphaBits } = columnScaleAlpha(actStats, cols, cfg.beta, cfg.alphaNorm);
  if (!actStats) notes.push('data-free: α = 1');
  let factors: LowRankFactors | null = null;
  let Wr: Float64Array | null = null;
  if (cfg.refineRounds > 0) throw new ProtocolError(ErrorCode.BadConfig, 'quantizeLayerLoPRo_ref has no alternating refinement', name, 'refineRounds 0');
  if (cfg.rank !== 0) {
    factors = r1svd(scaleColumns(W, rows, cols, alpha), rows, cols, { rank: cfg.rank === -1 ? AUTO_RANK_MAX : cfg.rank, powerIters: cfg.powerIters, seed });
    if (cfg.rank === -1) {
      const scan = scanRanks(W, factors, alpha);
      const k = chooseRank(scan.maxAbs, rows, cols);
      factors = k > 0 ? { ...leadingFactors(factors, k), energy: scan.energy[k] } : null;
    }
    if (factors) Wr = lowRankWeight(factors.U, factors.sigma, factors.V, rows, cols, factors.rank, alpha);
  }
  const R = new Float64Array(rows * cols);
  for (let i = 0; i < R.length; i++) R[i] = W[i] - (Wr ? Wr[i] : 0);

  // Stage B
  const hDiag = new Float64Array(cols);
  for (let j = 0; j < cols; j++) hDiag[j] = Hm[j * cols + j];
  const importance = columnImportance(hDiag, R, rows, cols, cfg.columnScore);
  const perm = argsortDescending(importance);
  const plan = planRotation(cols, cfg.rotation, cfg.salientBlock, cfg.hadamardBlock);
  if (plan.note) notes.push(plan.note);
  const Rt = rotateColumns(gatherColumns(R, rows, cols, perm), rows, plan);
  const Ht = rotateHessian(permuteSymmetric(Hm, cols, perm), plan);

  // Stage C
  const g = cfg.groupSize === -1 ? cols : Math.min(cfg.groupSize, cols);
  let stored: LoproStoredLayer;
  if (cfg.method === 'lopro') {
    const q = gptqQuantize_ref(Rt, rows, cols, Ht, {
      bits: cfg.bits,
      groupSize: cfg.groupSize === -1 ? -1 : g,
      sym: cfg.sym,
      clip: cfg.clip,
      percDamp: cfg.percDamp,
      blockSize: cfg.blockSize,
      actOrder: cfg.actOrder,
      staticGroups: cfg.staticGroups,
      name,
      onWarning: () => {},
    });
    stored = loproStoredLayer({ rows, cols, cfg, groupSize: g, perm, alphaBits, factors, plan, q });
  } else {
    const vb = cfg.vqBits || cfg.bits;
    const q = gptvqQuantize_ref(Rt, rows, cols, Ht, {
      vqDim: cfg.vqDim,
      bits: vb,
      groupSize: cfg.groupSize === -1 ? -1 : g,
      percDamp: cfg.percDamp,
      blockSize: cfg.blockSize,
      kmeansIters: opts.kmeansIters,
      seed: seed + 7919,
      name,
    });
    stored = loproStoredLayer({
      rows,
      cols,
      cfg,
      groupSize: g,
      perm,
      alphaBits,
      factors,
      plan,
      vq: { bits: vb, vqDim: cfg.vqDim, codes: q.codes, codebookBits: q.codebookBits, groups: q.groups },
    });
  }
  return { reconstructed: dequantizeLoPRo(stored), stored, factors, importance, plan, R, Rt, notes };
}

function identity(n: number): Float64Array {
  const I = new Float64Array(n * n);
  for (let i = 0; i < n; i++) I[i * n + i] = 1;
  return I;
}
