// The config panel's form (webview/configForm.ts): a config goes into the controls and comes back
// unchanged, the controls offer exactly the allowed values of config.ts, and an emptied or bad
// field reaches validateConfig (which the panel shows) instead of turning into a default.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BACKENDS, BITS, DEFAULT_CONFIG, METHODS, validateConfig, type QuantizeConfig } from '../../../src/protocol/config';
import { FORM_FIELDS, configFromForm, formValues, numberAttrs } from '../../../webview/configForm';

const base = (): QuantizeConfig => ({ ...DEFAULT_CONFIG, layerOverrides: {} });

test('round trip: config → controls → config, for the defaults and for non-default values of every field', () => {
  assert.deepEqual(configFromForm(formValues(base()), base()), base());
  const changed: QuantizeConfig = {
    ...base(),
    method: 'gptq',
    bits: 3,
    clip: 'mse',
    groupSize: -1,
    rank: 0,
    salientBlock: 64,
    hadamardBlock: 256,
    powerIters: 5,
    calibText: '/data/train.txt',
    calibSamples: 8,
    ctx: 64,
    ep: 'cpu',
    backend: 'gpu',
    threads: 6,
    compare: true,
    percDamp: 0.05,
    layerOverrides: { '*.down_proj': { bits: 4 } },
  };
  assert.deepEqual(configFromForm(formValues(changed), base()), { ...changed, percDamp: DEFAULT_CONFIG.percDamp, layerOverrides: {} }, 'keys outside the form come from the base');
  assert.deepEqual(configFromForm(formValues(changed), changed), changed);
});

test('the panel edits backend, compare and threads; choices are config.ts lists', () => {
  const by = new Map(FORM_FIELDS.map((f) => [f.key, f]));
  assert.deepEqual(by.get('backend')?.options, BACKENDS);
  assert.equal(by.get('backend')?.control, 'select');
  assert.equal(by.get('compare')?.control, 'toggle');
  assert.equal(by.get('compare')?.label, 'Compare with RTN and GPTQ per layer (slower)');
  assert.deepEqual(numberAttrs(by.get('threads')?.range), { min: 0, max: 256, step: 1 });
  assert.deepEqual(by.get('bits')?.options, BITS);
  assert.deepEqual(by.get('method')?.options, METHODS);
  assert.deepEqual(numberAttrs(by.get('groupSize')?.range), { min: -1, step: 1 });
  for (const f of FORM_FIELDS) assert.ok(f.key in DEFAULT_CONFIG, f.key);
});

test('an emptied or bad number field is explained by validateConfig, not replaced by a default', () => {
  const v = { ...formValues(base()), threads: '', powerIters: '2.5', bits: '5' };
  const c = configFromForm(v, base());
  assert.ok(Number.isNaN(c.threads));
  const fields = validateConfig(c)
    .map((i) => i.field)
    .sort();
  assert.deepEqual(fields, ['bits', 'powerIters', 'threads']);
  assert.equal(configFromForm({ ...formValues(base()), compare: true }, base()).compare, true);
});
