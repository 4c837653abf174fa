// Messages between the extension host and its webviews (config panel, results, compare, try it).
// Both directions are discriminated unions on `type`. Whatever arrives from a webview is untrusted:
// `parseFromWebview` checks every field and returns undefined for anything else.
// The host → webview direction is checked too (`parseToWebview`) so a stale or foreign message
// never reaches the renderer. Nothing here imports vscode, node or the engine.

import type { AvailableMemory } from './machine_memory';
import { DEFAULT_CONFIG, DEFAULT_LAYER_CONFIG, type LayerConfig, type QuantizeConfig } from './config';
import type { Measurements } from './plan';
import type {
  ExportFormat,
  GenerateResultData,
  LayerDetails,
  LayerReport,
  LinearLayerInfo,
  ModelSummary,
  ProgressValue,
  ProtocolErrorData,
  RunSummary,
  EngineRequests,
} from './messages';

export type ViewKind = 'config' | 'results' | 'compare' | 'try';
export type ExportResult = EngineRequests['run/export']['result'];

// ── host → webview ──────────────────────────────────────────────────────────────────────────
/** Config panel: the model to quantize, its summary (for the estimates) and the starting config. */
export interface ConfigInitMessage {
  type: 'config/init';
  modelPath: string;
  summary: ModelSummary | null;
  config: QuantizeConfig;
  outputFolder: string;
  /** The memory the engine may use on this machine (physical, or its cgroup limit): an automatic budget's base. */
  machineMemory?: AvailableMemory;
  /** Set when model/inspect failed: shown instead of the estimates. */
  inspectError?: ProtocolErrorData;
}
/** A file or folder chosen through the host's picker. */
export interface PickedMessage {
  type: 'picked';
  field: 'calibText' | 'outputFolder';
  path: string;
}
/** Results view: a run started (or was loaded); layers lists every cell of the heatmap. */
export interface RunBeginMessage {
  type: 'run/begin';
  runDir: string;
  modelPath: string;
  config: QuantizeConfig;
  layers: LinearLayerInfo[];
  numBlocks: number;
}
export interface ProgressMessage {
  type: 'progress';
  value: ProgressValue;
}
export interface LayerDoneMessage {
  type: 'layer/done';
  report: LayerReport;
}
export interface RunDoneMessage {
  type: 'run/done';
  summary: RunSummary;
  /** Seconds from the start request to the last layer (measured by the host). */
  seconds: number;
}
export interface RunFailedMessage {
  type: 'run/failed';
  error: ProtocolErrorData;
  cancelled: boolean;
}
export interface LayerDetailsMessage {
  type: 'layer/details';
  details: LayerDetails;
  report: LayerReport | null;
}
export interface RequantizedMessage {
  type: 'layer/requantized';
  layer: string;
  before: LayerReport;
  after: LayerReport;
  candidateId: string;
  /** Details of the candidate, when the engine could give them. */
  afterDetails: LayerDetails | null;
  seconds: number;
}
export interface AppliedMessage {
  type: 'layer/applied';
  layer: string;
  summary: RunSummary;
}
export interface ExportDoneMessage {
  type: 'export/done';
  format: ExportFormat;
  result: ExportResult;
}
export interface CompareMessage {
  type: 'compare';
  a: RunSummary;
  b: RunSummary;
}
/** Perplexity of the run as it is now (after applied layer changes), from run/eval. */
export interface EvalDoneMessage {
  type: 'eval/done';
  perplexity: Record<string, number>;
}
/** Try it: which model a column shows. */
export type TrySide = 'float' | 'quantized';
/** Try it panel: the run (the quantized side) and its float model. */
export interface TryInitMessage {
  type: 'try/init';
  runDir: string;
  /** The run's float model (its manifest's modelPath). */
  modelPath: string;
  bpw: number;
  /** The run's EP setting, which the generations use. */
  ep: string;
}
/** New text of one side's generation. */
export interface TryTextMessage {
  type: 'try/text';
  side: TrySide;
  delta: string;
  /** Tokens this side has generated so far. */
  tokens: number;
}
export interface TryDoneMessage {
  type: 'try/done';
  side: TrySide;
  result: GenerateResultData;
}
export interface TryFailedMessage {
  type: 'try/failed';
  side: TrySide;
  error: ProtocolErrorData;
  cancelled: boolean;
}
/** A failed host action (shown in the view's status line). */
export interface ErrorMessage {
  type: 'error';
  action: string;
  error: ProtocolErrorData;
}

