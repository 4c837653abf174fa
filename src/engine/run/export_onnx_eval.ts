// Perplexity of an exported .onnx model (export_onnx.ts), per ../shared/protocol.md, so the ONNX
// export is measured as exported: the file is loaded by ONNX Runtime, windows are
// batched through it, and a small second graph turns logits into per-position NLL (the engine's
// emitNll) so no [B, T, V] loop runs in JS.

import { statSync } from 'node:fs';
import * as ort from 'onnxruntime-node';
import { ErrorCode } from '../../protocol/messages';
import { ProtocolError } from '../../protocol/rpc';
import { GraphBuilder } from '../compute/graph';
import { getRuntime, type ComputeRuntime } from '../compute/runtime';
import { evalWindowCount } from '../model/calibration';
import { emitNll } from '../model/llama_graph';
import { defaultBatch, type PerplexityResult } from '../model/perplexity';

export interface OnnxPerplexityOptions {
  ctx: number;
  batch?: number;
  rt?: ComputeRuntime;
  windows?: readonly number[];
  onProgress?: (done: number, total: number) => void;
  signal?: AbortSignal;
}

/** logits [B, T, V] + targets [B, T−1] int32 → NLL [B, T−1] (same NLL ops as the engine's head). */
function nllGraph(): Uint8Array {
  const g = new GraphBuilder('nll_from_logits');
  const logits = g.input('logits', 'float32', ['B', 'T', 'V']);
  const targets = g.input('targets', 'int32', ['B', 'Tm1']);
  const head = g.op('Slice', [logits, g.constI64([0]), g.constI64([-1]), g.constI64([1])]);
  const flat = g.op('Reshape', [head, g.op('Concat', [g.constI64([-1]), g.op('Slice', [g.op('Shape', [logits]), g.constI64([2]), g.constI64([3])])], { axis: 0 })]);
  const nll = emitNll(g, flat, g.op('Reshape', [targets, g.constI64([-1, 1])]));
  g.output(g.op('Reshape', [nll, g.op('Shape', [targets])]), 'nll');
  return g.toModel();
}

/**
 * The generation inputs for B whole windows of T tokens with nothing cached (a model exported with the KV cache,
 * GENERATION_IO): every token real, positions 0..T−1, each past empty. None for a model without them.
 */
export function fullWindowCacheFeeds(session: ort.InferenceSession, B: number, T: number): Record<string, ort.Tensor> {
  const feeds: Record<string, ort.Tensor> = {};
  if (!session.inputNames.includes('attention_mask')) return feeds;
  feeds.attention_mask = new ort.Tensor('int64', new BigInt64Array(B * T).fill(1n), [B, T]);
  const pos = new BigInt64Array(B * T);
  for (let i = 0; i < B * T; i++) pos[i] = BigInt(i % T);
  feeds.position_ids = new ort.Tensor('int64', pos, [B, T]);
  return Object.assign(feeds, emptyPast(session, B));
}

/** Every past_key_values input of an exported model with nothing cached yet ([B, kv_heads, 0, head_dim]). */
export function emptyPast(session: ort.InferenceSession, B: number): Record<string, ort.Tensor> {
  const past: Record<string, ort.Tensor> = {};
  for (const [name, d] of pastShapes(session)) past[name] = new ort.Tensor('float32', new Float32Array(0), [B, d.kvHeads, 0, d.headDim]);
  return past;
}

/** Each past_key_values input of an exported model with its fixed dims (heads, head size) from the model's metadata. */
function pastShapes(session: ort.InferenceSession): Map<string, { kvHeads: number; headDim: number }> {
  const out = new Map<string, { kvHeads: number; headDim: number }>();
  for (const m of session.inputMetadata) {
    if (!m.name.startsWith('past_key_values.')) continue;
    const shape = m.isTensor ? m.shape : [];
    if (shape.length !== 4 || typeof shape[1] !== 'number' || typeof shape[3] !== 'number')
      throw new ProtocolError(ErrorCode.BadCheckpoint, `ONNX model input ${m.name}: shape [${shape.join(', ')}], expected [batch, kv_heads, past, head_dim]`, m.name);
    out.set(m.name, { kvHeads: shape[1], headDim: shape[3] });
  }
  return out;
}

export async function perplexityOnnx(onnxPath: string, ids: Int32Array, opts: OnnxPerplexityOptions): Promise<PerplexityResult> {
  const T = opts.ctx;
  const nAll = evalWindowCount(ids.length, T);
  const windows = opts.windows ? [...opts.windows] : Array.from({ length: nAll }, (_, i) => i);
  if (!windows.length) throw new ProtocolError(ErrorCode.BadCalibration, `text has ${ids.length} tokens, fewer than one window of ${T}`, 'text');
  const rt = opts.rt ?? (await getRuntime());
  let mtime: number;
  try {
    mtime = statSync(onnxPath).mtimeMs;
  } catch (e) {
    throw new ProtocolError(ErrorCode.Io, `cannot read ${onnxPath}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`, onnxPath);
  }
  // Logits stay on the GPU (WebGPU) between the model and the NLL graph: [B, T, V] never crosses to JS.
  const model = await rt.session(`onnx-file:${onnxPath}:${mtime}`, () => onnxPath, rt.keepsDataOnDevice ? 'device' : 'host');
  const nll = await rt.session('nll_from_logits', nllGraph);
  const B = opts.batch ?? defaultBatch(T);
  const t0 = performance.now();
  const windowNll = new Float64Array(windows.length);
  // The same for every batch of a size (the last may be smaller).
  const cacheFeeds = new Map<number, Record<string, ort.Tensor>>();
  let total = 0;
  for (let b0 = 0; b0 < windows.length; b0 += B) {
    opts.signal?.throwIfAborted();
    const sel = windows.slice(b0, b0 + B);
    const input = new BigInt64Array(sel.length * T);
    const targets = new Int32Array(sel.length * (T - 1));
    sel.forEach((w, i) => {
      for (let t = 0; t < T; t++) input[i * T + t] = BigInt(ids[w * T + t]);
      targets.set(ids.subarray(w * T + 1, (w + 1) * T), i * (T - 1));
    });
    if (!cacheFeeds.has(sel.length)) cacheFeeds.set(sel.length, fullWindowCacheFeeds(model, sel.length, T));
    const out = await rt.run(model, { input_ids: new ort.Tensor('int64', input, [sel.length, T]), ...cacheFeeds.get(sel.length) });
    const r = await rt.run(nll, { logits: out.logits, targets: new ort.Tensor('int32', targets, [sel.length, T - 1]) });
    rt.release(...Object.values(out));
    const v = r.nll.data as Float32Array;
    for (let i = 0; i < sel.length; i++) {
      let s = 0;
      for (let t = 0; t < T - 1; t++) s += v[i * (T - 1) + t];
      windowNll[b0 + i] = s / (T - 1);
      total += s;
    }
    opts.onProgress?.(Math.min(b0 + B, windows.length), windows.length);
  }
  const positions = windows.length * (T - 1);
  const seconds = (performance.now() - t0) / 1000;
  return { ppl: Math.exp(total / positions), totalNll: total, positions, windows: windows.length, seconds, tokensPerSecond: (windows.length * T) / seconds, ep: rt.ep, windowNll };
}
