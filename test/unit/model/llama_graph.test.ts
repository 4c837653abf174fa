// The ONNX block/embed/head graphs against the float64 reference forward (llama_ref.ts): one synthetic model
// per family exercising its options (GQA, biases, q/k norms, sliding windows, llama3 rope, mixtures of experts
// with and without renormalised routing, a shared expert, dense layers among sparse ones), and the real tiny
// fixture.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ComputeRuntime } from '../../../src/engine/compute/runtime';
import { allLinears, blockKind, otherTensors, parseModelConfig, type ModelConfig } from '../../../src/engine/model/config';
import { blockRef, embedRef, forwardRef, headRef, nllFromLogitsRef } from '../../../src/engine/model/llama_ref';
import { LlamaForward, loadBlockWeights } from '../../../src/engine/model/llama_forward';
import { xtxParts } from '../../../src/engine/model/llama_graph';
import { passStats } from '../../../src/engine/run/stat_passes';
import { openModel, cachedWeights } from '../../../src/engine/model/loader';
import { perplexity } from '../../../src/engine/model/perplexity';
import { randF32, rng } from '../compute/_seeded';

function relErr(got: ArrayLike<number>, want: ArrayLike<number>): number {
  assert.equal(got.length, want.length);
  let num = 0,
    den = 0;
  for (let i = 0; i < got.length; i++) {
    num = Math.max(num, Math.abs(got[i] - want[i]));
    den = Math.max(den, Math.abs(want[i]));
  }
  return den === 0 ? num : num / den; // an expert routed no row: its statistics are exactly zero
}

/** Synthetic weights: N(0, ~1/fan_in)-ish uniforms, norms around 1. */
function synthWeights(cfg: ModelConfig, seed: number): Map<string, Float32Array> {
  const m = new Map<string, Float32Array>();
  let s = seed;
  const shapes = new Map(otherTensors(cfg));
  for (const l of allLinears(cfg)) shapes.set(l.weight, [l.rows, l.cols]);
  for (const [name, shape] of shapes) {
    const n = shape.reduce((a, b) => a * b, 1);
    const v = randF32(n, s++);
    const scale = name.endsWith('norm.weight') ? 0.3 : shape.length === 2 && !name.includes('embed') ? 1 / Math.sqrt(shape[1]) : 0.1;
    for (let i = 0; i < n; i++) v[i] = name.endsWith('norm.weight') ? 1 + scale * v[i] : scale * v[i] * 1.7;
    m.set(name, v);
  }
  return m;
}

const common = { num_hidden_layers: 2, vocab_size: 67, rms_norm_eps: 1e-5, max_position_embeddings: 64, tie_word_embeddings: false };

