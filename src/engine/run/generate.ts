// Text generation through the ONNX model with its KV cache (export_onnx.ts GENERATION_IO): the prompt in one
// call (prefill), then one call per token with the cache the previous call returned (decode), until an
// end-of-sequence id or the token limit. The same path serves an ONNX export (its model.onnx), a run or native
// folder (the export graph built in memory from the stored layers) and a float model folder (dense linears):
// what "Try it" compares is the same graph with different linears.

import { IncrementalDetokenizer } from '../model/detokenize';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import * as ort from 'onnxruntime-node';
import { ErrorCode, type GenerateResultData, type GenerationSource } from '../../protocol/messages';
import { ProtocolError } from '../../protocol/rpc';
import type { ComputeRuntime, OutputPlacement } from '../compute/runtime';
import { openCheckpoint } from '../io/checkpoint';
import { parseConfigText } from '../io/config_json';
import { readLoproLayer } from '../io/lopro_format';
import { loadModelConfig, type ModelConfig } from '../model/config';
import { GREEDY, sampleToken, type Sampling } from '../model/sampling';
import { loadTokenizer, type LoadedTokenizer } from '../model/tokenizer';
import { mulberry32 } from '../util/random';
import { buildOnnxModel } from './export_onnx';
import { emptyPast } from './export_onnx_eval';
import { isNativeDir, openNativeModel } from './native';
import { RunDir } from './rundir';

export interface GenerationModel {
  /** The folder whose config and tokenizer are used. */
  dir: string;
  /** What runs: an ONNX export's file, or the graph built from a native or float folder. */
  source: GenerationSource;
  cfg: ModelConfig;
  tokenizer: LoadedTokenizer;
  /** Ids that end a generation: config.json's and generation_config.json's eos_token_id. */
  eos: ReadonlySet<number>;
  session: ort.InferenceSession;
  rt: ComputeRuntime;
}

export interface GenerateOptions {
  maxTokens: number;
  sampling?: Sampling;
  /** Seed of the draws when sampling (default 0). */
  seed?: number;
  signal?: AbortSignal;
  /** Stop at an end-of-sequence id (default true; benchmarks decode a fixed count). */
  stopAtEos?: boolean;
  /** Each new piece of text as soon as it decodes to whole characters. */
  onText?: (delta: string, tokens: number) => void;
}

/** What a generation returns: the protocol's result without the model's source (the caller knows it). */
export type GenerateResult = Omit<GenerateResultData, 'source'>;

/** The cache's output names for `numLayers` blocks. */
const presentNames = (numLayers: number) => Array.from({ length: numLayers }, (_, b) => [`present.${b}.key`, `present.${b}.value`]).flat();

/** end-of-sequence ids of a model folder: eos_token_id of config.json and of generation_config.json (number or list). */
export function eosIds(dir: string): Set<number> {
  const ids = new Set<number>();
  for (const f of ['config.json', 'generation_config.json']) {
    const p = join(dir, f);
    if (!existsSync(p)) continue;
    const v = parseConfigText(readFileSync(p, 'utf8')).eos_token_id;
    for (const id of Array.isArray(v) ? v : [v]) if (typeof id === 'number' && Number.isInteger(id)) ids.add(id);
  }
  return ids;
}

/**
 * Opens what `path` names for generation: a run folder (its quantized model), an ONNX export folder, a native
 * folder or a float model folder.
 */
export async function openGenerationModel(path: string, rt: ComputeRuntime): Promise<GenerationModel> {
  let dir = resolve(path);
  if (existsSync(join(dir, 'run.json'))) {
    const m = new RunDir(dir).readManifest();
    if (m.kind !== 'llama' || !m.complete)
      throw new ProtocolError(
        ErrorCode.InvalidParams,
        m.kind !== 'llama' ? `${dir} quantized bare tensors: there is no model to run` : `${dir} is an unfinished run (${m.completedBlocks}/${m.numBlocks} blocks)`,
        dir,
        m.kind !== 'llama' ? 'generation needs a run of a model folder' : 'finish it with `lopro quantize … --resume` first',
      );
    dir = join(dir, 'native');
  }
  if (!existsSync(join(dir, 'config.json')))
    throw new ProtocolError(ErrorCode.BadConfig, `${dir} has no config.json`, dir, 'pass a run directory, an ONNX export folder, a native folder or a Hugging Face model folder');
  const cfg = loadModelConfig(dir);
  const tokenizer = loadTokenizer(dir);
  // Keys and values stay on the device between calls where the EP can keep them there (WebGPU); logits come home.
  const placement: OutputPlacement = rt.keepsDataOnDevice ? Object.fromEntries([['logits', 'host'], ...presentNames(cfg.numLayers).map((n) => [n, 'device'])]) : 'host';
  const onnx = join(dir, 'model.onnx');
  let session: ort.InferenceSession, source: GenerationModel['source'];
  if (existsSync(onnx)) {
    source = 'onnx export';
    session = await rt.session(`generate:${onnx}:${statSync(onnx).mtimeMs}`, () => onnx, placement);
    if (!session.inputNames.includes('past_key_values.0.key'))
      throw new ProtocolError(
        ErrorCode.InvalidParams,
        `${onnx} was exported without the KV cache`,
        onnx,
        'export the run again (lopro export RUN --format onnx) to generate with it',
      );
  } else {
    const native = isNativeDir(dir);
    source = native ? 'native (quantized)' : 'float';
    const bytes = await graphOfFolder(dir, cfg, native);
    session = await rt.session(`generate:${dir}:${Date.now()}`, () => bytes, placement);
  }
  const m: GenerationModel = { dir, source, cfg, tokenizer, eos: eosIds(dir), session, rt };
  // One short call first: ORT sizes its buffers and (GPU EPs) compiles its kernels on a session's first runs, which
  // would otherwise be counted as the first prompt's prefill.
  await generate(m, Int32Array.of(0, 1), { maxTokens: 2, stopAtEos: false });
  return m;
}

