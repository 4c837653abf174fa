// model/inspect: what a path holds — a Hugging Face model folder of a supported family (config.json + safetensors) or a
// bare safetensors file (data-free mode: every 2-D float tensor is a quantizable "linear").

import { existsSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { ErrorCode, type Dtype, type LinearLayerInfo, type ModelSummary } from '../../protocol/messages';
import { ProtocolError } from '../../protocol/rpc';
import { openCheckpoint, type Checkpoint } from '../io/checkpoint';
import { isFloatDtype } from '../io/safetensors';
import { checkModelTensors, loadModelConfig, type BlockLinear, type ModelConfig } from '../model/config';
import { protocolCtx } from '../model/calibration';

export interface OpenedModel {
  summary: ModelSummary;
  ckpt: Checkpoint;
  /** Llama folders only. */
  cfg?: ModelConfig;
  /** Quantizable linears with their weight tensor and input (bare files: input 'attn_in', unused). */
  linears: BlockLinear[];
}

/** Opens a model for quantization; the caller closes `ckpt`. Errors name the file or tensor. */
export function openModel(path: string, ctxOverride = 0): OpenedModel {
  const abs = resolve(path);
  let st: ReturnType<typeof statSync>;
  try {
    st = statSync(abs);
  } catch {
    throw new ProtocolError(ErrorCode.Io, `${abs} does not exist`, abs, 'pass a .safetensors file or a Hugging Face model folder');
  }
  const isDir = st.isDirectory();
  if (!isDir && !abs.endsWith('.safetensors'))
    throw new ProtocolError(ErrorCode.BadCheckpoint, `${abs} is not a .safetensors file or a model folder`, abs, 'pass a .safetensors file or a Hugging Face model folder');
  const ckpt = openCheckpoint(abs);
  try {
    const dtypes = [...new Set(ckpt.entries.map((e) => e.dtype))].sort() as Dtype[];
    const params = ckpt.entries.reduce((s, e) => s + e.numel, 0);
    const files = [...ckpt.files];
    if (isDir && existsSync(join(abs, 'config.json'))) {
      const cfg = loadModelConfig(abs);
      const linears = checkModelTensors(
        cfg,
        (n) => (ckpt.has(n) ? ckpt.entry(n).shape : undefined),
        abs,
        ckpt.entries.map((e) => e.name),
      );
      for (const l of linears) {
        const e = ckpt.entry(l.weight);
        if (!isFloatDtype(e.dtype))
          throw new ProtocolError(
            ErrorCode.UnsupportedDtype,
            `tensor ${l.weight} has dtype ${e.dtype}; only F32/F16/BF16 weights can be quantized`,
            `${e.file}: ${l.weight}`,
            'is this checkpoint already quantized?',
          );
      }
      return {
        ckpt,
        cfg,
        linears,
        summary: {
          path: abs,
          kind: 'llama',
          family: cfg.family,
          files,
          totalBytes: ckpt.totalBytes,
          params,
          dtypes,
          numBlocks: cfg.numLayers,
          attentionHeads: cfg.numHeads,
          linears: linears.map(strip),
          ctx: protocolCtx(cfg.maxPositions, ctxOverride),
        },
      };
    }
    if (isDir && !existsSync(join(abs, 'config.json')))
      throw new ProtocolError(
        ErrorCode.BadConfig,
        `${abs} has no config.json`,
        join(abs, 'config.json'),
        'a model folder needs config.json; to quantize tensors data-free, pass the .safetensors file itself',
      );
    // Bare file: every 2-D float tensor, each its own checkpoint unit ("block").
    const linears: BlockLinear[] = [];
    for (const e of ckpt.entries) {
      if (e.shape.length !== 2 || !isFloatDtype(e.dtype) || e.numel === 0) continue;
      linears.push({
        name: e.name.replace(/\.weight$/, ''),
        block: linears.length,
        module: e.name.split('.').slice(-2, -1)[0] ?? e.name,
        rows: e.shape[0],
        cols: e.shape[1],
        weight: e.name,
        input: 'attn_in',
      });
    }
    if (!linears.length) throw new ProtocolError(ErrorCode.BadCheckpoint, `${abs} holds no 2-D float tensor to quantize`, abs, 'data-free mode quantizes F32/F16/BF16 matrices');
    return {
      ckpt,
      linears,
      summary: { path: abs, kind: 'tensors', files, totalBytes: ckpt.totalBytes, params, dtypes, numBlocks: linears.length, linears: linears.map(strip), ctx: 0 },
    };
  } catch (e) {
    ckpt.close();
    throw e;
  }
}

function strip(l: BlockLinear): LinearLayerInfo {
  return { name: l.name, block: l.block, module: l.module, rows: l.rows, cols: l.cols, ...(l.expert === undefined ? {} : { expert: l.expert }) };
}

export async function inspectModel(path: string): Promise<ModelSummary> {
  const m = openModel(path);
  m.ckpt.close();
  return m.summary;
}
