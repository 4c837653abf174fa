// One linear layer through the configured method: the single place where the pipeline, the
// data-free path and layer/requantize call into quant/. Returns the reconstruction Ŵ (rebuilt from
// the stored parts: what later sub-layers, a resume and the exports all see), the stored parts
// and the LayerReport. Orchestration only: the math is in quant/.

import { bitsPerWeight, type LayerConfig, type Method } from '../../protocol/config';
import type { LayerDetails, LayerReport } from '../../protocol/messages';
import { rtnQuantize } from '../quant/rtn';
import { gptqQuantize, proxyLoss, type GptqOptions } from '../quant/gptq';
import { loproReport, quantizeLayerLoPRo } from '../quant/lopro';
import { quantizeLayerLoPRoParallel } from '../quant/gptq_parallel_lopro';
import type { LayerEngines } from './layer_engines';
import { baselineAsStored, dequantizeStored, type StoredLayer } from './stored';

export interface LayerInput {
  name: string;
  block: number;
  module: string;
  rows: number;
  cols: number;
  /** W, rows×cols row-major float32 (as stored, widened). */
  W: Float32Array;
  /** H (cols×cols, float64), or undefined in data-free mode (H = I). */
  H?: Float64Array;
  /** float32(H) when the caller has it (the pipeline's device Hessians): the Dawn path uploads it without converting. */
  H32?: Float32Array;
  /** mean_t |x_tj| (length cols) for LoPRo's activation scale α; undefined in data-free mode. */
  absMean?: Float64Array;
  /**
   * [tr(ΔHΔᵀ), tr(WHWᵀ)] for a given Ŵ from copies the caller already holds on the device (the GPU
   * pipeline); null = not available, the engines' path is used. Only quantizeLayerAsync calls it.
   */
  proxyLosses?: (wHat: Float32Array) => Promise<[number, number] | null>;
}

export interface LayerOutcome {
  /** Ŵ as the stored parts reconstruct it, rows×cols float32. */
  wHat: Float32Array;
  stored: StoredLayer;
  report: LayerReport;
  details?: LayerDetails;
}

/** A per-layer seed from the run seed and the layer name (independent of processing order). */
export function layerSeed(seed: number, name: string): number {
  let h = 0x811c9dc5 ^ (seed >>> 0);
  for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 0x01000193) >>> 0;
  return h >>> 0;
}

/** tr(Δ H Δᵀ); ‖Δ‖² when H = I (O(rows·cols) instead of O(rows·cols²)). */
export function layerProxyLoss(W: Float32Array, wHat: ArrayLike<number>, H: Float64Array | undefined, rows: number, cols: number): number {
  if (H) return proxyLoss(W, wHat, H, rows, cols);
  let s = 0;
  for (let i = 0; i < W.length; i++) {
    const d = W[i] - wHat[i];
    s += d * d;
  }
  return s;
}

const now = () => performance.now() / 1000;

function identity(cols: number): Float64Array {
  const H = new Float64Array(cols * cols);
  for (let i = 0; i < cols; i++) H[i * cols + i] = 1;
  return H;
}

function gptqOptions(x: LayerInput, lc: LayerConfig, notes: string[], warn: (m: string) => void): GptqOptions {
  return {
    bits: lc.bits, groupSize: lc.groupSize, sym: lc.sym, clip: lc.clip, percDamp: lc.percDamp, blockSize: lc.blockSize,
    actOrder: lc.actOrder, staticGroups: lc.staticGroups, name: x.name,
    onWarning: (m) => {
      notes.push(m);
      warn(m);
    },
  };
}

function quantizeBaseline(x: LayerInput, lc: LayerConfig, method: 'rtn' | 'gptq', notes: string[], warn: (m: string) => void): StoredLayer {
  const { rows, cols } = x;
  const q =
    method === 'rtn'
      ? rtnQuantize(x.W, rows, cols, { bits: lc.bits, groupSize: lc.groupSize, sym: lc.sym, clip: lc.clip })
      : gptqQuantize(x.W, rows, cols, x.H ?? identity(cols), gptqOptions(x, lc, notes, warn));
  return baselineAsStored(q, rows, cols, lc, method === 'gptq' && (lc.actOrder || lc.staticGroups));
}

