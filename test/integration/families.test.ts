// Every decoder family against transformers itself: the fixtures in fixtures/arch/ were trained and measured
// by transformers (bench/device/arch_fixtures.py; numbers in fixtures/arch/references.json). The engine's
// float perplexity must equal transformers' (a Qwen2 model evaluated without its q/k/v biases, as the engine
// once did silently, is 4 % off), its routing must send each expert the calibration tokens transformers'
// router sends it, and a checkpoint that does not fit its family must be refused by name, before anything
// is written.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cpSync, existsSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ComputeRuntime } from '../../src/engine/compute/runtime';
import { SafetensorsFile } from '../../src/engine/io/safetensors';
import { writeSafetensorsAtomic, type TensorData } from '../../src/engine/io/safetensors_writer';
import { calibrationWindows } from '../../src/engine/model/calibration';
import { LlamaForward, loadBlockWeights } from '../../src/engine/model/llama_forward';
import { cachedWeights, openModel } from '../../src/engine/model/loader';
import { loadTokenizer, tokenizeFile } from '../../src/engine/model/tokenizer';
import { PERSUASION, ROOT, TRAIN, runCli, tmp } from './helpers';

const ARCH = join(ROOT, 'fixtures/arch');
const JARGON = join(ROOT, 'fixtures/text/jargon_tail.txt');

interface Reference {
  class: string;
  ppl: Record<string, number>;
  tensors: string[];
  routed_calibration_tokens?: Record<string, number[]>;
}
const refs = JSON.parse(readFileSync(join(ARCH, 'references.json'), 'utf8')) as { ctx: number; models: Record<string, Reference> };
const names = Object.keys(refs.models);

test('fixtures/arch holds one model per supported family beyond llama', () => {
  const families = names.map((n) => JSON.parse(readFileSync(join(ARCH, n, 'config.json'), 'utf8')).model_type as string).sort();
  assert.deepEqual(families, ['mistral', 'mixtral', 'qwen2', 'qwen2_moe', 'qwen3', 'qwen3_moe']);
  assert.deepEqual(
    readdirSync(ARCH)
      .filter((f) => f !== 'references.json')
      .sort(),
    [...names].sort(),
  );
});

for (const name of names)
  test(`${name}: float perplexity on both texts equals transformers' (protocol windows, ctx ${refs.ctx})`, () => {
    const r = runCli(['eval', join(ARCH, name), '--text', PERSUASION, '--text', JARGON, '--ctx', String(refs.ctx), '--ep', 'cpu', '--json', '--quiet']);
    assert.equal(r.code, 0, r.stderr);
    const got = JSON.parse(r.stdout) as Record<string, number>;
    for (const [text, want] of Object.entries(refs.models[name].ppl)) {
      const rel = Math.abs(got[text] / want - 1);
      // transformers float32 on a CPU vs onnxruntime float32: measured ≤ 2e-6.
      assert.ok(rel < 5e-4, `${name} ${text}: engine ${got[text]} vs transformers ${want} (${(rel * 100).toFixed(4)}% apart)`);
    }
  });

for (const name of names.filter((n) => refs.models[n].routed_calibration_tokens))
  test(`${name}: the float model routes each expert the calibration tokens transformers' router sends it`, async () => {
    const m = openModel(join(ARCH, name));
    const weights = cachedWeights(m.weights);
    const ctx = refs.ctx,
      n = 128;
    const ids = calibrationWindows(tokenizeFile(loadTokenizer(join(ARCH, name)), TRAIN, m.cfg.vocabSize, null).ids, ctx, n);
    const rt = await ComputeRuntime.create({ ep: 'cpu' });
    try {
      const fwd = new LlamaForward(m.cfg, ctx, rt);
      const B = 16;
      const xs: Float32Array[] = [];
      for (let i = 0; i < n; i += B) xs.push(await fwd.embed(ids.subarray(i * ctx, (i + B) * ctx), B, await weights('model.embed_tokens.weight')));
      const want = refs.models[name].routed_calibration_tokens!;
      for (let l = 0; l < m.cfg.numLayers; l++) {
        const w = await loadBlockWeights(m.cfg, l, weights);
        if (m.cfg.moe?.isSparse(l)) {
          const got = new Float64Array(m.cfg.moe.numExperts);
          for (const x of xs) (await fwd.blockStats(x, B, w, l, ['routing'])).routed!.forEach((c, e) => (got[e] += c));
          const total = want[String(l)].reduce((a, b) => a + b, 0);
          assert.equal(total, n * ctx * m.cfg.moe.topK, `layer ${l}: every token goes to top-k experts`);
          // Near-ties between two router logits may flip between float32 libraries: allow 0.1 % of the assignments.
          const moved = [...got].reduce((s, c, e) => s + Math.abs(c - want[String(l)][e]), 0) / 2;
          assert.ok(moved <= total * 1e-3, `layer ${l}: engine ${[...got]} vs transformers ${want[String(l)]}`);
        } else assert.equal(want[String(l)], undefined, `layer ${l} is dense in both`);
        for (let k = 0; k < xs.length; k++) xs[k] = (await fwd.block(xs[k], B, w, l)).y;
      }
    } finally {
      await rt.dispose();
      m.close();
    }
  });

