// Perplexity exactly per ../shared/protocol.md: non-overlapping windows of ctx tokens, each from an
// empty cache; NLL summed over the ctx − 1 predicted positions of every window;
// ppl = exp(total NLL / total positions). Float32 forward, float64 sums.
//
// Windows are processed block-major in chunks: a chunk's hidden states stay in memory while each
// block's weights are fetched once per chunk, so a lazy/disk weights provider is read
// numLayers × chunks times, not once per batch.

import { BATCH_TOKENS } from '../../protocol/memory_plan';
import type { WeightLayout } from './llama_graph';
import { ErrorCode } from '../../protocol/messages';
import { ProtocolError } from '../../protocol/rpc';
import type * as ort from 'onnxruntime-node';
import type { ComputeRuntime } from '../compute/runtime';
import { getRuntime } from '../compute/runtime';
import { evalWindowCount } from './calibration';
import type { ModelConfig } from './config';
import { checkWeights, LlamaForward, loadBlockWeights, type WeightsProvider } from './llama_forward';

export interface PerplexityOptions {
  ctx: number;
  /** Windows per session run (default: ~4096 tokens per run). */
  batch?: number;
  rt?: ComputeRuntime;
  /** Evaluate only these window indices (tests); default all floor(T/ctx). */
  windows?: readonly number[];
  /** Bytes of hidden states kept per chunk (default 512 MiB). */
  chunkBytes?: number;
  onProgress?: (doneWindows: number, totalWindows: number) => void;
  signal?: AbortSignal;
  /** Weight layout of the graphs (default: the runtime's, see WeightLayout); tests force 'in_out' on the CPU EP. */
  layout?: WeightLayout;
  /** A reference model of the same shape (the float model of a quantized one): also measure KL(reference ‖ model). */
  reference?: WeightsProvider;
}

export interface PerplexityResult {
  ppl: number;
  totalNll: number;
  positions: number;
  windows: number;
  seconds: number;
  tokensPerSecond: number;
  ep: string;
  /** Mean NLL per window (for per-window comparisons in tests). */
  windowNll: Float64Array;
  /** With a reference: the mean KL divergence (nats per predicted position) of this model's next-token
   * distribution from the reference's, over the same positions as the NLL. */
  kl?: number;
  windowKl?: Float64Array;
}

export function defaultBatch(ctx: number): number {
  return Math.max(1, Math.floor(BATCH_TOKENS / ctx));
}

