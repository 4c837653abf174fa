// The memory plan of a calibrated run: within any budget at or above its floor the plan's peak stays
// inside the budget; activations spill exactly when they do not fit beside the floor; a pass may always
// hold the widest statistic; below the floor the plan says so. And the engine's plan of real model shapes
// (memoryPlanOf) against its parts computed by hand.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  CPU_ARENA_BATCHES,
  describeMemoryPlan,
  extraLayerBytes,
  hessianHostFactor,
  type MemoryShape,
  planMemory,
  RUNTIME_ALLOWANCE_BYTES,
  withLayersInFlight,
  withReadAhead,
} from '../../../src/protocol/memory_plan';
import { memoryPlanOf } from '../../../src/engine/run/pipeline_llama';
import { parseModelConfig } from '../../../src/engine/model/config';
import { mulberry32 } from '../../../src/engine/util/random';

const MiB = 2 ** 20;

function randomShape(r: () => number): MemoryShape {
  const hidden = 64 * (1 + Math.floor(r() * 128));
  const mlp = Math.floor(hidden * (2 + 2 * r()));
  const hostSums = r() < 0.5;
  return {
    activationStoreBytes: Math.floor(1 + r() * 256) * 512 * hidden * 4,
    blockWeightBytes: 4 * (4 * hidden * hidden + 3 * hidden * mlp),
    largestLayerWeights: hidden * mlp,
    widestStatistic: mlp,
    largestStageFloat32Bytes: 4 * mlp * mlp * (1 + Math.floor(r() * 8)),
    hostSums,
    hostBatchWorkBytes: hostSums ? 4 * 4096 * Math.max(mlp, 32 * 512) : 0,
  };
}

test('at or above its floor the plan stays inside the budget; activations spill exactly when they do not fit beside it', () => {
  const r = mulberry32(11);
  for (let i = 0; i < 2000; i++) {
    const s = randomShape(r);
    const budgetMB = Math.ceil((r() * 40 * 2 ** 30) / MiB) + 1;
    const p = planMemory(s, budgetMB);
    const widest = 4 * s.widestStatistic ** 2;
    assert.equal(p.runtime, RUNTIME_ALLOWANCE_BYTES + CPU_ARENA_BATCHES * s.hostBatchWorkBytes);
    assert.equal(p.floor, p.runtime + s.blockWeightBytes + 32 * s.largestLayerWeights + widest * hessianHostFactor(s.hostSums));
    assert.ok(p.passFloat32Bytes >= widest, 'a pass holds at least the widest statistic');
    assert.equal(p.activationsSpilled, p.floor + 2 * s.activationStoreBytes > p.budgetBytes);
    assert.equal(p.activations, p.activationsSpilled ? 0 : 2 * s.activationStoreBytes);
    if (p.floor <= p.budgetBytes) assert.ok(p.peak <= p.budgetBytes * (1 + 1e-12), `peak ${p.peak} > budget ${p.budgetBytes}`);
    else assert.ok(p.peak >= p.floor - 1e-6 * p.floor, 'below the floor the plan needs the floor');
    assert.equal(describeMemoryPlan(p).belowFloor !== undefined, p.floor > p.budgetBytes);
  }
});

test('a larger budget never plans less: activations come back into memory, passes grow', () => {
  const r = mulberry32(5);
  for (let i = 0; i < 300; i++) {
    const s = randomShape(r);
    let prev = planMemory(s, 1);
    for (const mb of [512, 2048, 4096, 8192, 16384, 65536]) {
      const p = planMemory(s, mb);
      assert.ok(p.passFloat32Bytes >= prev.passFloat32Bytes);
      assert.ok(!p.activationsSpilled || prev.activationsSpilled);
      prev = p;
    }
  }
});

