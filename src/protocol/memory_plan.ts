// How a calibrated run spends memoryBudgetMB of host memory, block by block. Shared by the engine (which
// spills activations and sizes its statistics passes by it) and the config panel (whose peak estimate
// is this plan's), so the two cannot drift apart.
//
// What a block holds on the host at its peak:
//   runtime      Node, ONNX Runtime, the worker pool: a fixed allowance, plus, where the forwards run on the CPU EP,
//                the arenas its sessions keep after their largest batch (each graph holds its own);
//   weights      the block's weights as float32 (streamed block by block, never the whole model);
//   layer        the largest layer's quantizer working copies (W, residual, low-rank, error: 4 float64 copies);
//   hessians     one statistics pass: each statistic's float32 H as downloaded, its float64 copy, and on the
//                host path the float64 running sums — at least the widest statistic, alone in its pass;
//   activations  the calibration activations of the block boundary (inputs and outputs), or spilled to disk.
// The first four are the floor no budget goes below; the activations stay in memory when they fit beside
// it; what is left bounds a pass's Hessians (more statistics per pass = fewer forwards over the windows).

/** Host memory the engine needs whatever the model: Node, ONNX Runtime, the worker pool. */
export const RUNTIME_ALLOWANCE_BYTES = 1024 * 2 ** 20;

/** CPU EP arenas kept across a run, in units of one batch's widest intermediate (sessions × live intermediates). */
export const CPU_ARENA_BATCHES = 12;

/** Tokens per forward batch of the calibration and evaluation passes (windows per batch = this / ctx, at least one). */
export const BATCH_TOKENS = 4096;

/** Bytes of one batch's widest forward intermediate: rows × the wider of the MLP and the attention scores (heads × ctx). */
export const batchWorkBytes = (batchRows: number, mlp: number, heads: number, ctx: number): number => 4 * batchRows * Math.max(mlp, heads * ctx);

export interface MemoryShape {
  /** One activation store: calibration windows × ctx × hidden float32 values. */
  activationStoreBytes: number;
  /** The largest block's weights as float32. */
  blockWeightBytes: number;
  /** Weights of the largest quantized layer. */
  largestLayerWeights: number;
  /** Width of the widest statistic (its Hessian is width²). */
  widestStatistic: number;
  /** Float32 bytes of the Hessians of the largest stage (all the statistics one stage needs). */
  largestStageFloat32Bytes: number;
  /** Running sums kept on the host (CPU EP): float64 XᵀX beside the finished H. */
  hostSums: boolean;
  /** batchWorkBytes of the forwards where they run on the CPU EP; 0 on a GPU EP (its intermediates live on the device). */
  hostBatchWorkBytes: number;
}

/** A quantized linear as the plan sees it: its block, the activation it reads (engine LinearInput names), its expert. */
export interface PlannedLinear {
  block: number;
  input: string;
  expert?: number;
  rows: number;
  cols: number;
}

/** The run a shape is for: calibration windows × ctx tokens, the model's widths, where the forwards run. */
export interface PlannedRun {
  hidden: number;
  heads: number;
  ctx: number;
  /** Calibration windows; 0 for a data-free run (no activations, no Hessians). */
  samples: number;
  /** Forwards and Hessian sums on the CPU EP (host arenas and float64 sums) rather than a GPU. */
  hostSums: boolean;
}

/**
 * The shape of a model's largest block, layer, statistic and stage, from its quantized linears: the engine (from
 * its block linears) and the config panel (from the model summary) both plan through this. An expert's statistic
 * is its own input over its routed rows; a sparse block's mlp_in stage also measures the shared input (routing,
 * all-token experts); mlp_act and shared_act are one stage (the engine's SEQUENTIAL_STAGES).
 */