export async function perplexity(cfg: ModelConfig, ids: Int32Array, weights: WeightsProvider, opts: PerplexityOptions): Promise<PerplexityResult> {
  const T = opts.ctx,
    H = cfg.hiddenSize;
  if (!(Number.isInteger(T) && T > 1)) throw new ProtocolError(ErrorCode.InvalidParams, `ctx must be an integer > 1, got ${T}`, 'ctx');
  const nAll = evalWindowCount(ids.length, T);
  const windows = opts.windows ? [...opts.windows] : Array.from({ length: nAll }, (_, i) => i);
  if (windows.length === 0) throw new ProtocolError(ErrorCode.BadCalibration, `text has ${ids.length} tokens, fewer than one window of ${T}`, 'text');
  for (const w of windows) if (!(w >= 0 && w < nAll)) throw new ProtocolError(ErrorCode.InvalidParams, `window ${w} out of range 0..${nAll - 1}`);
  const rt = opts.rt ?? (await getRuntime());
  const fwd = new LlamaForward(cfg, T, rt, opts.layout);
  const B = opts.batch ?? defaultBatch(T);
  const models = opts.reference ? 2 : 1; // a reference's hidden states are kept beside this model's
  const perChunk = Math.max(B, Math.floor((opts.chunkBytes ?? 512 * 2 ** 20) / (models * T * H * 4 * B)) * B);
  const t0 = performance.now();
  const windowNll = new Float64Array(windows.length);
  const windowKl = opts.reference ? new Float64Array(windows.length) : undefined;
  let total = 0,
    totalKl = 0;
  const own = await endTensors(cfg, fwd, rt, weights);
  const ref = opts.reference ? await endTensors(cfg, fwd, rt, opts.reference) : undefined;
  try {
    for (let c0 = 0; c0 < windows.length; c0 += perChunk) {
      const chunk = windows.slice(c0, c0 + perChunk);
      const batches: { ids: Int32Array; n: number; x: ort.Tensor; xRef?: ort.Tensor }[] = [];
      for (let b0 = 0; b0 < chunk.length; b0 += B) {
        const sel = chunk.slice(b0, b0 + B);
        const bIds = new Int32Array(sel.length * T);
        sel.forEach((w, i) => bIds.set(ids.subarray(w * T, (w + 1) * T), i * T));
        batches.push({
          ids: bIds,
          n: sel.length,
          x: await fwd.embedTensor(bIds, sel.length, own.embed),
          xRef: ref ? await fwd.embedTensor(bIds, sel.length, ref.embed) : undefined,
        });
      }
      for (let l = 0; l < cfg.numLayers; l++) {
        for (const [provider, which] of [[weights, 'x'], ...(opts.reference ? [[opts.reference, 'xRef']] : [])] as [WeightsProvider, 'x' | 'xRef'][]) {
          opts.signal?.throwIfAborted();
          const wT = await fwd.weightTensors(await loadBlockWeights(cfg, l, provider), l);
          for (const bt of batches) {
            const y = await fwd.blockTensor(bt[which]!, wT, l);
            fwd.release(bt[which]!);
            bt[which] = y;
          }
          fwd.release(wT);
        }
      }
      let done = c0;
      for (const bt of batches) {
        let nll: Float32Array, kl: Float32Array | undefined;
        if (ref) ({ nll, kl } = await fwd.headNllKl(bt.x, bt.xRef!, bt.n, bt.ids, { norm: own.norm, head: own.head, normRef: ref.norm, headRef: ref.head }));
        else nll = await fwd.headNll(bt.x, bt.n, bt.ids, own.norm, own.head);
        fwd.release(bt.x, bt.xRef);
        for (let i = 0; i < bt.n; i++) {
          let s = 0,
            k = 0;
          for (let t = 0; t < T - 1; t++) s += nll[i * (T - 1) + t];
          if (kl) for (let t = 0; t < T - 1; t++) k += kl[i * (T - 1) + t];
          if (!Number.isFinite(s) || !Number.isFinite(k))
            throw new ProtocolError(ErrorCode.NonFinite, `non-finite NLL in window ${chunk[done - c0 + i]}`, 'perplexity', 'the weights produce inf/NaN activations');
          windowNll[done + i] = s / (T - 1);
          total += s;
          if (windowKl) windowKl[done + i] = k / (T - 1);
          totalKl += k;
        }
        done += bt.n;
        opts.onProgress?.(done, windows.length);
      }
    }
  } finally {
    for (const t of ref ? [own, ref] : [own]) fwd.release(t.embed, t.norm, t.head === t.embed ? undefined : t.head);
  }
  const positions = windows.length * (T - 1);
  const seconds = (performance.now() - t0) / 1000;
  return {
    ppl: Math.exp(total / positions),
    totalNll: total,
    positions,
    windows: windows.length,
    seconds,
    tokensPerSecond: (windows.length * T) / seconds,
    ep: rt.ep,
    windowNll,
    ...(windowKl ? { kl: totalKl / positions, windowKl } : {}),
  };
}

/** A model's embedding, final norm and head, uploaded once (WebGPU); plain host tensors on the CPU EP. */
async function endTensors(cfg: ModelConfig, fwd: LlamaForward, rt: ComputeRuntime, weights: WeightsProvider): Promise<{ embed: ort.Tensor; norm: ort.Tensor; head: ort.Tensor }> {
  const embedW = await weights('model.embed_tokens.weight');
  checkWeights(embedW, 'model.embed_tokens.weight', [cfg.vocabSize, cfg.hiddenSize], cfg);
  const { norm, head } = await fwd.headWeights(weights);
  const embed = await rt.upload(rt.host(embedW, [cfg.vocabSize, cfg.hiddenSize]));
  return {
    embed,
    norm: await rt.upload(rt.host(norm, [cfg.hiddenSize])),
    // A tied head is the embedding itself, except on a GPU where it is transposed apart from it.
    head: head === embedW && fwd.layout === 'out_in' ? embed : await fwd.headTensor(head),
  };
}
