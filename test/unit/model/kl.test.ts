// KL divergence of a model's next-token distributions from a reference's (lopro eval --kl): the graph's
// per-window KL against a float64 computation from the reference forward's logits, and 0 against itself.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ComputeRuntime } from '../../../src/engine/compute/runtime';
import { forwardRef } from '../../../src/engine/model/llama_ref';
import { cachedWeights, openModel } from '../../../src/engine/model/loader';
import { perplexity } from '../../../src/engine/model/perplexity';
import { rng } from '../compute/_seeded';

/** Mean over the T − 1 predicting positions of KL(p ‖ q), float64, from logits [T, V]. */
function klRef(lp: ArrayLike<number>, lq: ArrayLike<number>, T: number, V: number): number {
  const logSoftmax = (l: ArrayLike<number>, t: number) => {
    let mx = -Infinity;
    for (let v = 0; v < V; v++) mx = Math.max(mx, l[t * V + v]);
    let s = 0;
    for (let v = 0; v < V; v++) s += Math.exp(l[t * V + v] - mx);
    const lse = mx + Math.log(s);
    return Float64Array.from({ length: V }, (_, v) => l[t * V + v] - lse);
  };
  let total = 0;
  for (let t = 0; t < T - 1; t++) {
    const a = logSoftmax(lp, t),
      b = logSoftmax(lq, t);
    for (let v = 0; v < V; v++) total += Math.exp(a[v]) * (a[v] - b[v]);
  }
  return total / (T - 1);
}

test('tiny vs tiny with noisy MLP weights: per-window KL equals the float64 reference; a model against itself gives 0', async () => {
  const m = openModel('fixtures/tiny');
  const base = cachedWeights(m.weights);
  const r = rng(5);
  const noisy = new Map<string, Float32Array>();
  const perturbed = async (name: string) => {
    const w = await base(name);
    if (!/mlp\.(up|down)_proj/.test(name)) return w;
    if (!noisy.has(name))
      noisy.set(
        name,
        w.map((v) => v * (1 + 0.2 * (r() - 0.5))),
      );
    return noisy.get(name)!;
  };
  const T = 32,
    V = m.cfg.vocabSize;
  const ids = Int32Array.from({ length: 3 * T }, () => Math.floor(r() * V));
  const rt = await ComputeRuntime.create({ ep: 'cpu' });
  try {
    const res = await perplexity(m.cfg, ids, perturbed, { ctx: T, rt, reference: base, batch: 2 });
    const all = new Map<string, Float32Array>();
    for (const e of m.checkpoint.entries) all.set(e.name, await base(e.name));
    const noisyAll = new Map([...all].map(([n, w]) => [n, noisy.get(n) ?? w]));
    for (let w = 0; w < 3; w++) {
      const wi = ids.subarray(w * T, (w + 1) * T);
      const want = klRef(
        forwardRef(m.cfg, wi, (n) => all.get(n)!),
        forwardRef(m.cfg, wi, (n) => noisyAll.get(n)!),
        T,
        V,
      );
      assert.ok(want > 1e-3, `the perturbation moves the distribution (KL ${want})`);
      assert.ok(Math.abs(res.windowKl![w] - want) < 1e-3 * want + 1e-6, `window ${w}: KL ${res.windowKl![w]} vs ${want}`);
    }
    assert.ok(Math.abs(res.kl! - (res.windowKl![0] + res.windowKl![1] + res.windowKl![2]) / 3) < 1e-9);
    const self = await perplexity(m.cfg, ids, base, { ctx: T, rt, reference: base });
    assert.ok(Math.abs(self.kl!) < 1e-6, `KL of a model against itself: ${self.kl}`);
    assert.equal(self.ppl, (await perplexity(m.cfg, ids, base, { ctx: T, rt })).ppl, 'the reference does not change the perplexity');
  } finally {
    await rt.dispose();
    m.close();
  }
});
