// Pipelined coordinated GPTQ (gptq_parallel.ts `pipeline`): the device applies block k's lazy update
// while the workers run block k+1, each worker correcting its next slab with its own last block's
// errors. On the CPU EP against the float64 TypeScript kernel and the unpipelined hybrid: codes agree
// up to float32 near-ties, the loss to float32 rounding.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { ComputeRuntime } from '../../../src/engine/compute/runtime';
import { gptqQuantize } from '../../../src/engine/quant/gptq';
import { createHostUpdater, createResidentUpdater } from '../../../src/engine/quant/gptq_device';
import { GptqPool, gptqQuantizeParallel } from '../../../src/engine/quant/gptq_parallel';
import { HessianAccumulator } from '../../../src/engine/quant/hessian';
import { syntheticActivations, syntheticWeights } from '../quant/synthetic';

const rows = 61, cols = 352;
const W = syntheticWeights(rows, cols, 91);
const acc = new HessianAccumulator(cols);
acc.add(syntheticActivations(900, cols, 92), 900, 4);
const H = acc.finish();
const rtP = ComputeRuntime.create({ ep: 'cpu', intraOpNumThreads: 1 });
const pool = GptqPool.create(3);
after(async () => {
  await pool.close();
  await (await rtP).dispose();
});

function agree(a: Uint8Array, b: Uint8Array): number {
  let same = 0;
  for (let i = 0; i < a.length; i++) if (a[i] === b[i]) same++;
  return same / a.length;
}

// cols 352 = 11 blocks of 32 (uneven last slab for B 48), groups that do and don't divide B.
const cases: [string, { bits: number; groupSize: number; blockSize: number; actOrder?: boolean; staticGroups?: boolean }][] = [
  ['g32 B32', { bits: 2, groupSize: 32, blockSize: 32 }],
  ['g64 B48 (slab B+G)', { bits: 3, groupSize: 64, blockSize: 48 }],
  ['act-order g32 B64', { bits: 2, groupSize: 32, blockSize: 64, actOrder: true }],
  ['per-row B32', { bits: 4, groupSize: -1, blockSize: 32 }],
];

for (const [name, opts] of cases) {
  for (const mode of ['resident', 'host'] as const) {
    test(`pipelined hybrid GPTQ (CPU EP, ${mode}) ≈ TypeScript kernel and the unpipelined hybrid (${name})`, async () => {
      const rt = await rtP;
      const make = mode === 'resident' ? createResidentUpdater : createHostUpdater;
      const lazy = (r: number, c: number, h: Float64Array, s: number) => make(rt, r, c, h, s);
      const ref = gptqQuantize(W, rows, cols, H, opts);
      const plain = await gptqQuantizeParallel(W, rows, cols, H, { ...opts, pool, lazy });
      const pipe = await gptqQuantizeParallel(W, rows, cols, H, { ...opts, pool, lazy, pipeline: true });
      const a = agree(pipe.codes, ref.codes), b = agree(pipe.codes, plain.codes);
      assert.ok(a >= 0.995, `codes vs TS ${a}`);
      assert.ok(b >= 0.995, `codes vs unpipelined ${b}`);
      assert.ok(Math.abs(pipe.loss - ref.loss) / ref.loss < 1e-4, `loss ${pipe.loss} vs ${ref.loss}`);
      // A wrong slab (stale by one block, or misplaced) shows up as a much larger loss; this guards it.
      assert.ok(Math.abs(pipe.loss - plain.loss) / plain.loss < 1e-4, `loss ${pipe.loss} vs unpipelined ${plain.loss}`);
      process.stdout.write(`# ${mode} ${name}: codes=TS ${a.toFixed(5)}, =plain ${b.toFixed(5)}, loss rel ${(Math.abs(pipe.loss - ref.loss) / ref.loss).toExponential(2)}\n`);
    });
  }
}