/** One synthetic config per family, each exercising what the family adds (the window is shorter than T). */
const synthConfigs: [string, ModelConfig][] = [
  [
    'llama: GQA 3:1, attention and MLP biases, llama3 rope',
    parseModelConfig(
      {
        ...common,
        model_type: 'llama',
        hidden_size: 48,
        intermediate_size: 80,
        num_attention_heads: 6,
        num_key_value_heads: 2,
        attention_bias: true,
        mlp_bias: true,
        rope_parameters: { rope_type: 'llama3', rope_theta: 5000, factor: 4, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 16 },
      },
      'llama/config.json',
    ),
  ],
  [
    'qwen2: q/k/v biases, sliding window 4 on layer 1 (layer_types)',
    parseModelConfig(
      {
        ...common,
        model_type: 'qwen2',
        hidden_size: 32,
        intermediate_size: 40,
        num_attention_heads: 4,
        num_key_value_heads: 2,
        use_sliding_window: true,
        sliding_window: 4,
        layer_types: ['full_attention', 'sliding_attention'],
      },
      'qwen2/config.json',
    ),
  ],
  [
    'qwen3: q/k RMSNorm per head, head_dim 12 ≠ hidden/heads',
    parseModelConfig({ ...common, model_type: 'qwen3', hidden_size: 32, intermediate_size: 40, num_attention_heads: 4, num_key_value_heads: 2, head_dim: 12 }, 'qwen3/config.json'),
  ],
  [
    'mistral: sliding window 5 on every layer',
    parseModelConfig(
      { ...common, model_type: 'mistral', hidden_size: 32, intermediate_size: 40, num_attention_heads: 4, num_key_value_heads: 1, sliding_window: 5 },
      'mistral/config.json',
    ),
  ],
  [
    'mixtral: 4 experts, top-2, renormalised',
    parseModelConfig(
      { ...common, model_type: 'mixtral', hidden_size: 32, intermediate_size: 24, num_attention_heads: 4, num_key_value_heads: 2, num_local_experts: 4, num_experts_per_tok: 2 },
      'mixtral/config.json',
    ),
  ],
  [
    'mixtral: 16 experts, top-1 (some routed no row of the batch)',
    parseModelConfig(
      { ...common, model_type: 'mixtral', hidden_size: 32, intermediate_size: 24, num_attention_heads: 4, num_key_value_heads: 2, num_local_experts: 16, num_experts_per_tok: 1 },
      'mixtral16/config.json',
    ),
  ],
  [
    'qwen2_moe: shared expert, top-2 of 5 not renormalised, q/k/v biases, dense layer 0 (decoder_sparse_step 2)',
    parseModelConfig(
      {
        ...common,
        model_type: 'qwen2_moe',
        hidden_size: 32,
        intermediate_size: 40,
        moe_intermediate_size: 16,
        shared_expert_intermediate_size: 24,
        num_attention_heads: 4,
        num_key_value_heads: 2,
        num_experts: 5,
        num_experts_per_tok: 2,
        decoder_sparse_step: 2,
      },
      'qwen2_moe/config.json',
    ),
  ],
  [
    'qwen3_moe: q/k norm, top-3 of 6 renormalised, num_local_experts spelling',
    parseModelConfig(
      {
        ...common,
        model_type: 'qwen3_moe',
        hidden_size: 32,
        intermediate_size: 40,
        moe_intermediate_size: 16,
        num_attention_heads: 4,
        num_key_value_heads: 2,
        head_dim: 8,
        num_local_experts: 6,
        num_experts_per_tok: 3,
        norm_topk_prob: true,
      },
      'qwen3_moe/config.json',
    ),
  ],
];

/** A synthetic model's weights, 2 windows of 13 random ids and its forward on the CPU EP with `layout`. */
async function synthForward(cfg: ModelConfig, layout: 'out_in' | 'in_out') {
  const T = 13,
    B = 2;
  const W = synthWeights(cfg, 7);
  const get = (n: string) => W.get(n) ?? assert.fail(`no ${n}`);
  const r = rng(3);
  const ids = Int32Array.from({ length: B * T }, () => Math.floor(r() * cfg.vocabSize));
  const rt = await ComputeRuntime.create({ ep: 'cpu' });
  return { T, B, get, ids, rt, fwd: new LlamaForward(cfg, T, rt, layout) };
}