/** The export graph of a native or float folder, in memory. */
async function graphOfFolder(dir: string, cfg: ModelConfig, native: boolean): Promise<Uint8Array> {
  const maxPositions = Math.min(cfg.maxPositions, 8192);
  if (native) {
    const nat = openNativeModel(dir);
    try {
      const layers = new Set(nat.layers);
      return (await buildOnnxModel({ cfg, weights: (n) => nat.readFloat32(n), layers: (n) => (layers.has(n) ? readLoproLayer(nat.file, n) : undefined) }, { maxPositions })).bytes;
    } finally {
      nat.close();
    }
  }
  const ckpt = openCheckpoint(dir);
  try {
    return (await buildOnnxModel({ cfg, weights: (n) => ckpt.readFloat32(n), layers: () => undefined }, { maxPositions })).bytes;
  } finally {
    ckpt.close();
  }
}

const i64 = (values: ArrayLike<number>, dims: number[]) => new ort.Tensor('int64', BigInt64Array.from(Array.from(values, BigInt)), dims);

/** Generates from `prompt`: text (tokenized without special tokens, as the protocol does) or token ids. */
export async function generate(m: GenerationModel, prompt: string | Int32Array, opts: GenerateOptions): Promise<GenerateResult> {
  const { cfg, rt, session } = m;
  const ids = typeof prompt === 'string' ? m.tokenizer.encode(prompt) : prompt;
  if (!ids.length) throw new ProtocolError(ErrorCode.InvalidParams, 'the prompt is empty (no tokens)', '--prompt');
  if (!(opts.maxTokens >= 1)) throw new ProtocolError(ErrorCode.InvalidParams, `--max-tokens must be at least 1, got ${opts.maxTokens}`, '--max-tokens');
  const limit = Math.min(cfg.maxPositions, 8192);
  if (ids.length + opts.maxTokens > limit)
    throw new ProtocolError(ErrorCode.InvalidParams, `prompt (${ids.length} tokens) + ${opts.maxTokens} new tokens exceed the ${limit} positions the model covers`, '--max-tokens');
  const sampling = opts.sampling ?? GREEDY;
  const rand = mulberry32(opts.seed ?? 0);
  const V = cfg.vocabSize;
  const P = ids.length;
  let past = emptyPast(session, 1);

  const tokens: number[] = [];
  let text = '';
  const detok = new IncrementalDetokenizer((t) => m.tokenizer.decode(t));
  const emit = (last = false) => {
    const piece = last ? detok.flush(tokens) : detok.next(tokens);
    if (piece) {
      opts.onText?.(piece, tokens.length);
      text += piece;
    }
  };
  const step = async (input: ArrayLike<number>, pos0: number): Promise<number> => {
    if (opts.signal?.aborted) throw new ProtocolError(ErrorCode.Cancelled, 'generation cancelled');
    const T = input.length;
    const out = await rt.run(session, {
      input_ids: i64(input, [1, T]),
      attention_mask: new ort.Tensor('int64', new BigInt64Array(pos0 + T).fill(1n), [1, pos0 + T]),
      position_ids: i64(
        Array.from({ length: T }, (_, i) => pos0 + i),
        [1, T],
      ),
      ...past,
    });
    rt.release(...Object.values(past));
    past = {};
    for (const [name, t] of Object.entries(out)) if (name.startsWith('present.')) past[name.replace('present.', 'past_key_values.')] = t;
    const logits = (out.logits.data as Float32Array).subarray((T - 1) * V, T * V);
    return sampleToken(logits, sampling, rand());
  };

  let stop: GenerateResult['stop'] = 'max_tokens';
  const t0 = performance.now();
  let t1 = t0;
  try {
    let next = await step(ids, 0);
    t1 = performance.now();
    for (;;) {
      tokens.push(next);
      emit();
      if (opts.stopAtEos !== false && m.eos.has(next)) {
        stop = 'eos';
        break;
      }
      if (tokens.length >= opts.maxTokens) break;
      next = await step([next], P + tokens.length - 1);
    }
    emit(true);
  } finally {
    rt.release(...Object.values(past));
  }
  const t2 = performance.now();
  const prefillSeconds = (t1 - t0) / 1000,
    decodeSeconds = (t2 - t1) / 1000;
  return {
    promptTokens: P,
    tokens,
    text,
    stop,
    prefillSeconds,
    decodeSeconds,
    prefillTokensPerSecond: P / prefillSeconds,
    decodeTokensPerSecond: tokens.length > 1 ? (tokens.length - 1) / decodeSeconds : 0,
    ep: rt.ep,
  };
}
