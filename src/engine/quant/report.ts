// The per-layer numbers and downsampled pictures of a LoPRo layer (protocol LayerReport /
// LayerDetails). Pure functions: the engine downsamples, the webview only draws.

import { bitsPerWeight, type LayerConfig } from '../../protocol/config';
import type { LayerDetails, LayerReport } from '../../protocol/messages';
import type { LoproStoredLayer } from './lopro_dequant';
import { singularValuesOf, type LowRankFactors } from './r1svd';
import { planBlocks, type RotationPlan } from './rotation';

/**
 * Per-stage seconds of one layer: lap(stage) adds the time since the previous lap (or the start) to
 * seconds[stage]. `seconds` may be an existing record to add to.
 */
export function stageClock(seconds: Record<string, number> = {}): { seconds: Record<string, number>; lap: (stage: string) => void } {
  let t = performance.now() / 1000;
  return {
    seconds,
    lap(stage: string) {
      const t2 = performance.now() / 1000;
      seconds[stage] = (seconds[stage] ?? 0) + (t2 - t);
      t = t2;
    },
  };
}

/** Evenly spaced sample positions 0 … n−1 (at most maxPoints, always including both ends). */
export function samplePositions(n: number, maxPoints: number): number[] {
  if (n <= 0) return [];
  const p = Math.max(2, Math.min(n, Math.floor(maxPoints)));
  if (p >= n) return Array.from({ length: n }, (_, i) => i);
  return Array.from({ length: p }, (_, k) => Math.round((k * (n - 1)) / (p - 1)));
}

/** Counts of `vals` in `bins` equal bins over [−lim, lim] (values outside go to the end bins). */
export function histogram(vals: ArrayLike<number>, lim: number, bins: number): number[] {
  const out = new Array<number>(bins).fill(0);
  const w = (2 * lim) / bins;
  for (let i = 0; i < vals.length; i++) {
    let b = Math.floor((vals[i] + lim) / w);
    if (!(b >= 0)) b = 0;
    if (b >= bins) b = bins - 1;
    out[b]++;
  }
  return out;
}

export function maxAbs(vals: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < vals.length; i++) {
    const a = Math.abs(vals[i]);
    if (a > m) m = a;
  }
  return m;
}

/** Mean |v| over a tr×tc grid of row blocks × column blocks of a rows×cols matrix. */
export function meanAbsTile(vals: ArrayLike<number>, rows: number, cols: number, tr: number, tc: number): { rows: number; cols: number; values: number[] } {
  tr = Math.max(1, Math.min(tr, rows));
  tc = Math.max(1, Math.min(tc, cols));
  const sum = new Float64Array(tr * tc),
    cnt = new Float64Array(tr * tc);
  const colBlock = Int32Array.from({ length: cols }, (_, j) => Math.floor((j * tc) / cols)); // not a division per value
  for (let i = 0; i < rows; i++) {
    const o = Math.floor((i * tr) / rows) * tc;
    for (let j = 0; j < cols; j++) {
      const k = o + colBlock[j];
      sum[k] += Math.abs(vals[i * cols + j]);
      cnt[k]++;
    }
  }
  return { rows: tr, cols: tc, values: Array.from(sum, (s, k) => (cnt[k] ? s / cnt[k] : 0)) };
}

export interface DetailInputs {
  name: string;
  rows: number;
  cols: number;
  /** Importance in permuted (descending) order. */
  importanceSorted: ArrayLike<number>;
  perm: ArrayLike<number>;
  blocks: LayerDetails['blocks'];
  singularValues: number[];
  rank: number;
  /** R_p (before rotation) and R′ (after), rows×cols. */
  residualBefore: ArrayLike<number>;
  residualAfter: ArrayLike<number>;
  /** Δ = W − Ŵ in permuted column order (so the tile lines up with `blocks`). */
  errorPermuted: ArrayLike<number>;
  maxPoints: number;
}

/**
 * LayerDetails with every series ≤ maxPoints. Histograms share edges over ±max|R_p ∪ R′| so the
 * rotation's effect on outliers is visible; the error tile is in permuted column order.
 */
