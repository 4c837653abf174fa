// The config panel's live estimate: bpw is the weight-weighted mean of bitsPerWeight (spec §3),
// layer overrides count, output size adds the unquantized parameters as stored.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { DEFAULT_CONFIG, bitsPerWeight, type QuantizeConfig } from '../../../src/protocol/config';
import type { LinearLayerInfo, ModelSummary } from '../../../src/protocol/messages';
import { estimate } from '../../../webview/estimate';
import { inspectModel } from '../../../src/engine/run/inspect';
import { loadModelConfig } from '../../../src/engine/model/config';
import { runPlanOf } from '../../../src/engine/run/pipeline_llama';
import { GPU_LAYERS_IN_FLIGHT } from '../../../src/protocol/memory_plan';

const MODULES: [string, number, number][] = [
  ['q_proj', 256, 256],
  ['k_proj', 128, 256],
  ['v_proj', 128, 256],
  ['o_proj', 256, 256],
  ['gate_proj', 768, 256],
  ['up_proj', 768, 256],
  ['down_proj', 256, 768],
];
const linears: LinearLayerInfo[] = [];
for (let b = 0; b < 4; b++)
  for (const [module, rows, cols] of MODULES)
    linears.push({
      name: `model.layers.${b}.${module.startsWith('q') || module.startsWith('k') || module.startsWith('v') || module.startsWith('o') ? 'self_attn' : 'mlp'}.${module}`,
      block: b,
      module,
      rows,
      cols,
    });
const linearParams = linears.reduce((a, l) => a + l.rows * l.cols, 0);
const summary: ModelSummary = {
  path: '/m',
  kind: 'llama',
  files: ['model.safetensors'],
  totalBytes: 2 * (linearParams + 1_000_000),
  params: linearParams + 1_000_000,
  dtypes: ['F16'],
  numBlocks: 4,
  linears,
  ctx: 256,
};
const cfg = (o: Partial<QuantizeConfig> = {}): QuantizeConfig => ({ ...DEFAULT_CONFIG, layerOverrides: {}, ...o });

test('bpw is the weighted mean of per-layer bitsPerWeight', () => {
  const c = cfg({ bits: 3 });
  let want = 0;
  for (const l of linears) want += bitsPerWeight(c, l.rows, l.cols) * l.rows * l.cols;
  want /= linearParams;
  const e = estimate(summary, c);
  assert.ok(Math.abs(e.bpw - want) < 1e-12, `${e.bpw} vs ${want}`);
  assert.ok(e.bpw > 3 && e.bpw < 4.5, `3-bit lopro bpw ${e.bpw}`);
});

test('overrides raise bpw and output size; rtn is cheaper than lopro at the same bits', () => {
  const base = estimate(summary, cfg());
  const over = estimate(summary, cfg({ layerOverrides: { '*.down_proj': { bits: 4 } } }));
  assert.ok(over.bpw > base.bpw && over.outputBytes > base.outputBytes);
  assert.ok(estimate(summary, cfg({ method: 'rtn' })).bpw < base.bpw);
});

test('output size = quantized linears at bpw + the rest as stored; peak memory grows with samples × ctx', () => {
  const e = estimate(summary, cfg());
  assert.ok(Math.abs(e.outputBytes - (e.bpw * linearParams) / 8 - 2 * 1_000_000) < 1e-6);
  const small = estimate(summary, cfg({ calibText: 'a.txt', calibSamples: 8, ctx: 64 })).peakBytes;
  const big = estimate(summary, cfg({ calibText: 'a.txt', calibSamples: 128, ctx: 256 })).peakBytes;
  assert.ok(big > small, `${big} <= ${small}`);
});

/** A Mixtral-shaped summary: attention plus E experts of w1/w3/w2 per block. */
function moeSummary(E: number): ModelSummary {
  const ls: LinearLayerInfo[] = [];
  for (let b = 0; b < 2; b++) {
    for (const [module, rows, cols] of MODULES.slice(0, 4)) ls.push({ name: `model.layers.${b}.self_attn.${module}`, block: b, module, rows, cols });
    for (let e = 0; e < E; e++)
      for (const [w, rows, cols] of [
        ['w1', 512, 256],
        ['w3', 512, 256],
        ['w2', 256, 512],
      ] as const)
        ls.push({ name: `model.layers.${b}.block_sparse_moe.experts.${e}.${w}`, block: b, module: `experts.${e}.${w}`, rows, cols, expert: e });
  }
  const p = ls.reduce((a, l) => a + l.rows * l.cols, 0);
  return { ...summary, params: p, totalBytes: 2 * p, numBlocks: 2, linears: ls };
}

