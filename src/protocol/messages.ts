// Messages between the extension host and the engine child process (and the CLI's in-process
// client). Requests are typed by method → {params, result}; notifications by method → params.
// Webview ↔ host messages are in ./webview.ts. Nothing here imports vscode, node or the engine.

import { describeRange, type ExecutionProviderName, inRange, type LayerConfig, type Method, type NumRange, type QuantizeConfig } from './config';
import type { Measurements } from './plan';

// ── Error codes (named, stable; shown to users together with the message) ────────────────────
export const ErrorCode = {
  /** A message that does not parse as a protocol envelope. */
  InvalidMessage: 'E_INVALID_MESSAGE',
  MethodNotFound: 'E_METHOD_NOT_FOUND',
  InvalidParams: 'E_INVALID_PARAMS',
  /** Malformed or truncated safetensors, bad index, bad config.json. */
  BadCheckpoint: 'E_BAD_CHECKPOINT',
  UnsupportedDtype: 'E_UNSUPPORTED_DTYPE',
  NonFinite: 'E_NON_FINITE',
  ShapeMismatch: 'E_SHAPE_MISMATCH',
  BadConfig: 'E_BAD_CONFIG',
  BadCalibration: 'E_BAD_CALIBRATION',
  OutOfMemory: 'E_OUT_OF_MEMORY',
  /** A resume checkpoint that belongs to another model, config, calibration or engine version. */
  IncompatibleCheckpoint: 'E_INCOMPATIBLE_CHECKPOINT',
  Cancelled: 'E_CANCELLED',
  EngineCrashed: 'E_ENGINE_CRASHED',
  Timeout: 'E_TIMEOUT',
  Io: 'E_IO',
  Internal: 'E_INTERNAL',
} as const;
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

export interface ProtocolErrorData {
  code: ErrorCode;
  message: string;
  /** File, tensor or field the error is about, when there is one. */
  where?: string;
  /** What the user can do about it. */
  hint?: string;
}

// ── Shared shapes ───────────────────────────────────────────────────────────────────────────
export type Dtype = 'F32' | 'F16' | 'BF16' | 'F64' | 'I8' | 'U8' | 'I16' | 'I32' | 'I64' | 'F8_E4M3' | 'BOOL';

export interface TensorSummary {
  name: string;
  dtype: Dtype;
  shape: number[];
}

/** One quantizable linear layer, named as in the checkpoint (e.g. model.layers.0.self_attn.q_proj). */
export interface LinearLayerInfo {
  name: string;
  block: number;
  /** Module name under the block: q_proj, …, down_proj; an expert's `experts.3.w1`; `shared_expert.up_proj`. */
  module: string;
  rows: number;
  cols: number;
  /** The expert a linear of a mixture-of-experts block belongs to. */
  expert?: number;
}

export interface ModelSummary {
  path: string;
  /** 'llama' for a Hugging Face decoder folder (any family of the engine's); 'tensors' for a bare safetensors file. */
  kind: 'llama' | 'tensors';
  /** The decoder family (config.json model_type): llama, mistral, qwen2, qwen3, mixtral, qwen2_moe, qwen3_moe. */
  family?: string;
  files: string[];
  totalBytes: number;
  params: number;
  dtypes: Dtype[];
  numBlocks: number;
  /** Attention heads of a decoder (its config.json); absent for bare tensors. */
  attentionHeads?: number;
  linears: LinearLayerInfo[];
  /** Protocol context length (0 for bare tensors). */
  ctx: number;
}

export interface StageTimes {
  [stage: string]: number; // seconds: hessian, lowrank, permute, rotate, quantize, report, ...
}

/** What the engine reports for each quantized layer (spec §3 bpw; proxy loss = tr(ΔH Δᵀ)). */
export interface LayerReport {
  name: string;
  block: number;
  module: string;
  rows: number;
  cols: number;
  config: LayerConfig;
  bpw: number;
  /** tr(Δ H Δᵀ) of the final reconstruction, Δ = W − Ŵ. */
  proxyLoss: number;
  /** proxyLoss / tr(W H Wᵀ): comparable across layers. */
  relProxyLoss: number;
  /** Same layer and Hessian, other methods at the same bits (when computed). */
  baselines?: Partial<Record<Method, number>>;
  /** Fraction of ‖A‖²_F captured by the rank-r part (lopro). */
  lowRankEnergy?: number;
  /** b_H actually used when (n − b_I) was not a multiple of the configured b_H. */
  hadamardBlockUsed?: number;
  /** A mixture-of-experts linear: its expert, and the calibration tokens the router sent it. */
  expert?: number;
  tokens?: number;
  /** The statistic (Hessian) it was quantized with: its input, or an expert's (`mlp_in@3`; `:all` = every token). */
  statistic?: string;
  notes: string[];
  seconds: StageTimes;
}