export function buildLayerDetails(d: DetailInputs): LayerDetails {
  const pos = samplePositions(d.cols, d.maxPoints);
  const bins = Math.max(2, Math.min(64, d.maxPoints));
  const lim = Math.max(maxAbs(d.residualBefore), maxAbs(d.residualAfter), 1e-30);
  const edges = Array.from({ length: bins + 1 }, (_, k) => -lim + (2 * lim * k) / bins);
  // Error tile: at most maxPoints cells, about square in cells (rows and cols blocks).
  const tr = Math.max(1, Math.min(d.rows, Math.floor(Math.sqrt(d.maxPoints))));
  const tc = Math.max(1, Math.min(d.cols, Math.floor(d.maxPoints / tr)));
  return {
    name: d.name,
    rows: d.rows,
    cols: d.cols,
    importance: { x: pos, y: pos.map((k) => d.importanceSorted[k]) },
    blocks: d.blocks,
    permSample: pos.map((k) => d.perm[k]),
    singularValues: d.singularValues.slice(0, d.maxPoints),
    rank: d.rank,
    histograms: {
      edges,
      residualBefore: histogram(d.residualBefore, lim, bins),
      residualAfter: histogram(d.residualAfter, lim, bins),
      error: histogram(d.errorPermuted, lim, bins),
    },
    errorTile: meanAbsTile(d.errorPermuted, d.rows, d.cols, tr, tc),
  };
}

/** "model.layers.3.mlp.down_proj" → { block: 3, module: "down_proj" } (block −1 when absent). */
export function parseLayerName(name: string): { block: number; module: string } {
  const m = /layers\.(\d+)\./.exec(name);
  const parts = name.split('.');
  return { block: m ? Number(m[1]) : -1, module: parts[parts.length - 1] || name };
}

/** What a LoPRo layer's report and details are built from (host arrays; quant/lopro.ts or lopro_ref.ts). */
export interface LoproReportInputs {
  W: ArrayLike<number>;
  cfg: LayerConfig;
  name: string;
  stored: LoproStoredLayer;
  reconstructed: ArrayLike<number>;
  factors: LowRankFactors | null;
  /** Column importance in the original order (spec §1.6). */
  importance: ArrayLike<number>;
  plan: RotationPlan;
  /** Rows 0, step, 2·step… of R (original column order) and of R′ (permuted + rotated). */
  sampled: { step: number; R: ArrayLike<number>; Rt: ArrayLike<number> };
  /** [tr(ΔHΔᵀ), tr(WHWᵀ)] with the original H. */
  losses: [number, number];
  notes: string[];
  seconds: Record<string, number>;
  maxPoints?: number;
}

/**
 * The LayerReport (spec §3 exact bpw, proxy loss tr(ΔHΔᵀ)) and the downsampled LayerDetails of one LoPRo
 * layer, from every step-th row (a 7B layer has 45 M values per matrix; the view shows 64 bins and ≤ 256
 * cells).
 */
export function loproReport(p: LoproReportInputs): { report: LayerReport; details: LayerDetails } {
  const { W, cfg, name, stored, reconstructed, factors, plan, seconds } = p;
  const { rows, cols, perm } = stored;
  const [loss, ref] = p.losses;
  const { block, module } = parseLayerName(name);
  const report: LayerReport = {
    name,
    block,
    module,
    rows,
    cols,
    // rank −1 (chosen per layer) is reported as the rank chosen: what the stored layer holds and a re-run repeats.
    config: { ...cfg, rank: cfg.rank === -1 ? stored.rank : cfg.rank },
    bpw: bitsPerWeight({ ...cfg, rank: stored.rank }, rows, cols),
    proxyLoss: loss,
    relProxyLoss: ref > 0 ? loss / ref : 0,
    baselines: { [cfg.method]: loss },
    lowRankEnergy: factors?.energy ?? 0,
    notes: p.notes,
    seconds,
  };
  if (plan.block !== 0 && plan.block !== cfg.hadamardBlock) report.hadamardBlockUsed = plan.block;
  const { step, R, Rt } = p.sampled;
  const rs = Math.ceil(rows / step);
  const before = new Float64Array(rs * cols),
    after = new Float64Array(rs * cols),
    errPerm = new Float64Array(rs * cols);
  for (let s = 0; s < rs; s++) {
    const o = s * step * cols,
      so = s * cols;
    for (let k = 0; k < cols; k++) {
      const j = perm[k];
      errPerm[so + k] = W[o + j] - reconstructed[o + j];
      before[so + k] = R[so + j];
      after[so + k] = Rt[so + k];
    }
  }
  const details = buildLayerDetails({
    name,
    rows: rs,
    cols,
    importanceSorted: Array.from(perm, (j) => p.importance[j]),
    perm,
    blocks: planBlocks(plan),
    singularValues: factors ? singularValuesOf(factors) : [],
    rank: stored.rank,
    residualBefore: before,
    residualAfter: after,
    errorPermuted: errPerm,
    maxPoints: p.maxPoints ?? 256,
  });
  details.rows = rows;
  return { report, details };
}
