// Opens a Hugging Face Llama-family folder: config.json (validated), the checkpoint (single or
// sharded safetensors; F32/F16/BF16 read lazily as float32) checked tensor by tensor against the
// config, and the tokenizer on demand.

import { openCheckpoint, type Checkpoint } from '../io/checkpoint';
import { checkModelTensors, loadModelConfig, type BlockLinear, type ModelConfig } from './config';
import type { WeightsProvider } from './llama_forward';
import { loadTokenizer, type LoadedTokenizer } from './tokenizer';

export interface LoadedModel {
  dir: string;
  cfg: ModelConfig;
  checkpoint: Checkpoint;
  /** Quantizable linears (q,k,v,o,gate,up,down per block), shapes checked against the checkpoint. */
  linears: BlockLinear[];
  /** Reads a tensor from disk as float32 on every call (wrap with `cachedWeights` to keep them). */
  weights: WeightsProvider;
  tokenizer(): LoadedTokenizer;
  close(): void;
}

export function openModel(dir: string): LoadedModel {
  const cfg = loadModelConfig(dir);
  const checkpoint = openCheckpoint(dir);
  const linears = checkModelTensors(
    cfg,
    (n) => (checkpoint.has(n) ? checkpoint.entry(n).shape : undefined),
    checkpoint.path,
    checkpoint.entries.map((e) => e.name),
  );
  let tok: LoadedTokenizer | undefined;
  return {
    dir,
    cfg,
    checkpoint,
    linears,
    weights: (name) => checkpoint.readFloat32(name),
    tokenizer: () => (tok ??= loadTokenizer(dir)),
    close: () => checkpoint.close(),
  };
}

/** Memoizes a provider (fine for models that fit in memory as float32). */
export function cachedWeights(inner: WeightsProvider): WeightsProvider & { clear(): void } {
  const cache = new Map<string, Promise<Float32Array>>();
  const f = ((name: string) => {
    let v = cache.get(name);
    if (!v) cache.set(name, (v = Promise.resolve(inner(name))));
    return v;
  }) as WeightsProvider & { clear(): void };
  f.clear = () => cache.clear();
  return f;
}
