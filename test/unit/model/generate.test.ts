// Generation through the exported graph's KV cache (issue 18): the logits of a prompt fed whole equal those of
// the same tokens fed as a prefill and then one at a time with the cache (dense, sliding-window and MoE
// families); greedy generation with the cache equals greedy by recomputing the whole sequence each step; the
// exported graph without a past gives the engine's own forward's logits; sampling's pure parts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as ort from 'onnxruntime-node';
import { ComputeRuntime } from '../../../src/engine/compute/runtime';
import { openModel } from '../../../src/engine/model/loader';
import { forwardRef } from '../../../src/engine/model/llama_ref';
import { argmax, nucleus, sampleToken } from '../../../src/engine/model/sampling';
import { emptyPast, fullWindowCacheFeeds } from '../../../src/engine/run/export_onnx_eval';
import { generate, openGenerationModel, type GenerationModel } from '../../../src/engine/run/generate';
import { mulberry32 } from '../../../src/engine/util/random';

const i64 = (v: number[], dims: number[]) => new ort.Tensor('int64', BigInt64Array.from(v.map(BigInt)), dims);

/** Logits [T, V] of `ids` fed whole with nothing cached. */
async function wholeLogits(m: GenerationModel, ids: number[]): Promise<Float32Array> {
  const out = await m.rt.run(m.session, { input_ids: i64(ids, [1, ids.length]), ...fullWindowCacheFeeds(m.session, 1, ids.length) });
  return out.logits.data as Float32Array;
}

/** Logits [T, V] of `ids` as a prefill of `p` tokens and then one call per token with the cache. */
async function cachedLogits(m: GenerationModel, ids: number[], p: number): Promise<Float32Array> {
  const V = m.cfg.vocabSize;
  const res = new Float32Array(ids.length * V);
  let past = emptyPast(m.session, 1);
  let pos = 0;
  for (const chunk of [ids.slice(0, p), ...ids.slice(p).map((t) => [t])]) {
    const T = chunk.length;
    const out = await m.rt.run(m.session, {
      input_ids: i64(chunk, [1, T]),
      attention_mask: i64(new Array(pos + T).fill(1), [1, pos + T]),
      position_ids: i64(
        chunk.map((_, i) => pos + i),
        [1, T],
      ),
      ...past,
    });
    assert.deepEqual(out['present.0.key'].dims.slice(2, 3), [pos + T], 'the cache grows by the tokens fed');
    res.set(out.logits.data as Float32Array, pos * V);
    past = {};
    for (const [n, t] of Object.entries(out)) if (n.startsWith('present.')) past[n.replace('present.', 'past_key_values.')] = t;
    pos += T;
  }
  return res;
}

function maxRelDiff(a: Float32Array, b: Float32Array): number {
  let d = 0,
    s = 0;
  for (let i = 0; i < a.length; i++) {
    d = Math.max(d, Math.abs(a[i] - b[i]));
    s = Math.max(s, Math.abs(b[i]));
  }
  return d / s;
}

for (const [name, dir, T] of [
  ['tiny (llama)', 'fixtures/tiny', 24],
  // A window of 48 / 32 tokens: 70 tokens cross it, so the cached path must mask by place in the cache.
  ['mistrals (sliding window 48)', 'fixtures/arch/mistrals', 70],
  ['qwen2s (sliding window 32, qkv bias)', 'fixtures/arch/qwen2s', 70],
  ['qwen3moes (q/k norm, experts)', 'fixtures/arch/qwen3moes', 24],
] as const) {
  test(`KV cache, ${name}: prefill + one token at a time gives the whole sequence's logits`, async () => {
    const rt = await ComputeRuntime.create({ ep: 'cpu' });
    try {
      const m = await openGenerationModel(dir, rt);
      const rand = mulberry32(7);
      const ids = Array.from({ length: T }, () => Math.floor(rand() * Math.min(m.cfg.vocabSize, 4000)));
      const whole = await wholeLogits(m, ids);
      // The whole-sequence pass itself against the float64 twin (which masks the sliding window its own way).
      const model = openModel(dir);
      const ref = forwardRef(model.cfg, ids, (n) => model.checkpoint.readFloat32(n));
      model.close();
      const dRef = maxRelDiff(whole, Float32Array.from(ref));
      assert.ok(dRef < 1e-4, `generation graph vs forwardRef: ${dRef}`);
      const cached = await cachedLogits(m, ids, 5);
      const d = maxRelDiff(cached, whole);
      assert.ok(d < 1e-4, `max |Δlogit| / max |logit| = ${d}`);
      // And the comparison can fail: a prefill that drops the cache's first token changes the logits.
      const shifted = await cachedLogits(m, ids.slice(1), 4);
      assert.ok(maxRelDiff(shifted.subarray(4 * m.cfg.vocabSize), whole.subarray(5 * m.cfg.vocabSize)) > 1e-3);
    } finally {
      await rt.dispose();
    }
  });
}

