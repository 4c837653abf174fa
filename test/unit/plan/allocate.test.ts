// The bit allocation against allocate_ref (every plan of small cases enumerated): the exact solver's error lies
// between the true optimum at the target and the optimum at the target less its rounding slack, the greedy one's
// is never below the optimum, and neither plan's bits per weight exceeds the target.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { allocate, InfeasibleTarget, minPlanBpw } from '../../../src/protocol/allocate';
import type { LayerMeasurement } from '../../../src/protocol/plan';
import { rng } from '../quant/synthetic';

/** Least summed loss over every plan whose exact bits stay within budgetBits (Infinity if none). */
function allocateRef(layers: LayerMeasurement[], budgetBits: number): number {
  let best = Number.POSITIVE_INFINITY;
  const walk = (i: number, bits: number, loss: number) => {
    if (bits > budgetBits * (1 + 1e-12)) return;
    if (i === layers.length) {
      best = Math.min(best, loss);
      return;
    }
    const l = layers[i];
    for (const c of l.candidates) walk(i + 1, bits + c.bpw * l.rows * l.cols, loss + (c.loss * l.gain) / l.streamEnergy);
  };
  walk(0, 0, 0);
  return best;
}

function randomCase(seed: number, nLayers: number): LayerMeasurement[] {
  const u = rng(seed);
  return Array.from({ length: nLayers }, (_, i) => {
    const rows = 64 * (1 + Math.floor(u() * 8)),
      cols = 64 * (1 + Math.floor(u() * 8));
    const scale = 10 ** (u() * 4);
    // Loss falling with bits, not always convexly; some candidates dominated.
    const candidates = Array.from({ length: 2 + Math.floor(u() * 4) }, () => {
      const bpw = 2 + u() * 2.5;
      return { config: { method: 'lopro' as const, bits: Math.round(bpw), rank: 0 }, bpw, loss: scale * 2 ** (-2 * bpw) * (0.5 + u()) };
    });
    // What reaches the block output, over the stream energy: the allocation weighs each layer's errors by it.
    return { name: `l${i}`, block: 0, module: 'x', rows, cols, sampledRows: rows, candidates, gain: 0.05 + 2 * u(), streamEnergy: 100 + 1000 * u() };
  });
}

const size = (ls: LayerMeasurement[]) => ls.reduce((s, l) => s + l.rows * l.cols, 0);

test('exact and greedy allocations against every plan enumerated, 200 random cases', () => {
  let exactBeatsGreedy = 0;
  for (let seed = 1; seed <= 200; seed++) {
    const layers = randomCase(seed, 2 + (seed % 5));
    const lo = minPlanBpw(layers);
    const target = lo + (seed % 7) * 0.15 + 0.01;
    const n = size(layers);
    const opt = allocateRef(layers, target * n);
    const exact = allocate(layers, target, 'exact');
    const greedy = allocate(layers, target, 'greedy');
    for (const p of [exact, greedy]) {
      assert.ok(p.bpw <= target + 1e-12, `seed ${seed} ${p.allocator}: ${p.bpw} > ${target}`);
      assert.ok(p.loss >= opt * (1 - 1e-12), `seed ${seed} ${p.allocator}: ${p.loss} below the optimum ${opt}`);
      const sum = p.choices.reduce((s, ch, i) => s + (layers[i].candidates[ch.candidate].loss * layers[i].gain) / layers[i].streamEnergy, 0);
      assert.ok(Math.abs(sum - p.loss) <= 1e-9 * sum, 'loss is the chosen candidates’ weighted sum');
    }
    // Rounding each cost up to a unit of the spare budget costs at most one unit per layer.
    const floorBits = layers.reduce((s, l) => s + Math.min(...l.candidates.map((c) => c.bpw)) * l.rows * l.cols, 0);
    const slack = (layers.length * (target * n - floorBits)) / 20000; // the fewest units the solver uses
    assert.ok(exact.loss <= allocateRef(layers, target * n - slack) * (1 + 1e-12), `seed ${seed}: exact ${exact.loss} worse than the optimum within the slack`);
    assert.ok(exact.loss <= greedy.loss, `seed ${seed}: exact ${exact.loss} above greedy ${greedy.loss}`);
    if (exact.loss < greedy.loss * (1 - 1e-9)) exactBeatsGreedy++;
  }
  // The cases are built so that the greedy hull walk is sometimes not optimal (what the exact solver is for).
  assert.ok(exactBeatsGreedy > 0, 'greedy was optimal in every case: the test does not separate them');
});

test('a target below every plan is refused with the smallest reachable bits per weight; at it, every layer is at its cheapest', () => {
  const layers = randomCase(7, 4);
  const lo = minPlanBpw(layers);
  assert.throws(
    () => allocate(layers, lo - 0.01),
    (e: unknown) => e instanceof InfeasibleTarget && Math.abs(e.minBpw - lo) < 1e-12,
  );
  const p = allocate(layers, lo + 1e-9);
  p.choices.forEach((ch, i) => assert.equal(layers[i].candidates[ch.candidate].bpw, Math.min(...layers[i].candidates.map((c) => c.bpw))));
  // A generous target takes every layer's least-loss candidate.
  const rich = allocate(layers, 10);
  rich.choices.forEach((ch, i) => assert.equal(layers[i].candidates[ch.candidate].loss, Math.min(...layers[i].candidates.map((c) => c.loss))));
});

test('the bits go where the error reaches the stream: equal layer errors, the larger gain / stream energy wins', () => {
  const layer = (name: string, gain: number, streamEnergy: number): LayerMeasurement => ({
    name,
    block: 0,
    module: 'x',
    rows: 64,
    cols: 64,
    sampledRows: 64,
    gain,
    streamEnergy,
    candidates: [
      { config: { method: 'lopro', bits: 2, rank: 0 }, bpw: 2, loss: 10 },
      { config: { method: 'lopro', bits: 3, rank: 0 }, bpw: 3, loss: 2 },
    ],
  });
  // Room for one 3-bit layer of the two.
  for (const [a, b, want] of [
    [layer('a', 1, 100), layer('b', 0.2, 100), 'a'],
    [layer('a', 1, 1000), layer('b', 1, 100), 'b'],
  ] as const) {
    const p = allocate([a, b], 2.5);
    const up = p.choices.filter((ch, i) => [a, b][i].candidates[ch.candidate].config.bits === 3).map((ch) => ch.name);
    assert.deepEqual(up, [want]);
  }
});