for (const [what, cfg] of synthConfigs)
  for (const layout of ['out_in', 'in_out'] as const)
    test(`synthetic ${what}, weights ${layout}: block captures, statistics, routing and logits match the reference`, async () => {
      // 'in_out' (the GPU layout: linears transposed once by a Transpose session, MatMul in the block graph).
      const { T, B, get, ids, rt, fwd } = await synthForward(cfg, layout);
      let x = await fwd.embed(ids, B, get('model.embed_tokens.weight'));
      const xRef = [0, 1].map((b) => embedRef(cfg, ids.subarray(b * T, (b + 1) * T), get));
      assert.equal(relErr(x, [...xRef[0], ...xRef[1]]), 0);
      for (let l = 0; l < cfg.numLayers; l++) {
        const w = await loadBlockWeights(cfg, l, get);
        const act = await fwd.block(x, B, w, l, 'activations');
        const st = await fwd.block(x, B, w, l, 'stats');
        const refs = xRef.map((xr) => blockRef(cfg, l, xr, T, get));
        assert.deepEqual([...act.activations!.keys()].sort(), [...refs[0].trace.inputs.keys()].sort(), `inputs of block ${l}`);
        for (const k of act.activations!.keys()) {
          const want = [...refs[0].trace.inputs.get(k)!, ...refs[1].trace.inputs.get(k)!];
          assert.ok(relErr(act.activations!.get(k)!, want) < 1e-5, `${k} block ${l}`); // measured ~3e-7
          // stats = XᵀX and Σ|x| of the captured activations
          const a = act.activations!.get(k)!,
            n = a.length / (B * T);
          const xtx = new Float64Array(n * n),
            abs = new Float64Array(n);
          for (let t = 0; t < B * T; t++)
            for (let i = 0; i < n; i++) {
              abs[i] += Math.abs(a[t * n + i]);
              for (let j = 0; j < n; j++) xtx[i * n + j] += a[t * n + i] * a[t * n + j];
            }
          assert.ok(relErr(st.stats!.get(k)!.xtx, xtx) < 1e-5, `${k} xtx`);
          assert.ok(relErr(st.stats!.get(k)!.absSum, abs) < 1e-5, `${k} abs`);
          // The pipeline's pass for some inputs (pruned graph, no y) computes the same statistic.
          const one = (await fwd.blockStats(x, B, w, l, [k])).stats.get(k)!;
          assert.ok(relErr(one.xtx, xtx) < 1e-5, `${k} blockStats xtx`);
          assert.ok(relErr(one.absSum, abs) < 1e-5, `${k} blockStats abs`);
          // The GPU pipeline's running-sum graph: stats of the batch added to the sums fed in.
          const seedX = randF32(n * n, 9),
            seedA = randF32(n, 10);
          const accd = (
            await fwd.blockStatsAccumulate(x, B, await fwd.weightTensors(w, l), l, [k], { stats: new Map([[k, { xtx: [rt.host(seedX, [n, n])], absSum: rt.host(seedA, [n]) }]]) })
          ).stats.get(k)!;
          assert.ok(
            relErr(
              accd.xtx[0].data as Float32Array,
              xtx.map((v, i) => v + seedX[i]),
            ) < 1e-5,
            `${k} accumulated xtx`,
          );
          assert.ok(
            relErr(
              accd.absSum.data as Float32Array,
              abs.map((v, i) => v + seedA[i]),
            ) < 1e-5,
            `${k} accumulated abs`,
          );
        }
        if (cfg.moe?.isSparse(l)) {
          // Rows routed to each expert: the graph's top-k against the reference's sort.
          const E = cfg.moe.numExperts;
          const want = Array.from({ length: E }, (_, e) => refs.reduce((s2, rf) => s2 + rf.trace.routed.get(e)!.filter(Boolean).length, 0));
          const got = (await fwd.blockStats(x, B, w, l, ['routing'])).routed!;
          assert.deepEqual([...got], want, `routing of block ${l}`);
          if (what.includes('routed no row')) assert.ok(want.includes(0), `an expert without rows in block ${l}: ${want}`);
          assert.equal(
            want.reduce((a, c) => a + c, 0),
            B * T * cfg.moe.topK,
          );
          const seeded = Float32Array.from({ length: E }, (_, e) => e + 0.5);
          const acc = await fwd.blockStatsAccumulate(x, B, await fwd.weightTensors(w, l), l, ['routing'], { stats: new Map(), routed: rt.host(seeded, [E]) });
          assert.deepEqual(
            [...(acc.routed!.data as Float32Array)],
            want.map((c, e) => c + e + 0.5),
          );
        }
        assert.ok(relErr(act.y, [...refs[0].y, ...refs[1].y]) < 1e-5, `y block ${l}`);
        assert.deepEqual(st.y, act.y);
        x = act.y;
        xRef.forEach((_, b) => (xRef[b] = refs[b].y));
      }
      const logits = await fwd.headLogits(x, B, T, get('model.norm.weight'), get('lm_head.weight'));
      const lRef = [...headRef(cfg, xRef[0], T, get), ...headRef(cfg, xRef[1], T, get)];
      assert.ok(relErr(logits, lRef) < 1e-5, 'logits'); // measured ~4e-7
      const nll = await fwd.headNll(x, B, ids, get('model.norm.weight'), get('lm_head.weight'));
      const nRef = [0, 1].flatMap((b) => [...nllFromLogitsRef(headRef(cfg, xRef[b], T, get), ids.subarray(b * T, (b + 1) * T), cfg.vocabSize)]);
      assert.ok(relErr(nll, nRef) < 1e-5, 'nll');
      await rt.dispose();
    });