/** Downsampled per-layer data for the layer view (the engine downsamples; the webview draws). */
export interface LayerDetails {
  name: string;
  rows: number;
  cols: number;
  /** Column importance in permuted order (descending), downsampled to ≤ maxPoints. */
  importance: { x: number[]; y: number[] };
  /** Permutation blocks: [start, end) in permuted column space, and whether rotated. */
  blocks: { start: number; end: number; rotated: boolean }[];
  /** Original column index of every permuted column, downsampled. */
  permSample: number[];
  /** Singular values σ_k of A = W·diag(α), first k (and the rank that was kept). */
  singularValues: number[];
  rank: number;
  /** Histograms (shared bin edges) of the residual before and after rotation, and of the error. */
  histograms: {
    edges: number[];
    residualBefore: number[];
    residualAfter: number[];
    error: number[];
  };
  /** Row-block × column-block mean |error| heat tile (downsampled). */
  errorTile: { rows: number; cols: number; values: number[] };
}

/** What a run planned for host memory (protocol/memory_plan.ts). */
export interface MemoryPlanSummary {
  budgetMB: number;
  /** How an automatic budget was chosen (memoryBudgetMB 0). */
  auto?: string;
  peakBytes: number;
}

export interface RunSummary {
  runDir: string;
  model: string;
  config: QuantizeConfig;
  layers: LayerReport[];
  bpw: number;
  seconds: number;
  ep: string;
  /**
   * Where the quantization math ran, for people: "gpu: NVIDIA H100 (Dawn/Vulkan)", "cpu: 2 threads".
   * Absent in runs of engines that do not report it.
   */
  backend?: string;
  /** The engine process's peak resident memory over the run's sessions, bytes (getrusage maxRSS). */
  peakHostBytes?: number;
  /** A calibrated run's memory plan (its last session's): the budget it planned within and the peak it planned. */
  memoryPlan?: MemoryPlanSummary;
  perplexity?: Record<string, number>;
  /** KL(float ‖ quantized) of the next-token distributions, nats per predicted position, by text. */
  kl?: Record<string, number>;
  /** True when the run resumed from a checkpoint. */
  resumed: boolean;
}

export type ExportFormat = 'native' | 'f16' | 'onnx';

// ── Generation ("Try it": the float and the quantized model answer the same prompt) ────────────
/** What a generation ran: an ONNX export's file, or the graph built from a native (quantized) or float folder. */
export type GenerationSource = 'onnx export' | 'native (quantized)' | 'float';

export interface GenerateParams {
  /** A run folder (its quantized model), an ONNX export folder, a native folder or a float model folder. */
  path: string;
  prompt: string;
  /** New tokens at most (the prompt and these must fit the model's positions). */
  maxTokens: number;
  /** 0 = greedy. */
  temperature: number;
  /** In (0, 1]; 1 = the whole distribution. */
  topP: number;
  /** Seed of the draws when sampling: the same seed on both sides makes the columns comparable. */
  seed: number;
  /** Execution provider (the run's setting); default auto. */
  ep?: ExecutionProviderName;
}

/** The ranges of GenerateParams' numbers (config.ts NumRange): one table for the engine's check, `lopro generate`'s flags and the Try it form. */
export const GENERATE_BOUNDS = {
  maxTokens: { min: 1, max: 8192, integer: true },
  temperature: { min: 0, max: 100 },
  topP: { min: 0, max: 1, openMin: true },
} as const satisfies Record<string, NumRange>;

/** What `v` should be for `key` ("an integer in [1, 8192]"), or undefined when it is that. */
export function generateBoundProblem(key: keyof typeof GENERATE_BOUNDS, v: number): string | undefined {
  const r: NumRange = GENERATE_BOUNDS[key];
  return inRange(v, r) ? undefined : describeRange(r);
}

