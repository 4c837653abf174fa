// LoPRo for one linear layer (spec ../../../../shared/lopro-spec.md §1), one driver for both backends:
//   stage A — α from the activations, A = W·diag(α), its rank-r part by R1SVD, R = W − W_r;
//   stage B — the importance permutation of R's columns and the partial block rotation Q:
//             R′ = R[:, perm]·Q, H′ = Q·H[perm][:, perm]·Q;
//   stage C — GPTQ (`lopro`) or GPTVQ (`lopro_v`) of R′ with H′;
// then the stored parts and Ŵ rebuilt from them alone (what a loaded checkpoint computes). The arithmetic
// is the session's (backend/backend.ts); lopro_ref.ts is the float64 twin.

import type { LayerConfig } from '../../protocol/config';
import { ErrorCode } from '../../protocol/messages';
import { ProtocolError } from '../../protocol/rpc';
import type { LayerSession, Mat } from './backend';
import { gptq, type GptqResult, type Prepared } from './gptq';
import { gptvq } from './gptvq';
import { columnScaleAlpha, type LowRankFactors } from './r1svd';
import { argsortDescending, importanceFromAbsSums } from './permute';
import { planRotation, type RotationPlan } from './rotation';
import { loproStoredLayer, type LoproStoredLayer } from './lopro_dequant';
import { stageClock } from './report';

/**
 * Largest matrix (values) the layer-view histograms and error tile read whole; larger ones are row-sampled
 * (64 histogram bins and ≤ 256 tile cells need far fewer samples than a 45 M-value 7B layer has).
 */
export const DETAIL_MAX_VALUES = 1 << 20;

/** Every step-th row goes into the layer view's histograms and error tile. */
export function detailRowStep(rows: number, cols: number): number {
  return Math.max(1, Math.ceil((rows * cols) / DETAIL_MAX_VALUES));
}

export interface LoproLayerResult {
  stored: LoproStoredLayer;
  /** Ŵ in the original space, rebuilt from `stored` only (a matrix of the session). */
  wHat: Mat;
  factors: LowRankFactors | null;
  /** Column importance in the original order (spec §1.6). */
  importance: Float64Array;
  plan: RotationPlan;
  /** Rows 0, step, 2·step… of R (original column order) and of R′ (permuted + rotated): the layer view's. */
  sampled: { step: number; R: ArrayLike<number>; Rt: ArrayLike<number> };
  /** Stage C's bookkeeping (loss, damping, dead columns, the Cholesky fallback, its seconds). */
  stageC: Pick<GptqResult, 'loss' | 'deadColumns' | 'damp' | 'choleskyFallback'> & { seconds: Record<string, number> };
  notes: string[];
  seconds: Record<string, number>;
}

/**
 * Quantizes W (rows×cols, y = W·x) with its input Hessian H (cols×cols; the identity when data-free), both
 * matrices of `s` (left unchanged). `actStats` = mean_t |x_tj| per input column (null: data-free, α = 1).
 */
export async function lopro(s: LayerSession, W: Mat, H: Mat, actStats: ArrayLike<number> | null, cfg: LayerConfig, seed: number, name = 'layer'): Promise<LoproLayerResult> {
  if (cfg.method !== 'lopro' && cfg.method !== 'lopro_v')
    throw new ProtocolError(ErrorCode.BadConfig, `lopro() got method "${cfg.method}"`, name, 'rtn and gptq have drivers of their own');
  const { rows, cols } = W;
  const { seconds, lap } = stageClock();
  const notes: string[] = [];
  if (!actStats) notes.push('data-free: α = 1');
  const step = detailRowStep(rows, cols);

  // ── Stage A: α, A = W·diag(α), R1SVD, R = W − W_r (spec §1.1–1.4) ──
  const { alpha, alphaBits } = columnScaleAlpha(actStats, cols, cfg.beta);
  let factors: LowRankFactors | null = null;
  let R: Mat;
  if (cfg.rank > 0) {
    const A = await s.scaleColumns(W, alpha);
    const t1 = performance.now();
    factors = await s.r1svd(A, { rank: cfg.rank, powerIters: cfg.powerIters, seed });
    const t2 = performance.now();
    s.free(A);
    if (factors.rank < cfg.rank) notes.push(`low rank stopped at ${factors.rank} < ${cfg.rank}: A is exactly rank ${factors.rank}`);
    R = await s.subtractLowRank(W, factors, alpha);
    seconds['lowrank.r1svd'] = (t2 - t1) / 1000;
    seconds['lowrank.residual'] = (performance.now() - t2) / 1000;
  } else R = await s.copy(W);
  lap('lowrank');

  // ── Stage B: importance permutation (§1.6) and partial block rotation (§1.7) ──
  const b = await loproRotate(s, R, H, cfg);
  notes.push(...b.notes);
  const [sR, sRt] = [await s.sampleRows(R, step), await s.sampleRows(b.Rt, step)];
  s.free(R);
  lap('permute+rotate');

  // ── Stage C: the residual quantizer on R′ with H′ (§1.8); R′ and H′ are given away ──
  const c = await loproResidual(s, b, { rows, cols, cfg, alphaBits, factors, seed, name }, true);
  notes.push(...c.notes);
  const { stored, stageC } = c;
  lap('quantize');

  // ── Ŵ from the stored parts only (lopro_dequant.ts) ──
  const wHat = await s.reconstruct(stored);
  lap('reconstruct');
  return { stored, wHat, factors, importance: b.importance, plan: b.plan, sampled: { step, R: sR, Rt: sRt }, stageC, notes, seconds };
}

