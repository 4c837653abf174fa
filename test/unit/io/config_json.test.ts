// config.json edits keep every number as written: transformers' strict config classes refuse an int where
// the source had a float (`0.0` written back as `0`).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseConfigText, stringifyConfig } from '../../../src/engine/io/config_json';

const SOURCE =
  '{"router_jitter_noise": 0.0, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "layers": 2, "name": "w 1.0 \\" 2.5e3", "list": [1.5, -2.0e3, 7], "nested": {"factor": 4.0}}';

test('parseConfigText + stringifyConfig: floats keep their text, ints and strings are untouched, edits apply', () => {
  const cfg = parseConfigText(SOURCE);
  delete cfg.layers;
  cfg.dtype = 'float16';
  const out = stringifyConfig(cfg);
  for (const kept of ['"router_jitter_noise": 0.0', '"rms_norm_eps": 1e-06', '"rope_theta": 1000000.0', '-2.0e3', '"factor": 4.0', '"name": "w 1.0 \\" 2.5e3"'])
    assert.ok(out.includes(kept), `${kept} missing from\n${out}`);
  assert.ok(!out.includes('"layers"'));
  const want = JSON.parse(SOURCE);
  delete want.layers;
  assert.deepEqual(JSON.parse(out), { ...want, dtype: 'float16' });
});
