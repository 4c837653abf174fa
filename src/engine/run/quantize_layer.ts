// One linear layer through its configured method on the run's backend: the single place where the
// pipeline, the data-free path, layer/requantize and the benches call the quantization drivers. Returns Ŵ
// (rebuilt from the stored parts: what later sub-layers, a resume and the exports all see), the stored parts
// and the LayerReport (with the "same layer, other methods" numbers only when asked: `compare`).
// Orchestration only: the math is in quant/, the arithmetic in backend/.

import { bitsPerWeight, type LayerConfig, type Method } from '../../protocol/config';
import type { LayerDetails, LayerReport } from '../../protocol/messages';
import type { Backend, LayerSession, Mat } from '../quant/backend';
import { ErrorCode } from '../../protocol/messages';
import { ProtocolError } from '../../protocol/rpc';
import { rtn } from '../quant/rtn';
import { gptq } from '../quant/gptq';
import { lopro } from '../quant/lopro';
import { loproReport } from '../quant/report';
import { baselineAsStored, type StoredLayer } from './stored';

export interface LayerInput {
  name: string;
  block: number;
  module: string;
  rows: number;
  cols: number;
  /** W, rows×cols row-major float32 (as stored, widened). */
  W: Float32Array;
  /** H (cols×cols), or undefined in data-free mode (H = I). Float32 values are widened exactly by the CPU backend. */
  H?: Float64Array | Float32Array;
  /** float32(H) when the caller has it (the pipeline's Hessians): the GPU backend uploads it as is. */
  H32?: Float32Array;
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

export interface QuantizeLayerOptions {
  seed: number;
  /** Also the RTN and GPTQ proxy losses of the same layer on the same H (LayerReport.baselines). */
  compare?: boolean;
  warn?: (message: string) => void;
}

/** A per-layer seed from the run seed and the layer name (independent of processing order). */
export function layerSeed(seed: number, name: string): number {
  let h = 0x811c9dc5 ^ (seed >>> 0);
  for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 0x01000193) >>> 0;
  return h >>> 0;
}

const now = () => performance.now() / 1000;

export async function quantizeLayer(backend: Backend, x: LayerInput, lc: LayerConfig, opts: QuantizeLayerOptions): Promise<LayerOutcome> {
  const s = backend.session();
  try {
    const t0 = now();
    const W = await s.upload(x.W, x.rows, x.cols, 'W', x.name);
    const H = x.H ? await s.upload(x.H, x.cols, x.cols, 'H', x.name, x.H32) : await s.identity(x.cols);
    return lc.method === 'lopro' || lc.method === 'lopro_v' ? await loproLayer(s, x, W, H, lc, opts, t0) : await baselineLayer(s, x, W, H, lc, opts, t0);
  } finally {
    s.close();
  }
}

/**
 * Refuses, before any work, a model with a layer the backend cannot hold: its weight larger than the backend's
 * largest matrix (a GPU's largest buffer binding), or its cols×cols Hessian wider than its widest square matrix (a
 * few bindings). Without this a run would compute the blocks before that layer and fail there.
 */
export function assertBackendHolds(backend: Backend, layers: readonly { name: string; rows: number; cols: number }[]): void {
  const gib = (b: number) => (b / 2 ** 30).toFixed(2);
  const refuse = (name: string, why: string) => {
    throw new ProtocolError(ErrorCode.OutOfMemory, `${name}: ${why}`, name, 'use --backend cpu for this model');
  };
  for (const l of layers) {
    const weight = 4 * l.rows * l.cols,
      limit = backend.maxMatrixBytes;
    if (limit !== undefined && weight > limit)
      refuse(
        l.name,
        `its weight (${l.rows}×${l.cols} float32, ${gib(weight)} GiB) exceeds the largest matrix of the ${backend.label} backend (${gib(limit)} GiB, its largest buffer binding)`,
      );
    const n = backend.maxSquareCols;
    if (n !== undefined && l.cols > n)
      refuse(
        l.name,
        `its Hessian (${l.cols}×${l.cols} float32, ${gib(4 * l.cols * l.cols)} GiB) is wider than the ${backend.label} backend's widest square matrix (${n} columns, a few buffer bindings)`,
      );
  }
}

