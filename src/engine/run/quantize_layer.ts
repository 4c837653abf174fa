// One linear layer through the configured method: the single place where the pipeline, the
// data-free path and layer/requantize call into quant/. Returns the reconstruction Ŵ (rebuilt from
// the stored parts: what later sub-layers, a resume and the exports all see), the stored parts
// and the LayerReport. Orchestration only: the math is in quant/.

import { bitsPerWeight, type LayerConfig, type Method } from '../../protocol/config';
import type { LayerDetails, LayerReport } from '../../protocol/messages';
import { rtnQuantize } from '../quant/rtn';
import { gptqQuantize, proxyLoss } from '../quant/gptq';
import { quantizeLayerLoPRo } from '../quant/lopro';
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
  /** mean_t |x_tj| (length cols) for LoPRo's activation scale α; undefined in data-free mode. */
  absMean?: Float64Array;
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

function quantizeBaseline(x: LayerInput, lc: LayerConfig, method: 'rtn' | 'gptq', notes: string[], warn: (m: string) => void): StoredLayer {
  const { rows, cols } = x;
  const q =
    method === 'rtn'
      ? rtnQuantize(x.W, rows, cols, { bits: lc.bits, groupSize: lc.groupSize, sym: lc.sym, clip: lc.clip })
      : gptqQuantize(x.W, rows, cols, x.H ?? identity(cols), {
          bits: lc.bits, groupSize: lc.groupSize, sym: lc.sym, clip: lc.clip, percDamp: lc.percDamp, blockSize: lc.blockSize,
          actOrder: lc.actOrder, staticGroups: lc.staticGroups, name: x.name,
          onWarning: (m) => {
            notes.push(m);
            warn(m);
          },
        });
  return baselineAsStored(q, rows, cols, lc, method === 'gptq' && (lc.actOrder || lc.staticGroups));
}

export interface QuantizeLayerOptions {
  seed: number;
  /** Also compute the RTN and GPTQ proxy losses on the same H (LayerReport.baselines). */
  compare?: boolean;
  warn?: (message: string) => void;
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
  const stored = quantizeBaseline(x, lc, lc.method, notes, warn);
  const wHat = dequantizeStored(stored);
  const tQuant = now() - t0;
  const proxy = layerProxyLoss(x.W, wHat, x.H, x.rows, x.cols);
  // tr(W H Wᵀ), the loss of Ŵ = 0 (‖W‖² when H = I, without a zero matrix).
  const ref = x.H ? proxyLoss(x.W, new Float32Array(x.W.length), x.H, x.rows, x.cols) : x.W.reduce((a, v) => a + v * v, 0);
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
