// Live estimates for the config panel, from the model/inspect summary alone (no engine call):
// bits per weight (spec §3, bitsPerWeight per layer, weighted by weight count), output size and the
// peak host memory of the engine's memory plan. Pure so that unit tests can check it.

import { bitsPerWeight, layerConfigFor, type QuantizeConfig } from '../src/protocol/config';
import { GPU_LAYERS_IN_FLIGHT, type MemoryPlan, memoryShapeOf, planMemory, withLayersInFlight, withReadAhead } from '../src/protocol/memory_plan';
import { type AvailableMemory, resolveBudgetMB } from '../src/protocol/machine_memory';

/** What an automatic budget is planned from when the host has not said what the machine has. */
const ASSUMED_MEMORY: AvailableMemory = { bytes: 16 * 2 ** 30, source: 'assumed' };
import type { ModelSummary } from '../src/protocol/messages';

export interface Estimate {
  /** Weighted mean bits per weight over the quantized linears (with a target: the target, the plan's upper bound). */
  bpw: number;
  /** Weights in quantized linears / all parameters. */
  quantizedParams: number;
  /** Quantized linears at bpw + everything else as stored. */
  outputBytes: number;
  /** Input checkpoint size, for the ratio. */
  inputBytes: number;
  /** Peak host memory of a run: its memory plan's (memoryPlanFor). */
  peakBytes: number;
  /** The budget it is planned within, bytes, and whether memoryBudgetMB 0 chose it. */
  budgetBytes: number;
  budgetAuto: boolean;
}

/** The activation a linear reads (the engine's LinearInput), from its module name. */
function inputOf(module: string): string {
  const role = module.replace(/^experts\.\d+\./, '').replace(/^shared_expert\./, 'shared.');
  if (['q_proj', 'k_proj', 'v_proj'].includes(role)) return 'attn_in';
  if (role === 'o_proj') return 'attn_out';
  if (['gate_proj', 'up_proj', 'w1', 'w3', 'shared.gate_proj', 'shared.up_proj'].includes(role)) return 'mlp_in';
  return role.startsWith('shared.') ? 'shared_act' : 'mlp_act';
}

/**
 * Peak host memory of a run: the engine's memory plan (protocol/memory_plan.ts) for this model's largest
 * block, layer, statistic and stage. A data-free run holds no activations and no Hessians.
 */
export function memoryPlanFor(s: ModelSummary, c: QuantizeConfig, available: AvailableMemory = ASSUMED_MEMORY): MemoryPlan {
  const calibrated = c.calibText !== '';
  const hidden = s.linears.find((l) => l.module === 'q_proj')?.cols ?? Math.max(0, ...s.linears.map((l) => l.cols));
  const ctx = c.ctx || s.ctx || 512;
  const linears = s.linears.map((l) => ({ block: l.block, input: inputOf(l.module), expert: l.expert, rows: l.rows, cols: l.cols }));
  // 'auto' may be the CPU EP: the estimate assumes so.
  const hostSums = calibrated && c.ep !== 'webgpu' && c.ep !== 'cuda';
  const shape = memoryShapeOf(linears, { hidden, heads: s.attentionHeads ?? 1, ctx, samples: calibrated ? c.calibSamples : 0, hostSums });
  // The GPU backend quantizes up to three layers of a pass at once where the budget has room ('auto': assumed CPU), and
  // a calibrated run on a GPU EP reads the next block's weights ahead.
  const plan = withLayersInFlight(planMemory(shape, resolveBudgetMB(c.memoryBudgetMB, available)), c.backend === 'gpu' ? GPU_LAYERS_IN_FLIGHT : 1);
  return withReadAhead(plan, calibrated && !hostSums);
}

export function estimate(s: ModelSummary, c: QuantizeConfig, available?: AvailableMemory): Estimate {
  let weights = 0,
    bits = 0;
  for (const l of s.linears) {
    const n = l.rows * l.cols;
    weights += n;
    bits += bitsPerWeight(layerConfigFor(c, l.name), l.rows, l.cols) * n;
  }
  // A target-size run's plan spends at most the target (the engine refuses a target below every plan).
  if (c.targetBpw > 0) bits = c.targetBpw * weights;
  const bpw = weights ? bits / weights : 0;
  const bytesPerParam = s.params ? s.totalBytes / s.params : 2;
  const outputBytes = bits / 8 + Math.max(0, s.params - weights) * bytesPerParam;
  const plan = memoryPlanFor(s, c, available);
  return {
    bpw,
    quantizedParams: s.params ? weights / s.params : 0,
    outputBytes,
    inputBytes: s.totalBytes,
    peakBytes: plan.peak,
    budgetBytes: plan.budgetBytes,
    budgetAuto: !!plan.auto,
  };
}