/** A copy of a fixture with its tensors (as float32) and config edited; returns the folder. */
function mutated(name: string, edit: { tensors?: (t: Map<string, TensorData>) => void; config?: (c: Record<string, unknown>) => void }): string {
  const dir = join(tmp(`fam-${name}`), name);
  cpSync(join(ARCH, name), dir, { recursive: true });
  if (edit.tensors) {
    const f = SafetensorsFile.open(join(dir, 'model.safetensors'));
    const t = new Map<string, TensorData>(f.entries.map((e) => [e.name, { name: e.name, dtype: 'F32', shape: [...e.shape], data: f.readFloat32(e.name) }]));
    f.close();
    edit.tensors(t);
    writeSafetensorsAtomic(join(dir, 'model.safetensors'), [...t.values()]);
  }
  if (edit.config) {
    const c = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')) as Record<string, unknown>;
    edit.config(c);
    writeFileSync(join(dir, 'config.json'), JSON.stringify(c));
  }
  return dir;
}

const expertW = (fam: string, l: number, e: number, which: 'down' | 'up') =>
  fam === 'mixtralt' ? `model.layers.${l}.block_sparse_moe.experts.${e}.${which === 'down' ? 'w2' : 'w3'}.weight` : `model.layers.${l}.mlp.experts.${e}.${which}_proj.weight`;

/** Checkpoints that do not fit their family: [fixture, what, edit, code, words the one-line error must hold]. */
const hostile: [string, string, Parameters<typeof mutated>[1], string, string[]][] = [
  [
    'qwen2s',
    'a tensor no qwen2 model has',
    { tensors: (t) => t.set('model.layers.0.mlp.extra.weight', { name: 'model.layers.0.mlp.extra.weight', dtype: 'F32', shape: [2, 2], data: new Float32Array(4) }) },
    'E_BAD_CHECKPOINT',
    ['model.layers.0.mlp.extra.weight', 'qwen2'],
  ],
  ['qwen2s', 'a q/k/v bias missing', { tensors: (t) => t.delete('model.layers.1.self_attn.k_proj.bias') }, 'E_BAD_CHECKPOINT', ['model.layers.1.self_attn.k_proj.bias']],
  ['qwen3b', 'a k_norm missing', { tensors: (t) => t.delete('model.layers.0.self_attn.k_norm.weight') }, 'E_BAD_CHECKPOINT', ['model.layers.0.self_attn.k_norm.weight']],
  ['mistrals', 'a sliding_window of zero', { config: (c) => (c.sliding_window = 0) }, 'E_BAD_CONFIG', ['sliding_window']],
  ['mixtralt', 'an expert missing', { tensors: (t) => t.delete(expertW('mixtralt', 1, 3, 'down')) }, 'E_BAD_CHECKPOINT', [expertW('mixtralt', 1, 3, 'down')]],
  // The router's shape is checked first: it names the tensor, and the config that disagrees with it.
  [
    'mixtralt',
    'more experts in the config than stored',
    { config: (c) => (c.num_local_experts = 5) },
    'E_SHAPE_MISMATCH',
    ['model.layers.0.block_sparse_moe.gate.weight', '[5, 64]', 'config.json'],
  ],
  [
    'mixtralt',
    'fewer experts in the config than stored',
    { config: (c) => (c.num_local_experts = 3) },
    'E_SHAPE_MISMATCH',
    ['model.layers.0.block_sparse_moe.gate.weight', '[3, 64]', 'config.json'],
  ],
  ['mixtralt', 'top-k above the expert count', { config: (c) => (c.num_experts_per_tok = 9) }, 'E_BAD_CONFIG', ['num_experts_per_tok']],
  ['mixtralt', 'no num_local_experts', { config: (c) => delete c.num_local_experts }, 'E_BAD_CONFIG', ['num_local_experts']],
  [
    'qwen3moes',
    'an expert of the wrong shape',
    { tensors: (t) => (t.get(expertW('qwen3moes', 0, 2, 'up'))!.shape = [16, 128]) },
    'E_SHAPE_MISMATCH',
    [expertW('qwen3moes', 0, 2, 'up')],
  ],
  ['qwen3moes', 'router jitter', { config: (c) => (c.router_jitter_noise = 'lots') }, 'E_BAD_CONFIG', ['router_jitter_noise']],
  [
    'qwen2moes',
    'the shared expert gate missing',
    { tensors: (t) => t.delete('model.layers.1.mlp.shared_expert_gate.weight') },
    'E_BAD_CHECKPOINT',
    ['model.layers.1.mlp.shared_expert_gate.weight'],
  ],
  ['qwen2moes', 'an mlp_only_layers entry past the last layer', { config: (c) => (c.mlp_only_layers = [7]) }, 'E_BAD_CONFIG', ['mlp_only_layers']],
];