for (const layout of ['out_in', 'in_out'] as const)
  test(`tiny fixture (tied head), weights ${layout}: window NLL of the graph forward equals the float64 reference`, async () => {
    const m = openModel('fixtures/tiny');
    const weights = cachedWeights(m.weights);
    const sync = new Map<string, Float32Array>();
    for (const n of m.checkpoint.entries.map((e) => e.name)) sync.set(n, await weights(n));
    const r = rng(11),
      T = 48;
    const ids = Int32Array.from({ length: 2 * T }, () => Math.floor(r() * m.cfg.vocabSize));
    const rt = await ComputeRuntime.create({ ep: 'cpu' });
    const res = await perplexity(m.cfg, ids, weights, { ctx: T, rt, layout });
    for (let w = 0; w < 2; w++) {
      const wi = ids.subarray(w * T, (w + 1) * T);
      const nll = nllFromLogitsRef(
        forwardRef(m.cfg, wi, (n) => sync.get(n)!),
        wi,
        m.cfg.vocabSize,
      );
      const mean = nll.reduce((a, b) => a + b, 0) / nll.length;
      assert.ok(Math.abs(res.windowNll[w] - mean) / mean < 1e-5, `window ${w}: ${res.windowNll[w]} vs ${mean}`); // measured ~1e-7
    }
    await rt.dispose();
    m.close();
  });

// XᵀX wider than one GPU binding (a 70B down_proj's: 3.06 GiB) comes out of the statistics graphs in row parts, is
// summed across batches in parts and finalised to H in parts. Here parts of 5 rows on a small model: the same
// statistics as the whole matrix, on every path (host sums, running sums, the device pass's finalised H).
for (const layout of ['out_in', 'in_out'] as const)
  test(`XᵀX in row parts, weights ${layout}: blockStats, running sums and the finalised H equal the whole-matrix graphs`, async () => {
    const [, cfg] = synthConfigs[0];
    const T = 13,
      B = 2,
      l = 0;
    const W = synthWeights(cfg, 7);
    const get = (n: string) => W.get(n) ?? assert.fail(`no ${n}`);
    const r = rng(5);
    const ids = Int32Array.from({ length: B * T }, () => Math.floor(r() * cfg.vocabSize));
    const rt = await ComputeRuntime.create({ ep: 'cpu' });
    const whole = new LlamaForward(cfg, T, rt, layout);
    const n = cfg.hiddenSize;
    const split = new LlamaForward(cfg, T, rt, layout, 4 * n * 5);
    assert.ok(xtxParts(n, 4 * n * 5).length > 2 && xtxParts(n, 4 * n * 5).every(([a, b]) => b - a <= 5), 'several parts');
    const x = await whole.embed(ids, B, get('model.embed_tokens.weight'));
    const w = await loadBlockWeights(cfg, l, get);
    const keys = ['attn_in', 'attn_out', 'mlp_in'] as const;
    const a = await whole.blockStats(x, B, w, l, keys),
      c = await split.blockStats(x, B, w, l, keys);
    for (const k of keys) {
      assert.ok(relErr(c.stats.get(k)!.xtx, a.stats.get(k)!.xtx) < 1e-6, `${k} xtx`);
      assert.deepEqual(c.stats.get(k)!.absSum, a.stats.get(k)!.absSum);
    }
    // The device pass (running sums over two batches, then H = (XᵀX + XᵀXᵀ)/N) with parts = without.
    const hooks = { log: () => {} } as unknown as Parameters<typeof passStats>[7];
    const pass = async (fwd: LlamaForward) =>
      passStats(
        fwd,
        rt,
        () => x,
        [
          [0, B],
          [0, B],
        ],
        await fwd.weightTensors(w, l),
        l,
        [...keys],
        hooks,
        2 * B,
        T,
        { onDevice: true },
      );
    const [pa, pc] = [await pass(whole), await pass(split)];
    for (const k of keys) {
      const [ha, hc] = [pa.stats.get(k)!, pc.stats.get(k)!];
      assert.equal(hc.H32.length, n * n);
      assert.ok(relErr(hc.H32, ha.H32) < 1e-6, `${k} H`);
      for (let i = 0; i < n; i++) for (let j = 0; j < i; j++) assert.equal(hc.H32[i * n + j], hc.H32[j * n + i], `${k} H symmetric at ${i},${j}`);
      assert.deepEqual(hc.absMean, ha.absMean);
    }
    await rt.dispose();
  });