export function memoryShapeOf(linears: readonly PlannedLinear[], run: PlannedRun): MemoryShape {
  const blockWeights = new Map<number, number>();
  const stages = new Map<string, Map<string, number>>(); // block/stage → statistic → width
  let largestLayerWeights = 0,
    widestStatistic = 0,
    mlp = 0;
  for (const l of linears) {
    blockWeights.set(l.block, (blockWeights.get(l.block) ?? 0) + 4 * l.rows * l.cols);
    largestLayerWeights = Math.max(largestLayerWeights, l.rows * l.cols);
    widestStatistic = Math.max(widestStatistic, l.cols);
    if (l.input === 'mlp_act' || l.input === 'shared_act') mlp = Math.max(mlp, l.cols);
    const id = `${l.block}/${l.input === 'shared_act' ? 'mlp_act' : l.input}`;
    let stage = stages.get(id);
    if (!stage) stages.set(id, (stage = new Map()));
    stage.set(l.expert === undefined ? l.input : `${l.input}@${l.expert}`, l.cols);
    if (l.input === 'mlp_in' && l.expert !== undefined) stage.set('mlp_in', run.hidden);
  }
  const calibrated = run.samples > 0;
  const largestStage = Math.max(0, ...[...stages.values()].map((keys) => [...keys.values()].reduce((a, n) => a + 4 * n * n, 0)));
  const batchRows = Math.max(1, Math.floor(BATCH_TOKENS / run.ctx)) * run.ctx;
  return {
    activationStoreBytes: run.samples * run.ctx * run.hidden * 4,
    blockWeightBytes: Math.max(0, ...blockWeights.values()),
    largestLayerWeights,
    widestStatistic: calibrated ? widestStatistic : 0,
    largestStageFloat32Bytes: calibrated ? largestStage : 0,
    hostSums: run.hostSums,
    hostBatchWorkBytes: run.hostSums ? batchWorkBytes(batchRows, mlp, run.heads, run.ctx) : 0,
  };
}

export interface MemoryPlan {
  /** The budget planned with, MiB: memoryBudgetMB, or its automatic value. */
  budgetMB: number;
  /** How an automatic budget was chosen (memoryBudgetMB 0). */
  auto?: string;
  budgetBytes: number;
  runtime: number;
  weights: number;
  layer: number;
  /** Weights of the largest quantized layer. */
  layerWeights: number;
  /** Layers of one pass quantized at once (withLayersInFlight); their Ŵ beyond the first are in the peak. */
  layersInFlight: number;
  /** The next block's weights are read while this block runs (withReadAhead): a second block's weights in the peak. */
  readAhead: boolean;
  /** Host bytes of the Hessians of the largest pass. */
  hessians: number;
  /** Both activation stores when held in memory, 0 when spilled. */
  activations: number;
  activationsSpilled: boolean;
  /** Float32 bytes of Hessians one statistics pass may gather (passesOf's limit). */
  passFloat32Bytes: number;
  /** What no budget goes below: runtime + weights + layer + the widest statistic's Hessian. */
  floor: number;
  /** The plan's peak: runtime + weights + layer + hessians + activations. */
  peak: number;
}

/** Host bytes per float32 Hessian byte: H32 + its float64 copy, plus float64 sums on the host path. */
export const hessianHostFactor = (hostSums: boolean): number => (hostSums ? 5 : 3);

