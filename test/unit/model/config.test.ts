// config.json parsing: both rope layouts, rope scaling types, GQA, tied/untied head, head_dim,
// and errors that name the field and the file.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ErrorCode } from '../../../src/protocol/messages';
import { ProtocolError } from '../../../src/protocol/rpc';
import { blockLinears, checkModelTensors, loadModelConfig, otherTensors, parseModelConfig, allLinears } from '../../../src/engine/model/config';
import { ropeInvFreq } from '../../../src/engine/model/rope';

const base = () => ({
  model_type: 'llama',
  hidden_size: 64,
  intermediate_size: 96,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  vocab_size: 100,
  rms_norm_eps: 1e-6,
  max_position_embeddings: 128,
});

function throwsCode(fn: () => unknown, code: string, ...inMessage: string[]) {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof ProtocolError, String(e));
    assert.equal(e.code, code);
    for (const s of inMessage) assert.ok(e.message.includes(s), `"${e.message}" should mention "${s}"`);
    return true;
  });
}

test('tiny fixture: transformers 5 layout (rope_parameters), tied head, explicit head_dim, GQA', () => {
  const c = loadModelConfig('fixtures/tiny');
  assert.equal(c.hiddenSize, 256);
  assert.equal(c.numHeads, 4);
  assert.equal(c.numKvHeads, 2);
  assert.equal(c.headDim, 64);
  assert.equal(c.ropeTheta, 10000);
  assert.deepEqual(c.ropeScaling, { type: 'default' });
  assert.equal(c.tiedHead, true);
  assert.equal(c.rmsNormEps, 1e-5);
  assert.equal(c.qkvBias, false);
  assert.equal(c.oBias, false);
  assert.equal(c.family, 'llama');
});

test('transformers 4 layout: rope_theta at top level, head_dim derived, untied by default', () => {
  const c = parseModelConfig({ ...base(), rope_theta: 500000 }, 'x/config.json');
  assert.equal(c.ropeTheta, 500000);
  assert.equal(c.headDim, 16);
  assert.equal(c.tiedHead, false);
  assert.ok(otherTensors(c).has('lm_head.weight'));
  // missing rope_theta → transformers' default 10000
  assert.equal(parseModelConfig(base(), 'x').ropeTheta, 10000);
});

test('rope scaling: linear divides every frequency; llama3 keeps high, divides low, blends medium', () => {
  const plain = parseModelConfig({ ...base(), head_dim: 64 }, 'a');
  const lin = parseModelConfig({ ...base(), head_dim: 64, rope_scaling: { type: 'linear', factor: 4 } }, 'b');
  const f0 = ropeInvFreq(plain, 64),
    f1 = ropeInvFreq(lin, 64);
  for (let i = 0; i < f0.length; i++) assert.ok(Math.abs(f1[i] - f0[i] / 4) < 1e-15);
  const l3 = parseModelConfig(
    {
      ...base(),
      head_dim: 64,
      rope_parameters: { rope_type: 'llama3', rope_theta: 500000, factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 64 },
    },
    'c',
  );
  assert.equal(l3.ropeTheta, 500000);
  const ref = ropeInvFreq({ ...l3, ropeScaling: { type: 'default' } }, 64),
    got = ropeInvFreq(l3, 64);
  let kept = 0,
    divided = 0,
    blended = 0;
  for (let i = 0; i < ref.length; i++) {
    const wavelen = (2 * Math.PI) / ref[i];
    if (wavelen < 64 / 4) assert.equal(got[i], ref[i]), kept++;
    else if (wavelen > 64 / 1) assert.ok(Math.abs(got[i] - ref[i] / 8) < 1e-18), divided++;
    else assert.ok(got[i] < ref[i] && got[i] > ref[i] / 8), blended++;
  }
  assert.ok(kept > 0 && divided > 0 && blended > 0, `${kept}/${divided}/${blended}`);
});

test('dynamic rope: default inside the original context, error beyond; yarn unsupported', () => {
  const d = parseModelConfig({ ...base(), rope_scaling: { rope_type: 'dynamic', factor: 2 } }, 'd/config.json');
  assert.deepEqual([...ropeInvFreq(d, 128)], [...ropeInvFreq({ ...d, ropeScaling: { type: 'default' } }, 128)]);
  throwsCode(() => ropeInvFreq(d, 256), ErrorCode.BadConfig, 'dynamic', 'd/config.json');
  throwsCode(
    () => parseModelConfig({ ...base(), rope_parameters: { rope_type: 'yarn', factor: 4, rope_theta: 1e4 } }, 'y/config.json'),
    ErrorCode.BadConfig,
    'yarn',
    'y/config.json',
    'rope_parameters.rope_type',
  );
});