test("the generation graph with nothing cached gives the float64 reference forward's logits (tiny)", async () => {
  const rt = await ComputeRuntime.create({ ep: 'cpu' });
  const model = openModel('fixtures/tiny');
  try {
    const m = await openGenerationModel('fixtures/tiny', rt);
    const ids = Array.from(m.tokenizer.encode('The committee agreed that the proposal was sound, and yet'));
    const onnx = await wholeLogits(m, ids);
    const ref = forwardRef(model.cfg, ids, (n) => model.checkpoint.readFloat32(n));
    const d = maxRelDiff(onnx, Float32Array.from(ref));
    assert.ok(d < 1e-4, `export graph vs forwardRef: ${d}`);
  } finally {
    model.close();
    await rt.dispose();
  }
});

test('greedy generation with the cache = greedy by recomputing the whole sequence at each step (tiny)', async () => {
  const rt = await ComputeRuntime.create({ ep: 'cpu' });
  try {
    const m = await openGenerationModel('fixtures/tiny', rt);
    const prompt = 'Once the results were in, the team';
    const deltas: string[] = [];
    const r = await generate(m, prompt, { maxTokens: 12, onText: (t) => deltas.push(t) });
    const seq = Array.from(m.tokenizer.encode(prompt));
    const expected: number[] = [];
    for (let i = 0; i < r.tokens.length; i++) {
      const l = await wholeLogits(m, seq);
      const next = argmax(l.subarray((seq.length - 1) * m.cfg.vocabSize, seq.length * m.cfg.vocabSize));
      expected.push(next);
      seq.push(next);
    }
    assert.deepEqual(r.tokens, expected);
    assert.equal(r.promptTokens, m.tokenizer.encode(prompt).length);
    assert.ok(r.stop === 'eos' || r.tokens.length === 12);
    assert.equal(deltas.join(''), r.text, 'the streamed pieces make up the text');
    assert.equal(r.text, m.tokenizer.decode(r.tokens).replace(/\uFFFD$/, ''));
    assert.ok(r.prefillTokensPerSecond > 0 && (r.tokens.length < 2 || r.decodeTokensPerSecond > 0));
  } finally {
    await rt.dispose();
  }
});

test('sampling: the same seed draws the same continuation, another seed another one; temperature 0 is greedy', async () => {
  const rt = await ComputeRuntime.create({ ep: 'cpu' });
  try {
    const m = await openGenerationModel('fixtures/tiny', rt);
    const s = { temperature: 1.2, topP: 0.95 };
    const a = await generate(m, 'In the morning', { maxTokens: 16, sampling: s, seed: 1 });
    const b = await generate(m, 'In the morning', { maxTokens: 16, sampling: s, seed: 1 });
    const c = await generate(m, 'In the morning', { maxTokens: 16, sampling: s, seed: 2 });
    assert.deepEqual(a.tokens, b.tokens);
    assert.notDeepEqual(a.tokens, c.tokens);
    const g1 = await generate(m, 'In the morning', { maxTokens: 8, sampling: { temperature: 0, topP: 1 }, seed: 1 });
    const g2 = await generate(m, 'In the morning', { maxTokens: 8, seed: 5 });
    assert.deepEqual(g1.tokens, g2.tokens);
  } finally {
    await rt.dispose();
  }
});

test('sampling: argmax, nucleus and draws on a known distribution', () => {
  assert.equal(argmax([1, 3, 3, 2]), 1, 'ties go to the lowest id');
  // probabilities 0.5, 0.25, 0.125, 0.125 at temperature 1
  const logits = [Math.log(0.125), Math.log(0.5), Math.log(0.125), Math.log(0.25)];
  const all = nucleus(logits, { temperature: 1, topP: 1 });
  assert.deepEqual(all.ids, [1, 3, 0, 2]);
  assert.ok(Math.abs(all.probs[0] - 0.5) < 1e-12 && Math.abs(all.probs[3] - 0.125) < 1e-12);
  // top-p 0.6 keeps the tokens up to the one that crosses it: 0.5, then 0.25 → {1, 3}, renormalised 2/3, 1/3.
  const top = nucleus(logits, { temperature: 1, topP: 0.6 });
  assert.deepEqual(top.ids, [1, 3]);
  assert.ok(Math.abs(top.probs[0] - 2 / 3) < 1e-12);
  // temperature 0.5 squares the odds: 0.25, 0.0625, 0.015625, 0.015625 over 0.34375
  const cold = nucleus(logits, { temperature: 0.5, topP: 1 });
  assert.ok(Math.abs(cold.probs[0] - 0.25 / 0.34375) < 1e-12);
  // Draws follow the distribution: 20 000 draws within 2 % of each probability.
  const rand = mulberry32(3);
  const counts = [0, 0, 0, 0];
  for (let i = 0; i < 20000; i++) counts[sampleToken(logits, { temperature: 1, topP: 1 }, rand())]++;
  [0.125, 0.5, 0.125, 0.25].forEach((p, i) => assert.ok(Math.abs(counts[i] / 20000 - p) < 0.02, `id ${i}: ${counts[i] / 20000} vs ${p}`));
  assert.equal(sampleToken(logits, { temperature: 0, topP: 1 }, 0.99), 1);
  assert.equal(sampleToken(logits, { temperature: 1, topP: 0.01 }, 0.99), 1, 'a tiny top-p is greedy');
});
