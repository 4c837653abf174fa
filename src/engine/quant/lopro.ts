// LoPRo for one linear layer (spec ../../../../shared/lopro-spec.md §1): stage A (α, R1SVD low rank),
// stage B (importance permutation, partial block Hadamard), stage C (GPTQ → `lopro`, GPTVQ →
// `lopro_v`), then the stored parts, Ŵ rebuilt from them, the LayerReport (proxy loss, exact bpw,
// baselines) and the downsampled LayerDetails. Pure: typed arrays in, typed arrays out.

import { bitsPerWeight, type LayerConfig } from '../../protocol/config';
import type { LayerDetails, LayerReport } from '../../protocol/messages';
import { ProtocolError } from '../../protocol/rpc';
import { ErrorCode } from '../../protocol/messages';
import { gptqQuantize, proxyLoss } from './gptq';
import type { LazyUpdateFn } from './gptq_kernels';
import { rtnQuantize } from './rtn';
import { gptvqQuantize } from './gptvq';
import { encodeF16 } from './fp8';
import { columnScaleAlpha, r1svd, scaleColumns, lowRankWeight, singularValuesOf, type LowRankFactors } from './r1svd';
import { argsortDescending, columnImportance, gatherColumns, permuteSymmetric } from './permute';
import { planBlocks, planRotation, rotateColumns, rotateHessian, type RotationPlan } from './rotation';
import { dequantizeLoPRo, type LoproStoredLayer } from './lopro_dequant';
import { buildLayerDetails, parseLayerName, stageClock } from './report';
import { assertFiniteArray } from './quantizer_checks';

export interface LoproLayerOptions {
  /** Layer name (reports, errors). */
  name?: string;
  /** Compute RTN and GPTQ proxy losses on the same layer and Hessian (default true). */
  baselines?: boolean;
  /** Longest series in LayerDetails (default 256). */
  maxPoints?: number;
  /** k-means iterations for lopro_v codebooks (default 20). */
  kmeansIters?: number;
  /**
   * Spec §1.1 option: try each β (e.g. [0.25, 0.5, 0.75]) and keep the lowest proxy loss
   * (costs one full quantization per candidate). Ignored when data-free.
   */
  betaCandidates?: number[];
  onWarning?: (message: string) => void;
  /** Kernel overrides passed to GPTQ / GPTVQ (e.g. ORT MatMul for the lazy update, issue 5). */
  lazyUpdate?: LazyUpdateFn;
  choleskyInverseUpper?: (hVals: Float64Array, n: number) => Float64Array;
}

export interface LoproLayerResult {
  /** Ŵ in the original space, rebuilt from `stored` only. */
  reconstructed: Float32Array;
  stored: LoproStoredLayer;
  report: LayerReport;
  details: LayerDetails;
}

const now = () => performance.now() / 1000;

/**
 * Quantizes W (rows×cols, y = W·x) with its input Hessian H (cols×cols; null = data-free, H = I).
 * `actStats` = mean_t |x_tj| per input column (null = data-free, α = 1).
 */