/** `budget`: memoryBudgetMB as configured, or its automatic value with the note saying how it was chosen (machine_memory.ts). */
export function planMemory(s: MemoryShape, budget: number | { mb: number; auto?: string }): MemoryPlan {
  const { mb: memoryBudgetMB, auto } = typeof budget === 'number' ? { mb: budget, auto: undefined } : budget;
  const budgetBytes = memoryBudgetMB * 2 ** 20;
  const factor = hessianHostFactor(s.hostSums);
  const runtime = RUNTIME_ALLOWANCE_BYTES + CPU_ARENA_BATCHES * s.hostBatchWorkBytes;
  const weights = s.blockWeightBytes;
  const layer = s.largestLayerWeights * 8 * 4;
  const widest = 4 * s.widestStatistic ** 2;
  const floor = runtime + weights + layer + widest * factor;
  const bothStores = 2 * s.activationStoreBytes;
  const activationsSpilled = floor + bothStores > budgetBytes;
  const activations = activationsSpilled ? 0 : bothStores;
  const passFloat32Bytes = Math.max(widest, (budgetBytes - runtime - weights - layer - activations) / factor);
  const hessians = Math.min(passFloat32Bytes, Math.max(widest, s.largestStageFloat32Bytes)) * factor;
  return {
    budgetMB: memoryBudgetMB,
    ...(auto ? { auto } : {}),
    budgetBytes,
    runtime,
    weights,
    layer,
    layerWeights: s.largestLayerWeights,
    layersInFlight: 1,
    readAhead: false,
    hessians,
    activations,
    activationsSpilled,
    passFloat32Bytes,
    floor,
    peak: runtime + weights + layer + hessians + activations,
  };
}

/** At most this many layers of one pass at once on the GPU backend (q, k and v share a pass), as the budget allows. */
export const GPU_LAYERS_IN_FLIGHT = 3;

/** Host bytes a further layer in flight holds beyond the plan: its Ŵ as float32 and the forward runtime's copy of it. */
export const extraLayerBytes = (layerWeights: number): number => 8 * layerWeights;

/**
 * The plan with up to `max` layers of one pass quantized at once (the GPU backend queues one's kernels while the
 * host handles another's results): one, plus as many as the budget's room above the plan's peak holds; the peak
 * grows by what the further layers hold.
 */
export function withLayersInFlight(p: MemoryPlan, max: number): MemoryPlan {
  const extra = extraLayerBytes(p.layerWeights),
    room = p.budgetBytes - p.peak;
  const n = room <= 0 || extra === 0 ? 1 : Math.max(1, Math.min(max, 1 + Math.floor(room / extra)));
  return { ...p, layersInFlight: n, peak: p.peak + (n - 1) * extra };
}

/**
 * The plan with the next block's weights read on a worker thread while this block runs (`on`: where the forwards run on a
 * GPU, whose passes leave the host waiting), if the budget's room above the peak holds a second block's weights.
 */
export function withReadAhead(p: MemoryPlan, on: boolean): MemoryPlan {
  const fits = on && p.weights > 0 && p.budgetBytes - p.peak >= p.weights;
  return fits ? { ...p, readAhead: true, peak: p.peak + p.weights } : p;
}

const mib = (b: number) => `${Math.round(b / 2 ** 20)} MiB`;

/** One line for the run's log: where the budget goes, and a warning's text when it is below the floor. */
export function describeMemoryPlan(p: MemoryPlan): { line: string; belowFloor?: string } {
  const line = `memory plan for ${p.budgetMB} MiB${p.auto ? ` (${p.auto})` : ''}: runtime ${mib(p.runtime)}, block weights ${mib(p.weights)}${p.readAhead ? ` (+ ${mib(p.weights)}: the next block's, read ahead)` : ''}, layer work ${mib(p.layer)}${p.layersInFlight > 1 ? ` (+ ${mib((p.layersInFlight - 1) * extraLayerBytes(p.layerWeights))} for ${p.layersInFlight} layers at once)` : ''}, Hessians ≤ ${mib(p.hessians)} per pass, calibration activations ${p.activationsSpilled ? 'spilled to disk' : mib(p.activations)}`;
  if (p.floor <= p.budgetBytes) return { line };
  return {
    line,
    belowFloor: `${p.auto ? `the automatic memory budget (${p.budgetMB} MiB)` : `memoryBudgetMB ${p.budgetMB}`} is below this model's floor of about ${mib(p.floor)} (runtime, one block's weights, the largest layer's work, the widest Hessian): the run spills what it can and needs about that much`,
  };
}