/** Stage B's outcome: the importance order of R's columns, the rotation plan, R′ and H′ (new matrices). */
export interface RotatedResidual {
  importance: Float64Array;
  perm: Int32Array;
  plan: RotationPlan;
  Rt: Mat;
  Ht: Mat;
  notes: string[];
}

/** Stage B (§1.6–1.7) of the residual R (left as it is): R′ = R[:, perm]·Q, H′ = Q·H[perm][:, perm]·Q. */
export async function loproRotate(s: LayerSession, R: Mat, H: Mat, cfg: LayerConfig): Promise<RotatedResidual> {
  const hDiag = await s.diagonal(H);
  const importance = importanceFromAbsSums(hDiag, await s.columnSums(R, 'abs'), R.rows);
  const perm = argsortDescending(importance);
  const plan = planRotation(R.cols, cfg.rotation, cfg.salientBlock, cfg.hadamardBlock);
  const Rt = await s.permuteRotate(R, perm, plan);
  const Ht = await s.permuteRotateSymmetric(H, perm, plan);
  return { importance, perm, plan, Rt, Ht, notes: plan.note ? [plan.note] : [] };
}

/**
 * Stage C (§1.8): GPTQ (`lopro`) or GPTVQ (`lopro_v`) of R′ with H′ at cfg's bits, and the stored layer. `consume`:
 * R′ and H′ are given away; otherwise they are left for another bit width (with `prepared`, H′'s shared Hinv).
 */
export async function loproResidual(
  s: LayerSession,
  b: RotatedResidual,
  o: { rows: number; cols: number; cfg: LayerConfig; alphaBits: Uint16Array; factors: LowRankFactors | null; seed: number; name: string },
  consume: boolean,
  prepared?: Prepared,
): Promise<{ stored: LoproStoredLayer; stageC: LoproLayerResult['stageC']; notes: string[] }> {
  const { rows, cols, cfg, alphaBits, factors, seed, name } = o;
  const { perm, plan, Rt, Ht } = b;
  const notes: string[] = [];
  const g = cfg.groupSize === -1 ? cols : Math.min(cfg.groupSize, cols);
  if (cfg.method === 'lopro') {
    const q = await gptq(
      s,
      Rt,
      Ht,
      {
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
        prepared,
      },
      consume,
    );
    if (q.choleskyFallback) notes.push('H′ not positive definite after damping: residual quantized round-to-nearest');
    return {
      stored: loproStoredLayer({ rows, cols, cfg, groupSize: g, perm, alphaBits, factors, plan, q }),
      stageC: {
        loss: q.loss,
        deadColumns: q.deadColumns,
        damp: q.damp,
        choleskyFallback: q.choleskyFallback,
        seconds: { 'gptq.prep': q.seconds.prep, 'gptq.cholesky': q.seconds.cholesky, 'gptq.columnLoop': q.seconds.columnLoop },
      },
      notes,
    };
  }
  const vb = cfg.vqBits || cfg.bits;
  const q = await gptvq(
    s,
    Rt,
    Ht,
    { vqDim: cfg.vqDim, bits: vb, groupSize: cfg.groupSize === -1 ? -1 : g, percDamp: cfg.percDamp, blockSize: cfg.blockSize, seed: seed + 7919, name, prepared },
    consume,
  );
  if (q.choleskyFallback) notes.push('H′ not positive definite after damping: no error feedback');
  return {
    stored: loproStoredLayer({
      rows,
      cols,
      cfg,
      groupSize: g,
      perm,
      alphaBits,
      factors,
      plan,
      vq: { bits: vb, vqDim: cfg.vqDim, codes: q.codes, codebookBits: q.codebookBits, groups: q.groups },
    }),
    stageC: {
      loss: q.loss,
      deadColumns: q.deadColumns,
      damp: q.damp,
      choleskyFallback: q.choleskyFallback,
      seconds: { kmeans: q.seconds.kmeans, 'gptvq.cholesky': q.seconds.cholesky, 'gptvq.loop': q.seconds.loop },
    },
    notes,
  };
}