// The statistics passes of a dense block on a GPU start each stage from what the stage before kept (attention output,
// h1, activation) instead of recomputing the block from x: chained, the stage graphs give the full block graph's y and
// statistics, and with running sums fed in, those sums plus the batch's. (Dense blocks only: qwen2_moe's layer 0 too.)
const denseBlocks = (cfg: ModelConfig) => [...Array(cfg.numLayers).keys()].filter((l) => !blockKind(cfg, l).moe);
for (const [what, cfg] of synthConfigs.filter(([, c]) => denseBlocks(c).length))
  for (const layout of ['out_in', 'in_out'] as const)
    test(`synthetic ${what}, weights ${layout}: the kept-intermediate stage graphs equal the full block graph`, async () => {
      const { T, B, get, ids, rt, fwd } = await synthForward(cfg, layout);
      let x = await fwd.embed(ids, B, get('model.embed_tokens.weight'));
      for (let l = 0; l < cfg.numLayers; l++) {
        const w = await loadBlockWeights(cfg, l, get);
        const wT = await fwd.weightTensors(w, l);
        const full = await fwd.block(x, B, wT, l, 'stats');
        if (!denseBlocks(cfg).includes(l)) {
          await assert.rejects(fwd.stage('attn_out', rt.host(x, [B, T, cfg.hiddenSize]), {}, wT, l), /stage graphs are for dense blocks/);
          x = full.y;
          continue;
        }
        const xT = rt.host(x, [B, T, cfg.hiddenSize]);
        const a = await fwd.stage('attn_out', xT, {}, wT, l);
        const m = await fwd.stage('mlp_in', xT, { attn_out: a.kept }, wT, l);
        const act = await fwd.stage('mlp_act', xT, { h1: m.kept }, wT, l);
        const y = await fwd.stage('out', xT, { h1: m.kept, act: act.kept }, wT, l);
        assert.deepEqual(y.kept.dims, [B, T, cfg.hiddenSize]);
        assert.ok(relErr(y.kept.data as Float32Array, full.y) < 1e-6, `y block ${l}`);
        for (const [k, st] of [
          ['attn_out', a],
          ['mlp_in', m],
          ['mlp_act', act],
        ] as const) {
          const got = st.stats!.stats.get(k)!;
          assert.ok(relErr(got.xtx[0].data as Float32Array, full.stats!.get(k)!.xtx) < 1e-6, `${k} xtx block ${l}`);
          assert.ok(relErr(got.absSum.data as Float32Array, full.stats!.get(k)!.absSum) < 1e-6, `${k} abssum block ${l}`);
        }
        // Running sums: the batch's statistics added to those fed in.
        const acc = await fwd.stage('mlp_act', xT, { h1: m.kept }, wT, l, act.stats);
        const twice = acc.stats!.stats.get('mlp_act')!;
        const once = full.stats!.get('mlp_act')!;
        assert.ok(
          relErr(
            twice.xtx[0].data as Float32Array,
            once.xtx.map((v) => 2 * v),
          ) < 1e-6,
          `accumulated xtx block ${l}`,
        );
        assert.ok(
          relErr(
            twice.absSum.data as Float32Array,
            once.absSum.map((v) => 2 * v),
          ) < 1e-6,
          `accumulated abssum block ${l}`,
        );
        assert.ok(relErr(acc.kept.data as Float32Array, act.kept.data as Float32Array) === 0, 'the kept activation does not depend on the sums');
        x = full.y;
      }
      await rt.dispose();
    });