test('the engine plans a 7B-shaped model from its config: block, layer, widest statistic and stage by hand', () => {
  const cfg = parseModelConfig(
    {
      architectures: ['LlamaForCausalLM'],
      model_type: 'llama',
      hidden_size: 4096,
      intermediate_size: 11008,
      num_attention_heads: 32,
      num_key_value_heads: 32,
      num_hidden_layers: 32,
      vocab_size: 32000,
      rms_norm_eps: 1e-5,
    },
    'config.json',
  );
  const N = 128,
    T = 512;
  const p = memoryPlanOf(cfg, N, T, 8192, false);
  assert.equal(p.weights, 4 * (4 * 4096 * 4096 + 3 * 4096 * 11008));
  assert.equal(p.layer, 32 * 4096 * 11008);
  assert.equal(p.floor, RUNTIME_ALLOWANCE_BYTES + p.weights + p.layer + 3 * 4 * 11008 ** 2);
  // 8 GiB: the two 1 GiB activation stores fit beside the 4.6 GiB floor; the largest stage (down_proj's one statistic) is one pass.
  assert.equal(p.activationsSpilled, false);
  assert.equal(p.activations, 2 * N * T * 4096 * 4);
  assert.equal(p.hessians, 3 * 4 * 11008 ** 2);
  assert.ok(p.peak <= 8192 * MiB);
  // 4 GiB is below the floor: the activations spill and the log says what the run needs.
  const small = memoryPlanOf(cfg, N, T, 4096, false);
  assert.equal(small.activationsSpilled, true);
  assert.match(describeMemoryPlan(small).belowFloor ?? '', /memoryBudgetMB 4096 is below this model's floor of about 4\d{3} MiB/);
  // Forwards on the CPU EP: its sessions' arenas (8 windows of 512 tokens; attention scores 32 × 512 wide) and float64 host sums.
  const cpu = memoryPlanOf(cfg, N, T, 8192, true);
  assert.equal(cpu.runtime, RUNTIME_ALLOWANCE_BYTES + CPU_ARENA_BATCHES * 4 * 4096 * 32 * 512);
  assert.equal(cpu.floor, cpu.runtime + p.weights + p.layer + 5 * 4 * 11008 ** 2);
});

test('layers in flight: one unless the budget has room above the plan for each further layer, never more than asked; the peak counts them', () => {
  const r = mulberry32(17);
  for (let i = 0; i < 1000; i++) {
    const s = randomShape(r);
    const p = planMemory(s, Math.ceil((r() * 40 * 2 ** 30) / MiB) + 1);
    const q = withLayersInFlight(p, 3);
    const n = q.layersInFlight,
      extra = extraLayerBytes(s.largestLayerWeights);
    assert.ok(n >= 1 && n <= 3);
    assert.equal(q.peak, p.peak + (n - 1) * extra);
    if (n > 1) assert.ok(q.peak <= p.budgetBytes, 'the extra layers fit the budget');
    if (n < 3) assert.ok(p.peak + n * extra > p.budgetBytes, 'one more would not fit');
    assert.equal(describeMemoryPlan(q).line.includes(`for ${n} layers at once`), n > 1);
  }
  assert.equal(withLayersInFlight(planMemory(randomShape(mulberry32(1)), 1), 3).layersInFlight, 1); // below the floor: one
  assert.equal(planMemory(randomShape(mulberry32(1)), 65536).layersInFlight, 1);
});

test('read-ahead: a second block of weights in the peak exactly when asked for and the room above the peak holds it', () => {
  const r = mulberry32(17);
  let on = 0,
    off = 0;
  for (let i = 0; i < 1000; i++) {
    const s = randomShape(r);
    const p = withLayersInFlight(planMemory(s, Math.ceil((r() * 40 * 2 ** 30) / MiB) + 1), 3);
    const asked = r() < 0.8;
    const q = withReadAhead(p, asked);
    const fits = p.budgetBytes - p.peak >= p.weights;
    assert.equal(q.readAhead, asked && fits);
    assert.equal(q.peak, p.peak + (q.readAhead ? p.weights : 0));
    if (q.readAhead) assert.ok(q.peak <= q.budgetBytes);
    assert.equal(describeMemoryPlan(q).line.includes('read ahead'), q.readAhead);
    if (q.readAhead) on++;
    else off++;
  }
  assert.ok(on > 50 && off > 50, `both cases drawn (${on} on, ${off} off)`);
});
