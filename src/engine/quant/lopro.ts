// LoPRo for one linear layer (spec ../../../../shared/lopro-spec.md §1), one driver for both backends:
//   stage A — α from the activations, A = W·diag(α), its rank-r part by R1SVD, R = W − W_r;
//   stage B — the importance permutation of R's columns and the partial block rotation Q:
//             R′ = R[:, perm]·Q, H′ = Q·H[perm][:, perm]·Q;
//   stage C — GPTQ (`lopro`) or GPTVQ (`lopro_v`) of R′ with H′;
// then the stored parts and Ŵ rebuilt from them alone (what a loaded checkpoint computes). The arithmetic
// is the session's (backend/backend.ts); lopro_ref.ts is the float64 twin.

import { AUTO_RANK_MAX, type LayerConfig } from '../../protocol/config';
import { ErrorCode } from '../../protocol/messages';
import { ProtocolError } from '../../protocol/rpc';
import type { LayerSession, Mat } from './backend';
import { gptq, type GptqResult, type Prepared } from './gptq';
import { gptvq } from './gptvq';
import { columnScaleAlpha, leadingFactors, type LowRankFactors } from './r1svd';
import { chooseRank, scanRanks } from './auto_rank';
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

  // ── Stage A: α, A = W·diag(α), R1SVD (spec §1.1–1.4) ──
  const { alpha, alphaBits } = columnScaleAlpha(actStats, cols, cfg.beta, cfg.alphaNorm);
  let factors: LowRankFactors | null = null;
  if (cfg.rank !== 0) {
    const A = await s.scaleColumns(W, alpha);
    const t1 = performance.now();
    factors = await s.r1svd(A, { rank: cfg.rank === -1 ? AUTO_RANK_MAX : cfg.rank, powerIters: cfg.powerIters, seed });
    s.free(A);
    if (cfg.rank === -1) {
      const scan = scanRanks(await s.download(W), factors, alpha);
      const k = chooseRank(scan.maxAbs, rows, cols);
      notes.push(`rank chosen: ${k} (max|W − W_k| ${scan.maxAbs[0].toPrecision(3)} → ${scan.maxAbs[k].toPrecision(3)})`);
      factors = k > 0 ? { ...leadingFactors(factors, k), energy: scan.energy[k] } : null;
    } else if (factors.rank < cfg.rank) notes.push(`low rank stopped at ${factors.rank} < ${cfg.rank}: A is exactly rank ${factors.rank}`);
    seconds['lowrank.r1svd'] = (performance.now() - t1) / 1000;
  }
  lap('lowrank');

  // ── Stages B and C on R = W − W_r, then (refineRounds > 0) the alternating refinement ──
  const o = { rows, cols, cfg, alphaBits, alpha, seed, name };
  let pass = await residualPass(s, W, H, factors, o, lap);
  if (factors) seconds['lowrank.residual'] = pass.residualSeconds;
  if (cfg.refineRounds > 0 && factors) pass = await refine(s, W, H, pass, o, lap, notes);
  else if (cfg.refineRounds > 0) notes.push('no refinement: the layer has no low-rank part');
  notes.push(...pass.notes);
  const { stored, wHat, importance, plan, sampled, stageC } = pass;
  return { stored, wHat, factors: pass.factors, importance, plan, sampled, stageC, notes, seconds };
}

/** One pass of stages B and C and Ŵ, for given factors of stage A. */
interface ResidualPass extends Omit<LoproLayerResult, 'seconds'> {
  /** Seconds of R = W − W_r. */
  residualSeconds: number;
}

type PassInputs = { rows: number; cols: number; cfg: LayerConfig; alphaBits: Uint16Array; alpha: Float64Array; seed: number; name: string };

async function residualPass(s: LayerSession, W: Mat, H: Mat, factors: LowRankFactors | null, o: PassInputs, lap: (stage: string) => void): Promise<ResidualPass> {
  const t0 = performance.now();
  const R = factors ? await s.subtractLowRank(W, factors, o.alpha) : await s.copy(W);
  const residualSeconds = (performance.now() - t0) / 1000;
  lap('lowrank');
  // Stage B: importance permutation (§1.6) and partial block rotation (§1.7)
  const step = detailRowStep(o.rows, o.cols);
  const b = await loproRotate(s, R, H, o.cfg);
  const [sR, sRt] = [await s.sampleRows(R, step), await s.sampleRows(b.Rt, step)];
  s.free(R);
  lap('permute+rotate');
  // Stage C: the residual quantizer on R′ with H′ (§1.8); R′ and H′ are given away
  const c = await loproResidual(s, b, { ...o, factors }, true);
  lap('quantize');
  // Ŵ from the stored parts only (lopro_dequant.ts)
  const wHat = await s.reconstruct(c.stored);
  lap('reconstruct');
  return {
    stored: c.stored,
    wHat,
    factors,
    importance: b.importance,
    plan: b.plan,
    sampled: { step, R: sR, Rt: sRt },
    stageC: c.stageC,
    notes: [...b.notes, ...c.notes],
    residualSeconds,
  };
}

/** Rounds without a new best after which the refinement stops. */
const REFINE_PATIENCE = 2;

/**
 * The alternating refinement: the low rank of W − Q(R) (what the quantized residual misses, at the same rank) gives
 * new factors, R = W − W_r is re-permuted, re-clipped and re-quantized; the pass with the least layer-output error
 * tr(ΔW·H·ΔWᵀ) is kept. Each round starts from the previous round's Q(R), not the best's.
 */
async function refine(s: LayerSession, W: Mat, H: Mat, first: ResidualPass, o: PassInputs, lap: (stage: string) => void, notes: string[]): Promise<ResidualPass> {
  let best = first,
    cur = first;
  let bestLoss = (await s.proxyLosses(W, first.wHat, H))[0];
  const losses = [bestLoss];
  let since = 0;
  for (let round = 1; round <= o.cfg.refineRounds && since < REFINE_PATIENCE; round++) {
    // W − Q(R) = (W − Ŵ) + W_r: the stored factors added back with their σ negated.
    const f = cur.factors!;
    const D = await s.subtract(W, cur.wHat);
    const E = await s.subtractLowRank(D, { ...f, sigma: f.sigma.map((v) => -v) }, o.alpha);
    const A = await s.scaleColumns(E, o.alpha);
    s.free(D, E);
    const factors = await s.r1svd(A, { rank: f.rank, powerIters: o.cfg.powerIters, seed: o.seed + round });
    s.free(A);
    lap('refine.lowrank');
    const next = await residualPass(s, W, H, factors, o, lap);
    const loss = (await s.proxyLosses(W, next.wHat, H))[0];
    losses.push(loss);
    const prev = cur;
    cur = next;
    if (prev !== best) s.free(prev.wHat);
    if (loss < bestLoss) {
      s.free(best.wHat);
      [best, bestLoss, since] = [next, loss, 0];
    } else since++;
  }
  if (cur !== best) s.free(cur.wHat);
  const kept = losses.indexOf(bestLoss);
  notes.push(`refinement: ${losses.length - 1} rounds, kept round ${kept} (layer error ${losses[0].toPrecision(4)} → ${bestLoss.toPrecision(4)})`);
  return best;
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
  const importance = importanceFromAbsSums(hDiag, await s.columnSums(R, 'abs'), R.rows, cfg.columnScore);
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
      seconds: { ...(q.seconds.kmeans === undefined ? {} : { kmeans: q.seconds.kmeans }), 'gptvq.cholesky': q.seconds.cholesky, 'gptvq.loop': q.seconds.loop },
    },
    notes,
  };
}