export interface QuantizeLayerOptions {
  seed: number;
  /** Also compute the RTN and GPTQ proxy losses on the same H (LayerReport.baselines). */
  compare?: boolean;
  warn?: (message: string) => void;
}

/**
 * quantizeLayer with the heavy stages on `engines` (worker threads, a GPU EP; run/layer_engines.ts)
 * for lopro and gptq layers with a Hessian; everything else (lopro_v, rtn, data-free, no engines)
 * goes through the synchronous quantizeLayer. Same stored parts on the CPU EP (the row-parallel
 * drivers are exact); same report and layer details either way (quant/lopro.ts loproReport).
 */
export async function quantizeLayerAsync(x: LayerInput, lc: LayerConfig, opts: QuantizeLayerOptions & { engines?: LayerEngines | null }): Promise<LayerOutcome> {
  const e = opts.engines;
  if (!e || !x.H || (lc.method !== 'lopro' && lc.method !== 'gptq' && lc.method !== 'lopro_v')) return quantizeLayer(x, lc, opts);
  const warn = opts.warn ?? (() => {});
  const t0 = now();
  if (lc.method === 'gptq') {
    const notes: string[] = [];
    // dequantized: false — Ŵ is rebuilt from the stored parts below (FP16 scales), so the driver's own Q would be unused.
    const q = await e.gptq(Float64Array.from(x.W), x.rows, x.cols, x.H, { ...gptqOptions(x, lc, notes, warn), dequantized: false });
    const stored = baselineAsStored(q, x.rows, x.cols, lc, lc.actOrder || lc.staticGroups);
    const wHat = dequantizeStored(stored);
    return baselineOutcome(x, lc, stored, notes, t0, opts, await asyncLosses(x, e, wHat), wHat);
  }
  const seed = layerSeed(opts.seed, x.name);
  const notes: string[] = [];
  if (!x.absMean) notes.push('data-free: α = 1');
  // The whole layer on the Dawn device where it can (quant/lopro_dawn.ts), else the pool driver.
  const dev = await e.loproResident(x.W, x.rows, x.cols, x.H, x.absMean ?? null, lc, seed, x.name, x.H32);
  if (!dev && lc.method === 'lopro_v') return quantizeLayer(x, lc, opts); // no pool driver for GPTVQ: the single-threaded one
  let r;
  if (dev) {
    notes.push(...dev.notes);
    r = { ...dev, residualParts: { sampled: dev.sampled } };
  } else {
    // LOPRO_F32_INPUTS=off: the float32 engine converts W′ and H′ itself (A/B runs).
    const float32Engine = process.env.LOPRO_F32_INPUTS !== 'off' && (await e.float32Gptq(x.rows, x.cols, { clip: lc.clip, blockSize: lc.blockSize }));
    const p = await quantizeLayerLoPRoParallel(e.pool, e.gptq, x.W, x.rows, x.cols, x.H, x.absMean ?? null, lc, seed, x.name, e.lowRank, { float32Engine });
    if (p.factors && p.factors.rank < lc.rank) notes.push(`low rank stopped at ${p.factors.rank} < ${lc.rank}: A is exactly rank ${p.factors.rank}`);
    if (p.plan.note) notes.push(p.plan.note);
    if (p.gptq.choleskyFallback) notes.push('H′ not positive definite after damping: residual quantized round-to-nearest');
    r = { ...p, residualParts: { R: p.residual, Rt: p.rotated } };
  }
  const { stored } = r;
  const tLoss = now();
  const losses = (await asyncLosses(x, e, r.reconstructed)) ?? undefined;
  const { report, details } = loproReport(
    { W: x.W, H: x.H, cfg: lc, name: x.name, stored, reconstructed: r.reconstructed, factors: r.factors, importance: r.importance, plan: r.plan, ...r.residualParts, notes, seconds: { ...r.seconds, quantize: r.seconds.gptq ?? r.seconds.quantize, 'gptq.prep': r.gptq.seconds.prep, 'gptq.cholesky': r.gptq.seconds.cholesky, 'gptq.columnLoop': r.gptq.seconds.columnLoop, ...(losses ? { proxyLossEp: now() - tLoss } : {}) }, losses },
    { baselines: !!opts.compare },
  );
  report.block = x.block;
  report.module = x.module;
  report.seconds.total = now() - t0;
  if (!opts.compare) delete report.baselines;
  return { wHat: r.reconstructed, stored, report, details };
}