/** Config panel: the candidates measured for the target (the panel plans any target from them). */
export interface PlanMeasuredMessage {
  type: 'plan/measured';
  measurements: Measurements;
}

export type ToWebview =
  | ConfigInitMessage
  | PickedMessage
  | RunBeginMessage
  | ProgressMessage
  | LayerDoneMessage
  | RunDoneMessage
  | RunFailedMessage
  | LayerDetailsMessage
  | RequantizedMessage
  | AppliedMessage
  | ExportDoneMessage
  | CompareMessage
  | EvalDoneMessage
  | PlanMeasuredMessage
  | TryInitMessage
  | TryTextMessage
  | TryDoneMessage
  | TryFailedMessage
  | ErrorMessage;

// ── webview → host ──────────────────────────────────────────────────────────────────────────
/** The webview's script is running and wants its initial data. */
export interface ReadyMessage {
  type: 'ready';
}
export interface PickMessage {
  type: 'pick';
  field: 'calibText' | 'outputFolder';
}
export interface StartMessage {
  type: 'start';
  config: QuantizeConfig;
  outputFolder: string;
}
/** Measure a target-size config's candidates into the output folder (a Start there reuses them). */
export interface MeasureMessage {
  type: 'measure';
  config: QuantizeConfig;
  outputFolder: string;
}
export interface OpenLayerMessage {
  type: 'openLayer';
  layer: string;
}
export interface RequantizeMessage {
  type: 'requantize';
  layer: string;
  overrides: Partial<LayerConfig>;
}
export interface ApplyMessage {
  type: 'apply';
  layer: string;
  candidateId: string;
}
export interface ExportRequestMessage {
  type: 'export';
  format: ExportFormat;
}
export interface CancelMessage {
  type: 'cancel';
}
/** Re-measure the run's perplexity (run/eval), e.g. after "Apply to run". */
export interface EvaluateMessage {
  type: 'evaluate';
}
/** Results view: open the run's Try it panel. */
export interface TryItMessage {
  type: 'tryIt';
}
/** Try it panel: both models answer `prompt` (ranges are the engine's to check; Stop is `cancel`). */
export interface GenerateMessage {
  type: 'generate';
  prompt: string;
  maxTokens: number;
  temperature: number;
  topP: number;
}

export type FromWebview =
  | ReadyMessage
  | PickMessage
  | StartMessage
  | MeasureMessage
  | OpenLayerMessage
  | RequantizeMessage
  | ApplyMessage
  | ExportRequestMessage
  | CancelMessage
  | EvaluateMessage
  | TryItMessage
  | GenerateMessage;

export const EXPORT_FORMATS: readonly ExportFormat[] = ['native', 'f16', 'onnx'];
/** Longest prompt the Try it panel sends (characters). */
export const MAX_PROMPT_CHARS = 20000;

// ── validation ──────────────────────────────────────────────────────────────────────────────
type Obj = Record<string, unknown>;
const isObj = (x: unknown): x is Obj => typeof x === 'object' && x !== null && !Array.isArray(x);
const isStr = (x: unknown, max = 4096): x is string => typeof x === 'string' && x.length <= max;
const isNum = (x: unknown): x is number => typeof x === 'number' && Number.isFinite(x);
/** Only the listed keys (plus `type`) may be present: extra fields mean a message we don't know. */
const onlyKeys = (m: Obj, keys: string[]) => Object.keys(m).every((k) => k === 'type' || keys.includes(k));

/**
 * Same keys as `defaults`, each of the same primitive type. Range rules are validateConfig's job
 * (the host runs it before starting anything); this only guarantees the shape.
 */
function hasShapeOf(x: unknown, defaults: object, partial: boolean): boolean {
  if (!isObj(x)) return false;
  const d = defaults as Obj;
  for (const [k, v] of Object.entries(x)) {
    if (!(k in d)) return false;
    if (k === 'layerOverrides') {
      if (!isObj(v) || Object.keys(v).length > 1000) return false;
      for (const [pattern, o] of Object.entries(v)) if (pattern.length > 256 || !hasShapeOf(o, DEFAULT_LAYER_CONFIG, true)) return false;
      continue;
    }
    const want = typeof d[k];
    if (typeof v !== want) return false;
    if (want === 'number' && !Number.isFinite(v)) return false;
    if (want === 'string' && (v as string).length > 4096) return false;
  }
  return partial || Object.keys(d).every((k) => k in x);
}