export function quantizeLayerLoPRo(
  W: Float32Array | Float64Array, rows: number, cols: number,
  H: Float32Array | Float64Array | null, actStats: ArrayLike<number> | null,
  cfg: LayerConfig, seed: number, opts: LoproLayerOptions = {},
): LoproLayerResult {
  const name = opts.name ?? 'layer';
  if (cfg.method !== 'lopro' && cfg.method !== 'lopro_v') throw new ProtocolError(ErrorCode.BadConfig, `quantizeLayerLoPRo got method "${cfg.method}"`, name, 'use lopro or lopro_v (rtn/gptq go through rtn.ts/gptq.ts)');
  if (W.length !== rows * cols) throw new ProtocolError(ErrorCode.ShapeMismatch, `W has ${W.length} values, expected ${rows}×${cols}`, name);
  if (H && H.length !== cols * cols) throw new ProtocolError(ErrorCode.ShapeMismatch, `H has ${H.length} values, expected ${cols}×${cols}`, name);
  assertFiniteArray(W, 'W', name);
  const Hm: Float64Array = H ? Float64Array.from(H) : identity(cols);
  assertFiniteArray(Hm, 'H', name);
  if (opts.betaCandidates && opts.betaCandidates.length > 0 && actStats) return betaSearch(W, rows, cols, Hm, actStats, cfg, seed, opts);
  const notes: string[] = [];
  const { seconds, lap } = stageClock();

  // ── Stage A: α and the rank-r part (spec §1.1–1.4) ──
  const { alpha, alphaBits } = columnScaleAlpha(actStats, cols, cfg.beta);
  if (!actStats) notes.push('data-free: α = 1');
  let factors: LowRankFactors | null = null;
  let Wr: Float64Array | null = null;
  if (cfg.rank > 0) {
    factors = r1svd(scaleColumns(W, rows, cols, alpha), rows, cols, { rank: cfg.rank, powerIters: cfg.powerIters, seed });
    if (factors.rank < cfg.rank) notes.push(`low rank stopped at ${factors.rank} < ${cfg.rank}: A is exactly rank ${factors.rank}`);
    Wr = lowRankWeight(factors.U, factors.sigma, factors.V, rows, cols, factors.rank, alpha);
  }
  const R = new Float64Array(rows * cols);
  for (let i = 0; i < R.length; i++) R[i] = W[i] - (Wr ? Wr[i] : 0);
  lap('lowrank');

  // ── Stage B: permutation (§1.6) ──
  const hDiag = new Float64Array(cols);
  for (let j = 0; j < cols; j++) hDiag[j] = Hm[j * cols + j];
  const imp = columnImportance(hDiag, R, rows, cols);
  const perm = argsortDescending(imp);
  const Rp = gatherColumns(R, rows, cols, perm);
  const Hp = permuteSymmetric(Hm, cols, perm);
  lap('permute');

  // ── Stage B: partial block rotation (§1.7) ──
  const plan = planRotation(cols, cfg.rotation, cfg.salientBlock, cfg.hadamardBlock);
  if (plan.note) notes.push(plan.note);
  const Rt = rotateColumns(Rp, rows, plan);
  const Ht = rotateHessian(Hp, plan);
  lap('rotate');

  // ── Stage C: residual quantizer (§1.8) ──
  const g = cfg.groupSize === -1 ? cols : Math.min(cfg.groupSize, cols);
  const stored: LoproStoredLayer = {
    rows, cols, method: cfg.method, bits: cfg.bits, groupSize: g, sym: cfg.sym, perm, alphaBits,
    rank: factors?.rank ?? 0,
    uCodes: factors?.uCodes ?? new Uint8Array(0), vCodes: factors?.vCodes ?? new Uint8Array(0), sigmaBits: factors?.sigmaBits ?? new Uint16Array(0),
    uScale: factors?.uScale ?? Math.sqrt(rows), vScale: factors?.vScale ?? Math.sqrt(cols),
    rotation: cfg.rotation, salientBlock: plan.salient, hadamardBlock: plan.block, groups: 0,
  };
  if (cfg.method === 'lopro') {
    const q = gptqQuantize(Rt, rows, cols, Ht, {
      bits: cfg.bits, groupSize: cfg.groupSize === -1 ? -1 : g, sym: cfg.sym, clip: cfg.clip, percDamp: cfg.percDamp, blockSize: cfg.blockSize,
      actOrder: cfg.actOrder, staticGroups: cfg.staticGroups, name, onWarning: opts.onWarning,
      lazyUpdate: opts.lazyUpdate, choleskyInverseUpper: opts.choleskyInverseUpper,
    });
    if (q.choleskyFallback) notes.push('H′ not positive definite after damping: residual quantized round-to-nearest');
    stored.codes = q.codes;
    stored.scaleBits = encodeF16(q.scale); // spec §1.8: FP16 scale; Ŵ is rebuilt with the rounded scale
    stored.zeros = Uint8Array.from(q.zero);
    stored.groups = q.groups;
    if (cfg.actOrder || cfg.staticGroups) stored.gIdx = q.gIdx;
  } else {
    const vb = cfg.vqBits || cfg.bits;
    stored.bits = vb;
    const q = gptvqQuantize(Rt, rows, cols, Ht, {
      vqDim: cfg.vqDim, bits: vb, groupSize: cfg.groupSize === -1 ? -1 : g, percDamp: cfg.percDamp, blockSize: cfg.blockSize,
      kmeansIters: opts.kmeansIters, seed: seed + 7919, name, onWarning: opts.onWarning,
      lazyUpdate: opts.lazyUpdate, choleskyInverseUpper: opts.choleskyInverseUpper,
    });
    if (q.choleskyFallback) notes.push('H′ not positive definite after damping: no error feedback');
    stored.vqDim = cfg.vqDim;
    stored.vqCodes = q.codes;
    stored.codebookBits = q.codebookBits;
    stored.groups = q.groups;
    seconds.kmeans = q.seconds.kmeans;
  }
  lap('quantize');

  const reconstructed = dequantizeLoPRo(stored);
  lap('reconstruct');
  const { report, details } = loproReport({ W, H: Hm, cfg, name, stored, reconstructed, factors, importance: imp, plan, Rp, Rt, notes, seconds }, opts);
  return { reconstructed, stored, report, details };
}

