// parseFromWebview accepts exactly the FromWebview messages (issue 7.5) and parseToWebview drops
// unknown host messages.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { DEFAULT_CONFIG } from '../../../src/protocol/config';
import { parseFromWebview, parseToWebview } from '../../../src/protocol/webview';

const config = { ...DEFAULT_CONFIG, layerOverrides: {} };

test('accepts every well-formed message unchanged', () => {
  const good = [
    { type: 'ready' },
    { type: 'cancel' },
    { type: 'pick', field: 'outputFolder' },
    { type: 'start', config, outputFolder: '/runs/a' },
    { type: 'start', config: { ...config, layerOverrides: { 'model.layers.*.mlp.down_proj': { bits: 4, rank: 32 } } }, outputFolder: '/r' },
    { type: 'measure', config: { ...config, targetBpw: 2.25 }, outputFolder: '/runs/b' },
    { type: 'openLayer', layer: 'model.layers.0.self_attn.q_proj' },
    { type: 'requantize', layer: 'x', overrides: { method: 'gptq', bits: 3 } },
    { type: 'apply', layer: 'x', candidateId: 'abc' },
    { type: 'export', format: 'f16' },
    { type: 'tryIt' },
    { type: 'generate', prompt: 'The city council', maxTokens: 48, temperature: 0, topP: 1 },
    { type: 'generate', prompt: '', maxTokens: 1500, temperature: 0.7, topP: 0.9 },
  ];
  for (const g of good) assert.deepEqual(parseFromWebview(structuredClone(g)), g);
});

test('rejects junk: wrong types, missing or extra fields, unknown keys, non-finite numbers', () => {
  const junk: unknown[] = [
    undefined,
    null,
    0,
    'start',
    [],
    [{ type: 'ready' }],
    {},
    { type: 1 },
    { type: 'READY' },
    { type: 'ready', x: 1 },
    { type: 'pick' },
    { type: 'pick', field: 'anything' },
    { type: 'start', outputFolder: '/r' },
    { type: 'start', config, outputFolder: 7 },
    { type: 'start', config: { ...config, bits: Infinity }, outputFolder: '/r' },
    { type: 'start', config: { ...config, method: ['lopro'] }, outputFolder: '/r' },
    { type: 'start', config: { ...config, __proto__x: 1 }, outputFolder: '/r' },
    { type: 'start', config: (({ bits: _b, ...rest }) => rest)(config), outputFolder: '/r' },
    { type: 'start', config: { ...config, layerOverrides: { '*': { calibText: '/etc/passwd' } } }, outputFolder: '/r' },
    { type: 'start', config, outputFolder: 'x'.repeat(5000) },
    { type: 'measure', config },
    { type: 'measure', config: { ...config, targetBpw: '2.25' }, outputFolder: '/r' },
    { type: 'measure', config, outputFolder: '/r', target: 2 },
    { type: 'openLayer' },
    { type: 'openLayer', layer: '' },
    { type: 'openLayer', layer: {} },
    { type: 'requantize', layer: 'x', overrides: { bits: '4' } },
    { type: 'requantize', layer: 'x', overrides: { seed: 1 } },
    { type: 'apply', layer: 'x', candidateId: '' },
    { type: 'export', format: 'exe' },
    { type: 'export' },
    { type: 'tryIt', runDir: '/r' },
    { type: 'generate', prompt: 'x', maxTokens: 4.5, temperature: 0, topP: 1 },
    { type: 'generate', prompt: 'x', maxTokens: 4, temperature: NaN, topP: 1 },
    { type: 'generate', prompt: 'x', maxTokens: 4, temperature: 0 },
    { type: 'generate', prompt: 7, maxTokens: 4, temperature: 0, topP: 1 },
    { type: 'generate', prompt: 'x'.repeat(20001), maxTokens: 4, temperature: 0, topP: 1 },
    { type: 'generate', prompt: 'x', maxTokens: 4, temperature: 0, topP: 1, path: '/etc' },
  ];
  for (const j of junk) assert.equal(parseFromWebview(j), undefined, `accepted ${JSON.stringify(j)}`);
});

test('parseToWebview drops unknown types and messages missing required fields', () => {
  assert.equal(parseToWebview({ type: 'nope' }), undefined);
  assert.equal(parseToWebview({ type: 'layer/done' }), undefined);
  assert.equal(parseToWebview({ type: 'layer/done', report: { name: 'a' } }), undefined);
  assert.ok(parseToWebview({ type: 'layer/done', report: { name: 'a', relProxyLoss: 0.1 } }));
  assert.ok(parseToWebview({ type: 'progress', value: { kind: 'end' } }));
  assert.equal(parseToWebview({ type: 'try/text', side: 'float' }), undefined);
  assert.equal(parseToWebview({ type: 'try/text', side: 'float', delta: 'a' }), undefined, 'tokens missing');
  assert.ok(parseToWebview({ type: 'try/text', side: 'float', delta: 'a', tokens: 3 }));
});