test('missing and odd fields name the field and the file', () => {
  const { hidden_size: _h, ...noHidden } = base();
  throwsCode(() => parseModelConfig(noHidden, 'm/config.json'), ErrorCode.BadConfig, 'hidden_size', 'm/config.json', 'missing');
  throwsCode(() => parseModelConfig({ ...base(), num_key_value_heads: 3 }, 'k.json'), ErrorCode.BadConfig, 'num_key_value_heads', 'k.json');
  throwsCode(() => parseModelConfig({ ...base(), vocab_size: '100' }, 'v.json'), ErrorCode.BadConfig, 'vocab_size');
  throwsCode(() => parseModelConfig({ ...base(), model_type: 'gpt2' }, 'g.json'), ErrorCode.BadConfig, 'model_type', 'gpt2');
  throwsCode(() => parseModelConfig({ ...base(), hidden_act: 'gelu' }, 'a.json'), ErrorCode.BadConfig, 'hidden_act');
  throwsCode(() => parseModelConfig({ ...base(), rope_scaling: { type: 'linear' } }, 'f.json'), ErrorCode.BadConfig, 'rope_scaling.factor', 'f.json');
  throwsCode(() => loadModelConfig('/nonexistent-dir'), ErrorCode.BadConfig, '/nonexistent-dir/config.json');
});

test('block linears: seven per block with [out, in] shapes and shared inputs', () => {
  const c = parseModelConfig({ ...base(), head_dim: 8 }, 'x'); // q dim 32 ≠ hidden 64
  const l = blockLinears(c, 1);
  assert.deepEqual(
    l.map((x) => x.module),
    ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'],
  );
  assert.deepEqual(
    l.map((x) => [x.rows, x.cols]),
    [
      [32, 64],
      [16, 64],
      [16, 64],
      [64, 32],
      [96, 64],
      [96, 64],
      [64, 96],
    ],
  );
  assert.deepEqual(
    l.map((x) => x.input),
    ['attn_in', 'attn_in', 'attn_in', 'attn_out', 'mlp_in', 'mlp_in', 'mlp_act'],
  );
  assert.equal(l[0].weight, 'model.layers.1.self_attn.q_proj.weight');
  assert.equal(allLinears(c).length, 14);
});

test('checkModelTensors: shape mismatch and missing lm_head name the tensor', () => {
  const c = parseModelConfig({ ...base(), tie_word_embeddings: true }, 'x');
  const shapes = new Map<string, number[]>(otherTensors(c));
  for (const l of allLinears(c)) shapes.set(l.weight, [l.rows, l.cols]);
  assert.equal(checkModelTensors(c, (n) => shapes.get(n)).length, 14);
  const bad = new Map(shapes).set('model.layers.1.mlp.up_proj.weight', [96, 63]);
  throwsCode(() => checkModelTensors(c, (n) => bad.get(n)), ErrorCode.ShapeMismatch, 'model.layers.1.mlp.up_proj.weight', '[96, 63]', '[96, 64]');
  const untied = { ...c, tiedHead: false };
  throwsCode(() => checkModelTensors(untied, (n) => shapes.get(n)), ErrorCode.BadCheckpoint, 'lm_head.weight');
});

test('openModel on a real checkpoint: config/tensor disagreements are reported with the tensor name', async () => {
  const { mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } = await import('node:fs');
  const { tmpdir } = await import('node:os');
  const { join, resolve } = await import('node:path');
  const { openModel } = await import('../../../src/engine/model/loader');
  const good = openModel('fixtures/tiny');
  assert.equal(good.linears.length, 4 * 7);
  assert.equal((await good.weights('model.norm.weight')).length, 256);
  good.close();
  const base = JSON.parse(readFileSync('fixtures/tiny/config.json', 'utf8'));
  const dir = mkdtempSync(join(tmpdir(), 'lopro-cfg-'));
  try {
    symlinkSync(resolve('fixtures/tiny/model.safetensors'), join(dir, 'model.safetensors'));
    writeFileSync(join(dir, 'config.json'), JSON.stringify({ ...base, intermediate_size: 700 }));
    throwsCode(() => openModel(dir), ErrorCode.ShapeMismatch, 'model.layers.0.mlp.gate_proj.weight', '[768, 256]', '[700, 256]');
    writeFileSync(join(dir, 'config.json'), JSON.stringify({ ...base, tie_word_embeddings: false }));
    throwsCode(() => openModel(dir), ErrorCode.BadCheckpoint, 'lm_head.weight');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