/**
 * Largest matrix (values) the layer-view histograms and error tile read whole; larger ones are row-sampled.
 * 2^20: 64 histogram bins and ≤ 256 tile cells need far fewer samples; at 2^22 the details still cost
 * 5.0–5.4 s per two 7B-shaped blocks on the H100 host (0.4 s a layer, the largest host stage left, session 6).
 */
export const DETAIL_MAX_VALUES = 1 << 20;

/** Every step-th row goes into the layer view's histograms and error tile (loproReport). */
export function detailRowStep(rows: number, cols: number): number {
  return Math.max(1, Math.ceil((rows * cols) / DETAIL_MAX_VALUES));
}

/** What a LoPRo driver hands to loproReport (quant/lopro.ts here, the row-parallel driver of gptq_parallel_lopro.ts). */
export interface LoproOutcomeParts {
  W: Float32Array | Float64Array;
  /** The original H (cols×cols), identity when data-free. */
  H: Float64Array;
  cfg: LayerConfig;
  name: string;
  stored: LoproStoredLayer;
  reconstructed: Float32Array;
  factors: LowRankFactors | null;
  /** Column importance in the original order (spec §1.6). */
  importance: Float64Array;
  plan: RotationPlan;
  /**
   * The residual R permuted (R_p), or R in the original column order (then permuted here), and R′
   * (rotated), rows×cols — or only the rows the view reads (`sampled`: rows 0, step, 2·step…, R in the
   * original order; quant/lopro_dawn.ts reads just those back from the device).
   */
  Rp?: Float64Array;
  R?: Float64Array;
  Rt?: Float64Array;
  sampled?: { step: number; R: Float32Array; Rt: Float32Array };
  notes: string[];
  /** Per-stage seconds so far; 'report', 'baselines' and 'details' are added. */
  seconds: Record<string, number>;
  /** [tr(ΔHΔᵀ), tr(WHWᵀ)] when the driver computed them elsewhere (proxy_loss_ort.ts on an EP). */
  losses?: [number, number];
}

/**
 * The LayerReport (spec §3 exact bpw, proxy loss tr(ΔHΔᵀ) with the original H, optional RTN/GPTQ
 * baselines) and the downsampled LayerDetails of one quantized layer: one implementation for every
 * LoPRo driver, so the layer view reads the same whichever engine quantized the layer.
 */