/** [tr(ΔHΔᵀ), tr(WHWᵀ)] from the caller's device copies if it has them, else from the engines (null: the float64 kernel). */
async function asyncLosses(x: LayerInput, e: LayerEngines, wHat: Float32Array): Promise<[number, number] | null> {
  return (x.proxyLosses ? await x.proxyLosses(wHat) : null) ?? e.proxyLosses(x.W, wHat, x.H!, x.rows, x.cols);
}

export function quantizeLayer(x: LayerInput, lc: LayerConfig, opts: QuantizeLayerOptions): LayerOutcome {
  const warn = opts.warn ?? (() => {});
  const t0 = now();
  if (lc.method === 'lopro' || lc.method === 'lopro_v') {
    const r = quantizeLayerLoPRo(x.W, x.rows, x.cols, x.H ?? null, x.absMean ?? null, lc, layerSeed(opts.seed, x.name), {
      name: x.name, baselines: !!opts.compare, onWarning: warn,
    });
    // The quantizer parses block/module from the name; bare tensors have their own numbering.
    const report: LayerReport = { ...r.report, name: x.name, block: x.block, module: x.module, seconds: { ...r.report.seconds, total: now() - t0 } };
    if (!opts.compare) delete report.baselines;
    return { wHat: r.reconstructed, stored: r.stored, report, details: r.details };
  }
  const notes: string[] = [];
  return baselineOutcome(x, lc, quantizeBaseline(x, lc, lc.method, notes, warn), notes, t0, opts);
}

/** Ŵ, proxy loss and LayerReport of an RTN/GPTQ layer already quantized into `stored`. */
function baselineOutcome(
  x: LayerInput, lc: LayerConfig, stored: StoredLayer, notes: string[], t0: number, opts: QuantizeLayerOptions,
  losses?: [number, number] | null, wHat = dequantizeStored(stored),
): LayerOutcome {
  const tQuant = now() - t0;
  const proxy = losses ? losses[0] : layerProxyLoss(x.W, wHat, x.H, x.rows, x.cols);
  // tr(W H Wᵀ), the loss of Ŵ = 0 (‖W‖² when H = I, without a zero matrix).
  const ref = losses ? losses[1] : x.H ? proxyLoss(x.W, new Float32Array(x.W.length), x.H, x.rows, x.cols) : x.W.reduce((a, v) => a + v * v, 0);
  const report: LayerReport = {
    name: x.name, block: x.block, module: x.module, rows: x.rows, cols: x.cols, config: lc,
    bpw: bitsPerWeight(lc, x.rows, x.cols),
    proxyLoss: proxy,
    relProxyLoss: ref > 0 ? proxy / ref : 0,
    notes,
    seconds: { quantize: tQuant, total: 0 },
  };
  if (opts.compare) {
    const baselines: Partial<Record<Method, number>> = { [lc.method]: proxy };
    const other = lc.method === 'rtn' ? 'gptq' : 'rtn';
    baselines[other] = layerProxyLoss(x.W, dequantizeStored(quantizeBaseline(x, { ...lc, actOrder: false }, other, [], () => {})), x.H, x.rows, x.cols);
    report.baselines = baselines;
  }
  report.seconds.total = now() - t0;
  return { wHat, stored, report };
}
