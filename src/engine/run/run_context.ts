// What a run is given and what its block loops share (run/start and `lopro quantize` → pipeline.ts →
// pipeline_llama.ts / pipeline_tensors.ts; evaluate.ts and the exports take the hooks too).

import type { QuantizeConfig } from '../../protocol/config';
import type { LayerReport, ProgressValue } from '../../protocol/messages';
import type { Backend } from '../quant/backend';
import type { OpenedModel } from './inspect';
import type { RunDir, RunManifest } from './rundir';

export type LogLevel = 'debug' | 'info' | 'warn' | 'error';

export interface RunHooks {
  signal?: AbortSignal;
  onProgress: (v: ProgressValue) => void;
  onLayerDone: (r: LayerReport) => void;
  log: (level: LogLevel, message: string) => void;
}

export interface QuantizeParams {
  modelPath: string;
  config: QuantizeConfig;
  runDir: string;
  resume: boolean;
  /** Texts to evaluate the exported model on after the run. */
  evalTexts?: string[];
  /** A target-size run's measurement to reuse (another run's measurements.json): no measurement pass. */
  measurementsPath?: string;
}

/** What the block loops need (shared by both kinds of model). */
export interface RunContext {
  params: QuantizeParams;
  /** Where the layers are quantized, chosen once for the run (QuantizeConfig.backend). */
  backend: Backend;
  model: OpenedModel;
  dir: RunDir;
  manifest: RunManifest;
  hooks: RunHooks;
  /** Commits the manifest (the last write of a block commit) and adds this session's time. */
  commit(): void;
}