export function loproReport(p: LoproOutcomeParts, opts: Pick<LoproLayerOptions, 'baselines' | 'maxPoints'> = {}): { report: LayerReport; details: LayerDetails } {
  const { W, H, cfg, name, stored, reconstructed, factors, plan, seconds } = p;
  const { rows, cols, perm } = stored;
  const { lap } = stageClock(seconds);
  const [loss, ref] = p.losses ?? proxyLossAndReference(W, reconstructed, H, rows, cols);
  const effCfg: LayerConfig = { ...cfg, rank: stored.rank };
  const baselines: LayerReport['baselines'] = { [cfg.method]: loss };
  lap('report');
  if (opts.baselines !== false) {
    Object.assign(baselines, baselineLosses(W, rows, cols, H, cfg, name));
    lap('baselines');
  }
  const { block, module } = parseLayerName(name);
  const report: LayerReport = {
    name, block, module, rows, cols, config: { ...cfg },
    bpw: bitsPerWeight(effCfg, rows, cols),
    proxyLoss: loss,
    relProxyLoss: ref > 0 ? loss / ref : 0,
    baselines,
    lowRankEnergy: factors?.energy ?? 0,
    notes: p.notes,
    seconds,
  };
  if (plan.block !== 0 && plan.block !== cfg.hadamardBlock) report.hadamardBlockUsed = plan.block;

  // ── Details for the layer view ──
  // Histograms and the error tile from every step-th row: a 7B layer has 45 M values per matrix and
  // the view shows 64 bins and ≤ 256 cells (full rows cost 1–3 s a layer, measured on the device).
  const step = detailRowStep(rows, cols);
  const rs = Math.ceil(rows / step);
  const sm = p.sampled;
  if (sm && sm.step !== step) throw new RangeError(`loproReport: sampled rows every ${sm.step}, the view reads every ${step}`);
  const before = new Float64Array(rs * cols), after = new Float64Array(rs * cols), errPerm = new Float64Array(rs * cols);
  for (let s = 0; s < rs; s++) {
    const i = s * step, o = i * cols, so = s * cols;
    for (let k = 0; k < cols; k++) {
      const j = perm[k];
      errPerm[so + k] = W[o + j] - reconstructed[o + j];
      before[so + k] = sm ? sm.R[so + j] : p.Rp ? p.Rp[o + k] : p.R![o + j];
      after[so + k] = sm ? sm.Rt[so + k] : p.Rt![o + k];
    }
  }
  const details = buildLayerDetails({
    name, rows: rs, cols,
    importanceSorted: Array.from(perm, (j) => p.importance[j]),
    perm, blocks: planBlocks(plan),
    singularValues: factors ? singularValuesOf(factors) : [],
    rank: stored.rank,
    residualBefore: before, residualAfter: after, errorPermuted: errPerm,
    maxPoints: opts.maxPoints ?? 256,
  });
  details.rows = rows;
  lap('details');
  return { report, details };
}

/** [tr(ΔHΔᵀ), tr(WHWᵀ)]: the loss and the loss of Ŵ = 0 (for relProxyLoss). */
function proxyLossAndReference(W: Float32Array | Float64Array, wHat: Float32Array, H: Float64Array, rows: number, cols: number): [number, number] {
  return [proxyLoss(W, wHat, H, rows, cols), proxyLoss(W, new Float32Array(rows * cols), H, rows, cols)];
}

/** RTN and GPTQ (act-order off) proxy losses on the same layer and Hessian, same bits/group/sym. */
export function baselineLosses(W: Float32Array | Float64Array, rows: number, cols: number, H: Float64Array, cfg: LayerConfig, name = 'layer'): { rtn: number; gptq: number } {
  const rtn = rtnQuantize(W, rows, cols, { bits: cfg.bits, groupSize: cfg.groupSize, sym: cfg.sym, clip: cfg.clip });
  const gq = gptqQuantize(W, rows, cols, H, { bits: cfg.bits, groupSize: cfg.groupSize, sym: cfg.sym, clip: cfg.clip, percDamp: cfg.percDamp, blockSize: cfg.blockSize, name, onWarning: () => {} });
  return { rtn: proxyLoss(W, rtn.Q, H, rows, cols), gptq: proxyLoss(W, gq.Q, H, rows, cols) };
}

function betaSearch(
  W: Float32Array | Float64Array, rows: number, cols: number, H: Float64Array, actStats: ArrayLike<number>,
  cfg: LayerConfig, seed: number, opts: LoproLayerOptions,
): LoproLayerResult {
  const t0 = now();
  let best: LoproLayerResult | undefined;
  const tried: string[] = [];
  for (const beta of opts.betaCandidates!) {
    const r = quantizeLayerLoPRo(W, rows, cols, H, actStats, { ...cfg, beta }, seed, { ...opts, betaCandidates: undefined, baselines: false });
    tried.push(`${beta}: ${r.report.proxyLoss.toPrecision(4)}`);
    if (!best || r.report.proxyLoss < best.report.proxyLoss) best = r;
  }
  const out = best!;
  out.report.notes.push(`β = ${out.report.config.beta} chosen by proxy loss from {${tried.join(', ')}}`);
  const t1 = now();
  if (opts.baselines !== false) {
    out.report.baselines = { ...out.report.baselines, ...baselineLosses(W, rows, cols, H, cfg, opts.name) };
    out.report.seconds.baselines = now() - t1;
  }
  out.report.seconds.betaSearch = t1 - t0;
  return out;
}

function identity(n: number): Float64Array {
  const I = new Float64Array(n * n);
  for (let i = 0; i < n; i++) I[i * n + i] = 1;
  return I;
}