export interface GenerateResultData {
  source: GenerationSource;
  promptTokens: number;
  /** The generated ids (an end-of-sequence id included when it stopped the generation). */
  tokens: number[];
  text: string;
  stop: 'eos' | 'max_tokens';
  /** The prompt's call and the first token's choice (time to first token). */
  prefillSeconds: number;
  /** Every later token's call and choice. */
  decodeSeconds: number;
  prefillTokensPerSecond: number;
  /** (tokens − 1) / decodeSeconds; 0 with fewer than two tokens. */
  decodeTokensPerSecond: number;
  /** The execution provider that ran it. */
  ep: string;
}

// ── Progress (LSP WorkDoneProgress shape) ─────────────────────────────────────────────────────
export interface ProgressBegin {
  kind: 'begin';
  title: string;
  cancellable: boolean;
  message?: string;
  percentage?: number;
}
export interface ProgressReport {
  kind: 'report';
  message?: string;
  /** 0–100. */
  percentage?: number;
  /** Seconds left, estimated. */
  etaSeconds?: number;
  /** Block index and layer name being worked on. */
  block?: number;
  layer?: string;
}
export interface ProgressEnd {
  kind: 'end';
  message?: string;
}
export type ProgressValue = ProgressBegin | ProgressReport | ProgressEnd;

// ── Requests: host (or CLI) → engine ──────────────────────────────────────────────────────────
export interface EngineRequests {
  'engine/hello': {
    params: { clientVersion: string };
    result: { engineVersion: string; availableEps: string[]; pid: number };
  };
  'model/inspect': {
    params: { path: string };
    result: ModelSummary;
  };
  'run/start': {
    params: { modelPath: string; config: QuantizeConfig; runDir: string; resume: boolean; evalTexts?: string[] };
    result: RunSummary;
  };
  'run/load': {
    params: { runDir: string };
    result: RunSummary;
  };
  /** A target-size run's measurement pass alone, kept in runDir (a run started there later reuses it). */
  'plan/measure': {
    params: { modelPath: string; config: QuantizeConfig; runDir: string };
    result: Measurements;
  };
  'layer/details': {
    params: { runDir: string; layer: string; maxPoints: number };
    result: LayerDetails;
  };
  'layer/requantize': {
    params: { runDir: string; layer: string; overrides: Partial<LayerConfig> };
    result: { before: LayerReport; after: LayerReport; candidateId: string };
  };
  'layer/apply': {
    params: { runDir: string; layer: string; candidateId: string };
    result: RunSummary;
  };
  'run/eval': {
    params: { runDir: string; texts: string[] };
    result: Record<string, number>;
  };
  'run/export': {
    params: {
      runDir: string;
      format: ExportFormat;
      outDir: string;
      verifyText?: string;
      /** ONNX only: float activations into MatMulNBits (exact, slower on the CPU EP); 2-bit codes in the 4-bit container (for EPs whose 2-bit kernel fails). */
      onnx?: { floatActivations?: boolean; fourBitContainer?: boolean };
    };
    result: { outDir: string; files: string[]; bytes: number; perplexity?: number; runPerplexity?: number };
  };
  /** Text from `prompt`, streamed as `generate/text` notifications; cancel ends it with E_CANCELLED. */
  generate: {
    params: GenerateParams;
    result: GenerateResultData;
  };
  /** Lets the engine release the models it keeps open for `generate` (a Try it panel closed). */
  'generate/release': {
    params: { paths: string[] };
    result: { released: number };
  };
}
export type EngineMethod = keyof EngineRequests;

// ── Notifications ─────────────────────────────────────────────────────────────────────────────
export interface EngineNotifications {
  /** engine → host: progress of a request, identified by the request id. */
  progress: { requestId: number; value: ProgressValue };
  /** engine → host: a log line for the output channel. */
  log: { level: 'debug' | 'info' | 'warn' | 'error'; message: string };
  /** engine → host: one layer finished (drives the live heatmap). */
  'layer/done': { requestId: number; report: LayerReport };
  /** engine → host: new text of a `generate` request, as soon as it decodes to whole characters; tokens generated so far. */
  'generate/text': { requestId: number; delta: string; tokens: number };
  /** host → engine: cancel a running request. */
  cancel: { requestId: number };
}
export type NotificationMethod = keyof EngineNotifications;