export const isQuantizeConfig = (x: unknown): x is QuantizeConfig => hasShapeOf(x, DEFAULT_CONFIG, false);
export const isLayerOverrides = (x: unknown): x is Partial<LayerConfig> => hasShapeOf(x, DEFAULT_LAYER_CONFIG, true);

/** Returns the message when it is exactly one of FromWebview, else undefined. */
export function parseFromWebview(x: unknown): FromWebview | undefined {
  if (!isObj(x) || typeof x.type !== 'string') return undefined;
  const m = x;
  switch (m.type) {
    case 'ready':
    case 'cancel':
    case 'evaluate':
    case 'tryIt':
      return onlyKeys(m, []) ? (m as unknown as FromWebview) : undefined;
    case 'pick':
      return onlyKeys(m, ['field']) && (m.field === 'calibText' || m.field === 'outputFolder') ? (m as unknown as PickMessage) : undefined;
    case 'start':
    case 'measure':
      return onlyKeys(m, ['config', 'outputFolder']) && isQuantizeConfig(m.config) && isStr(m.outputFolder) ? (m as unknown as StartMessage | MeasureMessage) : undefined;
    case 'openLayer':
      return onlyKeys(m, ['layer']) && isStr(m.layer, 512) && m.layer.length > 0 ? (m as unknown as OpenLayerMessage) : undefined;
    case 'requantize':
      return onlyKeys(m, ['layer', 'overrides']) && isStr(m.layer, 512) && m.layer.length > 0 && isLayerOverrides(m.overrides) ? (m as unknown as RequantizeMessage) : undefined;
    case 'apply':
      return onlyKeys(m, ['layer', 'candidateId']) && isStr(m.layer, 512) && isStr(m.candidateId, 512) && m.candidateId.length > 0 ? (m as unknown as ApplyMessage) : undefined;
    case 'export':
      return onlyKeys(m, ['format']) && EXPORT_FORMATS.includes(m.format as ExportFormat) ? (m as unknown as ExportRequestMessage) : undefined;
    case 'generate':
      return onlyKeys(m, ['prompt', 'maxTokens', 'temperature', 'topP']) &&
        isStr(m.prompt, MAX_PROMPT_CHARS) &&
        Number.isInteger(m.maxTokens) &&
        isNum(m.temperature) &&
        isNum(m.topP)
        ? (m as unknown as GenerateMessage)
        : undefined;
    default:
      return undefined;
  }
}

const TO_WEBVIEW_FIELDS: Record<ToWebview['type'], string[]> = {
  'config/init': ['modelPath', 'summary', 'config'],
  picked: ['field', 'path'],
  'run/begin': ['runDir', 'layers', 'numBlocks'],
  progress: ['value'],
  'layer/done': ['report'],
  'run/done': ['summary', 'seconds'],
  'run/failed': ['error'],
  'layer/details': ['details'],
  'layer/requantized': ['layer', 'before', 'after', 'candidateId'],
  'layer/applied': ['layer', 'summary'],
  'export/done': ['format', 'result'],
  compare: ['a', 'b'],
  'eval/done': ['perplexity'],
  'plan/measured': ['measurements'],
  'try/init': ['runDir', 'modelPath', 'bpw'],
  'try/text': ['side', 'delta', 'tokens'],
  'try/done': ['side', 'result'],
  'try/failed': ['side', 'error'],
  error: ['action', 'error'],
};

/**
 * The webview's check of host messages: a known type with its required fields present. The host
 * is trusted code, so this guards against stale/foreign messages rather than attacks.
 */
export function parseToWebview(x: unknown): ToWebview | undefined {
  // Own-property check: `in` would also accept inherited names such as "constructor" or "__proto__".
  if (!isObj(x) || typeof x.type !== 'string' || !Object.hasOwn(TO_WEBVIEW_FIELDS, x.type)) return undefined;
  const need = TO_WEBVIEW_FIELDS[x.type as ToWebview['type']];
  if (!need.every((k) => k in x)) return undefined;
  if (x.type === 'layer/done' && !(isObj(x.report) && isStr(x.report.name) && isNum(x.report.relProxyLoss))) return undefined;
  return x as unknown as ToWebview;
}