for (const [name, what, edit, code, words] of hostile)
  test(`${name} with ${what}: quantize and eval exit 2 with one line naming it, nothing written`, () => {
    // The wrong-shape edit keeps the element count: data of [128, 16] read as [16, 128].
    const dir = mutated(name, edit);
    const out = join(dir, '..', 'run');
    for (const args of [
      ['quantize', dir, '--calib', TRAIN, '--out', out, '--method', 'rtn', '--samples', '2', '--ctx', '64', '--ep', 'cpu', '--quiet'],
      ['eval', dir, '--text', PERSUASION, '--ctx', '64', '--ep', 'cpu', '--quiet'],
    ]) {
      const r = runCli(args);
      assert.equal(r.code, 2, `${args[0]}: exit ${r.code}\n${r.stderr}`);
      const lines = r.stderr.trim().split('\n');
      assert.equal(lines.length, 1, `${args[0]}: one line on stderr:\n${r.stderr}`);
      assert.match(lines[0], new RegExp(`^lopro: ${code}: `));
      for (const w of words) assert.ok(lines[0].includes(w), `${args[0]}: the error does not name ${w}: ${lines[0]}`);
      assert.equal(existsSync(out), false, `${args[0]}: ${out} was created`);
    }
  });

for (const minTokens of [0, 1_000_000])
  test(`mixtralt, experts calibrated on ${minTokens ? 'every token' : 'their routed tokens'}: re-quantizing an expert from the cached statistic reproduces its loss`, async () => {
    const { requantizeLayer } = await import('../../src/engine/run/requantize');
    const out = join(tmp('fam-rq'), 'run');
    const r = runCli([
      'quantize',
      join(ARCH, 'mixtralt'),
      '--calib',
      TRAIN,
      '--out',
      out,
      '--method',
      'gptq',
      '--bits',
      '3',
      '--samples',
      '4',
      '--ctx',
      '64',
      '--ep',
      'cpu',
      '--backend',
      'cpu',
      '--expert-min-tokens',
      String(minTokens),
      '--quiet',
      '--json',
    ]);
    assert.equal(r.code, 0, r.stderr);
    for (const layer of ['model.layers.1.block_sparse_moe.experts.2.w2', 'model.layers.0.block_sparse_moe.experts.1.w1']) {
      const { before, after } = await requantizeLayer(out, layer, {});
      assert.equal(before.statistic, `${layer.endsWith('w2') ? 'mlp_act' : 'mlp_in'}@${before.expert}${minTokens ? ':all' : ''}`);
      assert.ok(Math.abs(after.proxyLoss / before.proxyLoss - 1) < 1e-6, `${layer}: ${after.proxyLoss} vs ${before.proxyLoss} (${before.statistic})`);
    }
  });

test('lopro inspect names the family and the experts', () => {
  for (const [name, want] of [
    ['mixtralt', 'mixtral model, 4 experts in 2 of 2 blocks'],
    ['qwen2moes', 'qwen2_moe model, 4 experts in 1 of 2 blocks'],
    ['qwen3b', 'qwen3 model,'],
  ]) {
    const r = runCli(['inspect', join(ARCH, name)]);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(r.stdout.split('\n')[0].includes(want), r.stdout.split('\n')[0]);
  }
});