async function loproLayer(s: LayerSession, x: LayerInput, W: Mat, H: Mat, lc: LayerConfig, opts: QuantizeLayerOptions, t0: number): Promise<LayerOutcome> {
  const r = await lopro(s, W, H, x.absMean ?? null, lc, layerSeed(opts.seed, x.name), x.name);
  const wHat = await s.download(r.wHat);
  const tl = now();
  const losses = await s.proxyLosses(W, r.wHat, H);
  const seconds: Record<string, number> = { ...r.seconds, ...r.stageC.seconds, proxyLoss: now() - tl };
  const { report, details } = loproReport({
    W: x.W,
    cfg: lc,
    name: x.name,
    stored: r.stored,
    reconstructed: wHat,
    factors: r.factors,
    importance: r.importance,
    plan: r.plan,
    sampled: r.sampled,
    losses,
    notes: r.notes,
    seconds,
  });
  if (opts.compare) {
    const tb = now();
    Object.assign(report.baselines!, await otherMethods(s, x, W, H, lc, ['rtn', 'gptq']));
    seconds.baselines = now() - tb;
  } else delete report.baselines;
  report.block = x.block;
  report.module = x.module;
  seconds.total = now() - t0;
  return { wHat, stored: r.stored, report, details };
}

async function baselineLayer(s: LayerSession, x: LayerInput, W: Mat, H: Mat, lc: LayerConfig, opts: QuantizeLayerOptions, t0: number): Promise<LayerOutcome> {
  const notes: string[] = [];
  const warn = (m: string) => {
    notes.push(m);
    opts.warn?.(m);
  };
  const stored = await baselineStored(s, W, H, lc, x.name, warn);
  const What = await s.reconstruct(stored);
  const wHat = await s.download(What);
  const tQuant = now() - t0;
  const [loss, ref] = await s.proxyLosses(W, What, H);
  const tLoss = now() - t0 - tQuant;
  const report: LayerReport = {
    name: x.name,
    block: x.block,
    module: x.module,
    rows: x.rows,
    cols: x.cols,
    config: lc,
    bpw: bitsPerWeight(lc, x.rows, x.cols),
    proxyLoss: loss,
    relProxyLoss: ref > 0 ? loss / ref : 0,
    notes,
    seconds: { quantize: tQuant, proxyLoss: tLoss, total: 0 },
  };
  if (opts.compare) report.baselines = { [lc.method]: loss, ...(await otherMethods(s, x, W, H, lc, [lc.method === 'rtn' ? 'gptq' : 'rtn'])) };
  report.seconds.total = now() - t0;
  return { wHat, stored, report };
}

/** An RTN or GPTQ layer's stored parts (the native layout: rank 0, no rotation, identity permutation). */
async function baselineStored(s: LayerSession, W: Mat, H: Mat, lc: LayerConfig, name: string, warn: (m: string) => void): Promise<StoredLayer> {
  const { rows, cols } = W;
  if (lc.method === 'rtn') return baselineAsStored(await rtn(s, W, { bits: lc.bits, groupSize: lc.groupSize, sym: lc.sym, clip: lc.clip }), rows, cols, lc, false);
  const q = await gptq(s, W, H, {
    bits: lc.bits,
    groupSize: lc.groupSize,
    sym: lc.sym,
    clip: lc.clip,
    percDamp: lc.percDamp,
    blockSize: lc.blockSize,
    actOrder: lc.actOrder,
    staticGroups: lc.staticGroups,
    name,
    onWarning: warn,
  });
  return baselineAsStored(q, rows, cols, lc, lc.actOrder || lc.staticGroups);
}

/** The proxy losses of the same layer under other methods (same bits, group, sym, clip; act-order off). */
async function otherMethods(s: LayerSession, x: LayerInput, W: Mat, H: Mat, lc: LayerConfig, methods: Method[]): Promise<Partial<Record<Method, number>>> {
  const out: Partial<Record<Method, number>> = {};
  for (const method of methods) {
    const stored = await baselineStored(s, W, H, { ...lc, method, actOrder: false, staticGroups: false }, x.name, () => {});
    const What = await s.reconstruct(stored);
    out[method] = (await s.proxyLosses(W, What, H))[0];
    s.free(What);
  }
  return out;
}