test('mixture of experts: every expert counts in bpw and size; each expert has its own Hessians in the peak', () => {
  const c = cfg({ calibText: 'a.txt' });
  const s8 = moeSummary(8);
  const e8 = estimate(s8, c);
  const expertWeights = 2 * 8 * 3 * 512 * 256;
  let want = 0;
  for (const l of s8.linears) want += bitsPerWeight(c, l.rows, l.cols) * l.rows * l.cols;
  assert.ok(Math.abs(e8.bpw * s8.params - want) < 1e-6 * want);
  assert.ok(e8.outputBytes > (e8.bpw * expertWeights) / 8);
  // 8 more experts: 16 more Hessians per block (gate/up input, down input) of 256² and 512² floats.
  const e16 = estimate(moeSummary(16), c);
  const moreHessians = 8 * (256 * 256 + 512 * 512) * 4;
  assert.ok(e16.peakBytes - e8.peakBytes >= moreHessians, `${e16.peakBytes - e8.peakBytes} < ${moreHessians}`);
});

test('a target-size config estimates the target (the plan never spends more) and its output size from it', () => {
  const e = estimate(summary, cfg({ targetBpw: 2.25, bits: 4, rank: 32 }));
  assert.equal(e.bpw, 2.25);
  assert.equal(e.outputBytes, (2.25 * linearParams) / 8 + 2 * 1_000_000);
  assert.ok(estimate(summary, cfg({ bits: 4, rank: 32 })).bpw > 4, 'without a target, bits and rank decide');
});

test("the panel's peak is the engine's memory plan for the same model (tiny, Mixtral and Qwen-MoE with its shared expert; CPU and GPU forwards)", async () => {
  for (const dir of ['fixtures/tiny', 'fixtures/arch/mixtralt', 'fixtures/arch/qwen2moes']) {
    const s = await inspectModel(dir);
    const cfg = loadModelConfig(dir);
    for (const ep of ['cpu', 'webgpu'] as const)
      for (const backend of ['cpu', 'gpu'] as const)
        for (const memoryBudgetMB of [64, 4096]) {
          const c = { ...DEFAULT_CONFIG, calibText: 'a.txt', calibSamples: 16, ctx: 256, ep, backend, memoryBudgetMB };
          // the pipeline's plan: the GPU backend's layers in flight and the read-ahead on top of the model's plan
          const engine = runPlanOf(cfg, 16, 256, memoryBudgetMB, ep !== 'cpu', backend);
          assert.equal(estimate(s, c).peakBytes, engine.peak, `${dir} ${ep} ${backend} ${memoryBudgetMB}`);
          if (backend === 'gpu' && memoryBudgetMB === 4096) assert.equal(engine.layersInFlight, GPU_LAYERS_IN_FLIGHT, `${dir}: room for three`);
          assert.equal(engine.readAhead, ep === 'webgpu' && memoryBudgetMB === 4096, `${dir} ${ep} ${memoryBudgetMB}: read ahead with device forwards and room`);
        }
  }
});

test('an automatic budget (memoryBudgetMB 0) is planned from the machine the host reports', () => {
  const c = { ...DEFAULT_CONFIG, calibText: 'a.txt', memoryBudgetMB: 0 };
  const e8 = estimate(summary, c, { bytes: 8 * 2 ** 30, source: 'physical memory' });
  assert.equal(e8.budgetAuto, true);
  assert.equal(e8.budgetBytes, Math.floor(0.75 * 8192) * 2 ** 20);
  const given = estimate(summary, { ...c, memoryBudgetMB: 1000 }, { bytes: 8 * 2 ** 30, source: 'physical memory' });
  assert.equal(given.budgetAuto, false);
  assert.equal(given.budgetBytes, 1000 * 2 ** 20);
});
