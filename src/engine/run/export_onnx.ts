// ONNX export (the third format): one self-contained .onnx model that plain ONNX Runtime runs: logits
// [B, T, V] from input_ids [B, T] (int64) and, for generation, the KV cache in and out (GENERATION_IO). The decoder is the engine's own graph
// (model/llama_graph.ts emitters) with every quantized linear emitted from its stored parts
// (export_onnx_linear.ts): MatMulNBits for 4-bit codes, the permutation as Gather, the block
// FWHT as a MatMul per block, the low-rank branch as two Gemms; other bit widths dequantize
// their codes inside the graph. Norms stay float32; the embedding and head float16 where that is exact
// (an F16 checkpoint's values), else float32.
//
// Models past 1 GiB of weights keep them in model.onnx.data beside model.onnx (external data; a protobuf stops at 2 GiB).

import { copyFileSync, existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { ErrorCode } from '../../protocol/messages';
import { ProtocolError } from '../../protocol/rpc';
import { GraphBuilder, type Value } from '../compute/graph';
import { atomicWriteFile, atomicWriteFileAsync } from '../io/atomic';
import { readLoproLayer } from '../io/lopro_format';
import type { LoproStoredLayer } from '../quant/lopro_dequant';
import { bf16ToF32Array, f16ToF32Array, f32ArrayToBf16, f32ArrayToF16 } from '../io/dtypes';
import { blockLinears, expectedShapes, headTensorName, loadModelConfig, statKey, type ModelConfig } from '../model/config';
import type { WeightsProvider } from '../model/llama_forward';
import { emitBlock, emitBlockConsts, emitCachedConsts, emitHead, type KvPair, type LinearEmitter, type TensorEmitter } from '../model/llama_graph';
import { emitDenseLinear, emitLoproLinear, type LinearKind, type LoproSibling } from './export_onnx_linear';
import { openNativeModel, SIDE_FILES } from './native';

/** A quantized layer as stored (LoPRo parts; RTN/GPTQ are rank 0, no rotation) or a dense Ŵ. */
export type OnnxLayerSource = LoproStoredLayer | Float32Array;

export interface OnnxExportModel {
  cfg: ModelConfig;
  /** Float tensors: embedding, norms, head, biases, and any linear `layers` does not supply. */
  weights: WeightsProvider;
  /** Layer name (e.g. model.layers.0.self_attn.q_proj) → its stored parts; undefined = dense from `weights`. */
  layers: (name: string) => OnnxLayerSource | undefined | Promise<OnnxLayerSource | undefined>;
}

export interface OnnxExportOptions {
  /** com.microsoft MatMulNBits for 2-, 3- (in the 4-bit container), 4- and 8-bit residuals (default true). */
  matMulNBits?: boolean;
  /**
   * Float activations into MatMulNBits (accuracy_level 0) instead of the default int8 blocks (4): exact to the
   * run's numbers, but the CPU EP has no fast 2-bit kernel for float activations.
   */
  floatActivations?: boolean;
  /**
   * 2-bit codes in MatMulNBits' 4-bit container (twice the codes' bytes): for execution providers without a working
   * 2-bit kernel.
   */
  fourBitContainer?: boolean;
  /** Longest sequence the rope tables cover (default min(max_position_embeddings, 8192)). */
  maxPositions?: number;
  /**
   * The generation interface (default true): inputs attention_mask and position_ids and each block's past keys
   * and values, outputs each block's present ones beside the logits (see GENERATION_IO). false: input_ids → logits only.
   */
  kvCache?: boolean;
  /** Bytes of weights above which they go to model.onnx.data (default 1 GiB; 0 = always). */
  externalDataAbove?: number;
}

/**
 * The exported model's inputs and outputs, in onnxruntime-genai's names: one graph serves the prompt (past of
 * length 0) and each decoded token (past = the previous call's present). Keys are stored after RoPE.
 */
export const GENERATION_IO = {
  inputs: {
    input_ids: 'int64 [batch, sequence]',
    attention_mask: 'int64 [batch, past_sequence + sequence] (1 = token, 0 = padding)',
    position_ids: 'int64 [batch, sequence]',
    'past_key_values.N.key / .value': 'float32 [batch, num_key_value_heads, past_sequence, head_dim]',
  },
  outputs: {
    logits: 'float32 [batch, sequence, vocab]',
    'present.N.key / .value': 'float32 [batch, num_key_value_heads, past_sequence + sequence, head_dim]',
  },
} as const;

export interface OnnxExportResult {
  path: string;
  bytes: number;
  /** How many linears became each op pattern. */
  kinds: Record<LinearKind, number>;
}

const PROTOBUF_LIMIT = 2 ** 31 - 1;
/** Above this many bytes of initializers an export keeps them in model.onnx.data (a protobuf stops at 2 GiB). */
const SINGLE_FILE_BYTES = 2 ** 30;

/** Builds the model bytes in memory (no file written): single-file models only, see exportOnnx for larger ones. */
export async function buildOnnxModel(model: OnnxExportModel, opts: OnnxExportOptions = {}): Promise<{ bytes: Uint8Array; kinds: Record<LinearKind, number> }> {
  const { g, kinds } = await emitOnnxModel(model, opts, PROTOBUF_LIMIT);
  return { bytes: g.toModel(), kinds };
}

/** The model's graph; past `limit` bytes of initializers it stops with an error naming the block. */
async function emitOnnxModel(model: OnnxExportModel, opts: OnnxExportOptions, limit: number): Promise<{ g: GraphBuilder; kinds: Record<LinearKind, number>; initBytes: number }> {
  const { cfg } = model;
  const maxPos = opts.maxPositions ?? Math.min(cfg.maxPositions, 8192);
  const linOpts = {
    matMulNBits: opts.matMulNBits ?? true,
    accuracyLevel: opts.floatActivations ? (0 as const) : (4 as const),
    minMatMulNBits: opts.fourBitContainer ? (4 as const) : (2 as const),
  };
  const kinds: Record<LinearKind, number> = { dense: 0, matmulnbits: 0, dequant: 0, codebook: 0 };
  const g = new GraphBuilder('lopro_llama');
  g.useDomain('com.microsoft', 1);
  let initBytes = 0;
  const init = (name: string, data: Float32Array, dims: number[]): Value => {
    initBytes += data.byteLength;
    return g.initializer(name, data, dims);
  };
  // A large float matrix (embedding, head) every value of which is a float16 or a bfloat16 (an F16 or BF16
  // checkpoint's) is stored in that type with a Cast: half the file, the same numbers (ORT folds the Cast at load).
  const matrixInit = (name: string, data: Float32Array, dims: number[]): Value => {
    for (const [dtype, to, from] of [
      ['float16', f32ArrayToF16, f16ToF32Array],
      ['bfloat16', f32ArrayToBf16, bf16ToF32Array],
    ] as const) {
      const h = to(data);
      const back = from(h);
      if (!back.every((v, i) => Object.is(v, data[i]))) continue;
      initBytes += h.byteLength;
      return g.op('Cast', [g.initializer(name, h, dims, dtype)], { to: 1 });
    }
    return init(name, data, dims);
  };
  const kvCache = opts.kvCache ?? true;
  const ids = g.input('input_ids', 'int64', ['batch', 'sequence']);
  const embed = matrixInit('model.embed_tokens.weight', await model.weights('model.embed_tokens.weight'), [cfg.vocabSize, cfg.hiddenSize]);
  let x = g.op('Gather', [embed, ids], { axis: 0 });
  const consts = kvCache
    ? emitCachedConsts(g, cfg, x, g.input('position_ids', 'int64', ['batch', 'sequence']), g.input('attention_mask', 'int64', ['batch', 'total_sequence']), maxPos)
    : emitBlockConsts(g, cfg, x, maxPos);
  const presents: KvPair[] = [];
  for (let b = 0; b < cfg.numLayers; b++) {
    // Fetch everything first: the emitters are synchronous, providers may not be.
    const tensors = new Map<string, Float32Array>();
    const sources = new Map<string, OnnxLayerSource>();
    for (const lin of blockLinears(cfg, b)) sources.set(lin.name, (await model.layers(lin.name)) ?? (await model.weights(lin.weight)));
    // Norms, biases, q/k norms, routers: every block tensor that is not a quantized linear's weight.
    const weightNames = new Set(blockLinears(cfg, b).map((l) => l.weight));
    for (const n of expectedShapes(cfg, b).keys()) if (!weightNames.has(n)) tensors.set(n, await model.weights(n));
    const tensor: TensorEmitter = (_gb, name, shape) => {
      const v = tensors.get(name);
      if (!v) throw new ProtocolError(ErrorCode.Internal, `ONNX export: tensor ${name} was not fetched`, name);
      return init(name, v, shape);
    };
    // The quantized layers that read the same input (q, k, v; gate, up; an expert's gate, up): their permutation,
    // rotation and low-rank first product run once for all of them (export_onnx_linear.ts sharedPrefix).
    const siblings = new Map<string, LoproSibling[]>();
    for (const lin of blockLinears(cfg, b)) {
      const src = sources.get(lin.name)!;
      if (src instanceof Float32Array) continue;
      const k = statKey(lin);
      siblings.set(k, [...(siblings.get(k) ?? []), { name: lin.name, s: src }]);
    }
    const linear: LinearEmitter = (gb, lin, xin, bias) => {
      const src = sources.get(lin.name)!;
      if (src instanceof Float32Array) {
        if (src.length !== lin.rows * lin.cols) throw new ProtocolError(ErrorCode.ShapeMismatch, `${lin.name}: ${src.length} values, expected ${lin.rows}×${lin.cols}`, lin.name);
        kinds.dense++;
        initBytes += src.byteLength;
        return emitDenseLinear(gb, lin.name, src, lin.rows, lin.cols, xin, bias);
      }
      if (src.rows !== lin.rows || src.cols !== lin.cols)
        throw new ProtocolError(ErrorCode.ShapeMismatch, `${lin.name}: stored layer is ${src.rows}×${src.cols}, model expects ${lin.rows}×${lin.cols}`, lin.name);
      const r = emitLoproLinear(gb, lin.name, src, xin, bias, linOpts, siblings.get(statKey(lin)));
      kinds[r.kind]++;
      initBytes += src.rows * src.cols * (r.kind === 'matmulnbits' ? 0.5 : r.kind === 'dequant' ? 1 : 4);
      return r.y;
    };
    const cacheDims = ['batch', cfg.numKvHeads, 'past_sequence', cfg.headDim];
    const past = kvCache ? { key: g.input(`past_key_values.${b}.key`, 'float32', cacheDims), value: g.input(`past_key_values.${b}.value`, 'float32', cacheDims) } : null;
    const out = emitBlock(g, cfg, b, x, consts, linear, tensor, past);
    x = out.y;
    if (out.present) presents.push(out.present);
    if (initBytes > limit)
      throw new ProtocolError(
        ErrorCode.InvalidParams,
        `the model exceeds the 2 GiB a single ONNX protobuf can hold (block ${b})`,
        'onnx',
        'export it to ONNX first (lopro export RUN --format onnx): larger exports keep their weights in model.onnx.data',
      );
  }
  const norm = init('model.norm.weight', await model.weights('model.norm.weight'), [cfg.hiddenSize]);
  const head = cfg.tiedHead ? embed : matrixInit(headTensorName(cfg), await model.weights(headTensorName(cfg)), [cfg.vocabSize, cfg.hiddenSize]);
  // The head [V, H] through a Transpose ORT folds at load, then MatMul (see export_onnx_linear.ts matmulWt).
  const headT = g.op('Transpose', [head], { perm: [1, 0] });
  g.output(emitHead(g, cfg, x, norm, headT, null, 'in_out'), 'logits', ['batch', 'sequence', cfg.vocabSize]);
  presents.forEach((p, b) => {
    const dims = ['batch', cfg.numKvHeads, 'total_sequence', cfg.headDim];
    g.output(p.key, `present.${b}.key`, dims);
    g.output(p.value, `present.${b}.value`, dims);
  });
  return { g, kinds, initBytes };
}

/**
 * Writes the model to `outPath` atomically; past 1 GiB of weights they go to `<outPath>.data` beside it (ONNX
 * external data, written first: a model file never names a data file that is not complete).
 */
export async function exportOnnx(model: OnnxExportModel, outPath: string, opts: OnnxExportOptions = {}): Promise<OnnxExportResult> {
  const { g, kinds, initBytes } = await emitOnnxModel(model, opts, Number.POSITIVE_INFINITY);
  if (initBytes <= (opts.externalDataAbove ?? SINGLE_FILE_BYTES)) {
    const bytes = g.toModel();
    atomicWriteFile(outPath, bytes);
    return { path: outPath, bytes: bytes.byteLength, kinds };
  }
  const dataPath = `${outPath}.data`;
  const { model: bytes, pieces, dataBytes } = g.toModelWithExternalData(basename(dataPath));
  const parts: Uint8Array[] = [];
  let at = 0;
  for (const p of pieces) {
    if (p.offset > at) parts.push(new Uint8Array(p.offset - at));
    parts.push(p.bytes);
    at = p.offset + p.bytes.byteLength;
  }
  await atomicWriteFileAsync(dataPath, parts);
  atomicWriteFile(outPath, bytes);
  return { path: outPath, bytes: bytes.byteLength + dataBytes, kinds };
}

/**
 * Export of a native LoPRo folder (config.json + model.safetensors with `.lopro.*` layers) to
 * `<outDir>/model.onnx`, with config.json and the tokenizer files copied beside it.
 */
export async function exportOnnxFromNative(nativeDir: string, outDir: string, opts: OnnxExportOptions = {}): Promise<OnnxExportResult> {
  const cfg = loadModelConfig(nativeDir);
  const native = openNativeModel(nativeDir);
  try {
    const layerSet = new Set(native.layers);
    mkdirSync(outDir, { recursive: true });
    const res = await exportOnnx(
      { cfg, weights: (n) => native.readFloat32(n), layers: (n) => (layerSet.has(n) ? readLoproLayer(native.file, n) : undefined) },
      join(outDir, 'model.onnx'),
      opts,
    );
    for (const f of ['config.json', ...SIDE_FILES]) if (existsSync(join(nativeDir, f))) copyFileSync(join(nativeDir, f), join(outDir, f));
    // The size the bits promise: the native file's quantized layers (bit-packed codes, group parameters,
    // factors, permutation, α) plus its float tensors, against the ONNX file.
    let quantizedBytes = 0,
      floatBytes = 0;
    for (const e of native.file.entries) {
      if (e.name.includes('.lopro.')) quantizedBytes += e.byteLength;
      else floatBytes += e.byteLength;
    }
    writeFileSync(
      join(outDir, 'onnx_export.json'),
      JSON.stringify(
        {
          model: 'model.onnx',
          ...((opts.kvCache ?? true) ? GENERATION_IO : { inputs: { input_ids: 'int64 [batch, sequence]' }, outputs: { logits: 'float32 [batch, sequence, vocab]' } }),
          linears: res.kinds,
          size: { onnxBytes: res.bytes, nativeQuantizedBytes: quantizedBytes, nativeFloatBytes: floatBytes, ratio: res.bytes / (quantizedBytes + floatBytes) },
        },
        null,
        2,
      ) + '\n',
    );
    return res;
  } finally {
    native.close();
  }
}
