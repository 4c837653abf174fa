// CLI flags → QuantizeConfig: every config key is a flag, aliases, booleans, overrides, and errors
// that name the flag (a value that does not read as its type here; a rule the engine checks is
// mapped back to its flag by flagFor — see cli.test.ts for the whole command).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DEFAULT_CONFIG, layerConfigFor } from '../../../src/protocol/config';
import { configFlags, configFromFlags, flagFor, kebab, parseArgs, parseOverride } from '../../../src/engine/run/args';
import { ProtocolError } from '../../../src/protocol/rpc';

const B = new Set(['resume']),
  V = new Set(['out']);

test('every QuantizeConfig key has a kebab-case flag', () => {
  const flags = configFlags();
  for (const k of Object.keys(DEFAULT_CONFIG)) assert.equal(flags.get(kebab(k)), k);
  assert.equal(flags.get('group'), 'groupSize');
  assert.equal(flags.get('calib'), 'calibText');
  assert.equal(flags.get('samples'), 'calibSamples');
});

test('values are typed by their defaults; booleans, --no-x and --x=v forms', () => {
  const a = parseArgs(['m.safetensors', '--bits', '3', '--group=64', '--sym', '--no-act-order', '--rotation', 'full', '--out', 'o', '--resume'], B, V);
  assert.deepEqual(a.positional, ['m.safetensors']);
  assert.deepEqual(a.config, { bits: 3, groupSize: 64, sym: true, actOrder: false, rotation: 'full' });
  assert.deepEqual(a.flags.get('out'), ['o']);
  assert.ok(a.flags.has('resume'));
  const c = configFromFlags(a.config);
  assert.equal(c.bits, 3);
  assert.equal(c.rank, DEFAULT_CONFIG.rank);
});

test('--override builds layerOverrides that layerConfigFor applies', () => {
  assert.deepEqual(parseOverride('*.down_proj:bits=3,rank=32'), ['*.down_proj', { bits: 3, rank: 32 }]);
  const a = parseArgs(['--override', '*.down_proj:bits=3', '--override', 'model.layers.0.*:method=gptq'], B, V);
  const c = configFromFlags(a.config);
  assert.equal(layerConfigFor(c, 'model.layers.2.mlp.down_proj').bits, 3);
  assert.equal(layerConfigFor(c, 'model.layers.0.self_attn.q_proj').method, 'gptq');
  assert.equal(layerConfigFor(c, 'model.layers.1.self_attn.q_proj').method, DEFAULT_CONFIG.method);
});

test('errors name the flag', () => {
  const code = (f: () => unknown) => {
    try {
      f();
    } catch (e) {
      assert.ok(e instanceof ProtocolError);
      return `${e.code} ${e.where}`;
    }
    return 'no error';
  };
  assert.equal(
    code(() => parseArgs(['--bits', 'x'], B, V)),
    'E_BAD_CONFIG --bits',
  );
  assert.equal(
    code(() => parseArgs(['--nope'], B, V)),
    'E_BAD_CONFIG --nope',
  );
  assert.equal(
    code(() => parseArgs(['--bits'], B, V)),
    'E_BAD_CONFIG --bits',
  );
  assert.equal(
    code(() => parseArgs(['--sym=maybe'], B, V)),
    'E_BAD_CONFIG --sym',
  );
  assert.equal(
    code(() => parseOverride('nocolon')),
    'E_BAD_CONFIG --override',
  );
  assert.equal(
    code(() => parseOverride('*:colour=red')),
    'E_BAD_CONFIG --override',
  );
  assert.equal(
    code(() => parseArgs(['--threads', 'four'], B, V)),
    'E_BAD_CONFIG --threads',
  );
  assert.equal(
    code(() => parseArgs(['--threads'], B, V)),
    'E_BAD_CONFIG --threads',
  );
  assert.equal(
    code(() => parseArgs(['--compare=maybe'], B, V)),
    'E_BAD_CONFIG --compare',
  );
  assert.equal(
    code(() => parseArgs(['--backend'], B, V)),
    'E_BAD_CONFIG --backend',
  );
});

test('--backend, --compare and --threads are config keys like any other', () => {
  const a = parseArgs(['m', '--backend', 'gpu', '--compare', '--threads', '4'], B, V);
  assert.deepEqual(a.config, { backend: 'gpu', compare: true, threads: 4 });
  assert.deepEqual(a.positional, ['m']);
  assert.equal(a.flags.size, 0, '--compare is no longer a flag of its own');
  assert.deepEqual(parseArgs(['--backend=cpu', '--no-compare', '--threads=0'], B, V).config, { backend: 'cpu', compare: false, threads: 0 });
  assert.deepEqual(parseArgs(['--compare=false'], B, V).config, { compare: false });
  const c = configFromFlags({});
  assert.deepEqual([c.backend, c.compare, c.threads], ['auto', false, 0]);
});

test('configFromFlags only fills defaults (the engine validates once, at quantizeRun)', () => {
  const c = configFromFlags({ bits: 5, backend: 'tpu' as 'gpu' });
  assert.equal(c.bits, 5);
  assert.equal(c.backend, 'tpu');
  assert.equal(c.rank, DEFAULT_CONFIG.rank);
});

test("flagFor: the flag that sets a field, for the CLI's config errors", () => {
  assert.equal(flagFor('hadamardBlock'), '--hadamard-block');
  assert.equal(flagFor('threads'), '--threads');
  assert.equal(flagFor('memoryBudgetMB'), '--memory-budget-mb');
  assert.equal(flagFor('layerOverrides["*.q_proj"].groupSize'), '--override "*.q_proj:group-size"');
  assert.equal(flagFor('tokenizer.json'), undefined);
  assert.equal(flagFor('constructor'), undefined);
  // The override flag it names really sets that field.
  assert.deepEqual(parseOverride('*.q_proj:group-size=64'), ['*.q_proj', { groupSize: 64 }]);
});
