// The one config validator (src/protocol/config.ts): for every key, the values at and just past
// its boundaries, written out here rather than read from RANGES/CHOICES (a wrong range must fail
// this test, not redefine it); unknown keys; the lopro_v codebook conflict; overrides; defaults.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  BACKENDS,
  BITS,
  DEFAULT_CONFIG,
  MAX_CODEBOOK_LOG2,
  describeIssues,
  describeRange,
  validateConfig,
  validateLayerConfig,
  pickLayerConfig,
  withDefaults,
  type QuantizeConfig,
} from '../../../src/protocol/config';

const cfg = (o: Record<string, unknown> = {}): QuantizeConfig => ({ ...DEFAULT_CONFIG, layerOverrides: {}, ...o }) as QuantizeConfig;

/** key → values that must pass, values that must be refused (naming the key and the value). */
const CASES: { [K in keyof QuantizeConfig]: { ok: unknown[]; bad: unknown[] } } = {
  method: { ok: ['rtn', 'gptq', 'lopro', 'lopro_v'], bad: ['awq', '', 'LOPRO', 1] },
  bits: { ok: [2, 3, 4, 8], bad: [0, 1, 5, 6, 7, 9, 16, -2, 2.5, '4', NaN, null] },
  groupSize: { ok: [-1, 1, 2, 128, 1e9], bad: [0, -2, 12.5, Infinity, '128'] },
  sym: { ok: [true, false], bad: ['true', 1, null] },
  clip: { ok: ['minmax', 'mse'], bad: ['max', ''] },
  percDamp: { ok: [1e-9, 0.01, 0.999999], bad: [0, 1, -0.01, 1.5, NaN] },
  blockSize: { ok: [1, 128, 1e9], bad: [0, -1, 1.5] },
  actOrder: { ok: [true, false], bad: ['false', 0] },
  staticGroups: { ok: [true, false], bad: [1] },
  rank: { ok: [-1, 0, 1, 1e6], bad: [-2, 1.5] },
  powerIters: { ok: [0, 1, 50], bad: [-1, 51, 2.5] },
  salientBlock: { ok: [0, 1, 1e9], bad: [-5, 0.5] },
  hadamardBlock: { ok: [1, 2, 128, 4096], bad: [0, 3, 100, -128, 64.5, 8192] },
  rotation: { ok: ['partial', 'none', 'full'], bad: ['half'] },
  beta: { ok: [0, 0.5, 1, 2.4, 4], bad: [-0.001, 4.001] },
  alphaNorm: { ok: ['geomean', 'clampRange'], bad: ['range', '', 1] },
  columnScore: { ok: ['hessian', 'logHessian'], bad: ['log', 'Hessian'] },
  refineRounds: { ok: [0, 1, 20, 50], bad: [-1, 51, 2.5, '20'] },
  vqDim: { ok: [1, 2, 4], bad: [0, 3, 8] },
  vqBits: { ok: [0, 1, 12], bad: [-1, 13, 1.5] },
  calibText: { ok: ['', '/data/calib.txt'], bad: [3, null] },
  targetBpw: { ok: [0, 2.25, 3, 16], bad: [-0.5, 16.5, '2.25', Number.NaN] },
  calibSamples: { ok: [1, 128, 1e9], bad: [0, -1, 1.5] },
  ctx: { ok: [0, 1, 512], bad: [-1, 2.5] },
  expertCalibration: { ok: ['routed', 'all'], bad: ['some', 'ALL', 0] },
  expertMinTokens: { ok: [0, 1, 128, 1e9], bad: [-1, 2.5, '128'] },
  ep: { ok: ['auto', 'cuda', 'webgpu', 'cpu'], bad: ['tpu', 'CPU'] },
  backend: { ok: ['auto', 'cpu', 'gpu'], bad: ['cuda', 'GPU', '', 1] },
  compare: { ok: [true, false], bad: ['yes', 0] },
  keepHessians: { ok: [true, false], bad: ['no', 1, null] },
  threads: { ok: [0, 1, 4, 256], bad: [-1, 257, 1.5, NaN, '4'] },
  seed: { ok: [0, -7, 2 ** 52, Number.MAX_SAFE_INTEGER], bad: [NaN, Infinity, '1', 0.5, 2 ** 53] },
  memoryBudgetMB: { ok: [0, 0.01, 1, 4096], bad: [-0.5, -1] },
  layerOverrides: { ok: [{}, { '*.down_proj': { bits: 4, rank: 0 } }], bad: [[], null, 'x'] },
};

test('the table covers every key of DEFAULT_CONFIG (a new key needs its boundary cases here)', () => {
  assert.deepEqual(Object.keys(CASES).sort(), Object.keys(DEFAULT_CONFIG).sort());
});

test('every key: values at its boundaries pass, values past them are refused naming the key and the value', () => {
  for (const [key, { ok, bad }] of Object.entries(CASES)) {
    for (const v of ok) assert.deepEqual(validateConfig(cfg({ [key]: v })), [], `${key} = ${String(v)} must pass`);
    for (const v of bad) {
      const issues = validateConfig(cfg({ [key]: v }));
      assert.equal(issues.length, 1, `${key} = ${JSON.stringify(v)}: ${describeIssues(issues) || 'accepted'}`);
      assert.equal(issues[0].field, key);
      assert.ok(issues[0].message.startsWith(key), `message names the key: ${issues[0].message}`);
      const shown = typeof v === 'string' ? `"${v}"` : typeof v === 'object' && v !== null ? JSON.stringify(v) : String(v);
      assert.ok(issues[0].message.endsWith(`got ${shown}`), `message names the value: ${issues[0].message}`);
    }
  }
});

test('messages say what is allowed', () => {
  const msg = (o: Record<string, unknown>) => describeIssues(validateConfig(cfg(o)));
  assert.equal(msg({ bits: 5 }), 'bits must be 2, 3, 4 or 8, got 5');
  assert.equal(msg({ hadamardBlock: 100 }), 'hadamardBlock (b_H) must be a power of two ≤ 4096, got 100');
  assert.equal(msg({ percDamp: 0 }), 'percDamp must be in (0, 1), got 0');
  assert.equal(msg({ threads: 257 }), 'threads must be an integer in [0, 256], got 257');
  assert.equal(msg({ groupSize: 0 }), 'groupSize must be -1 or an integer ≥ 1, got 0');
  assert.equal(msg({ backend: 'tpu' }), 'backend must be auto, cpu or gpu, got "tpu"');
  assert.equal(msg({ memoryBudgetMB: -1 }), 'memoryBudgetMB must be ≥ 0, got -1');
  assert.equal(msg({ bits: '4' }), 'bits must be a finite number, got "4"');
  assert.equal(describeRange({ min: 0, max: 1 }), 'in [0, 1]');
});

test('unknown keys are refused by name, at the top level and inside an override', () => {
  const top = validateConfig(cfg({ frobnicate: 1 }));
  assert.deepEqual(
    top.map((i) => i.field),
    ['frobnicate'],
  );
  // Names every object inherits are not settings either, and a parsed "__proto__" stays a key.
  assert.deepEqual(
    validateConfig(withDefaults(JSON.parse('{"constructor": 1, "toString": 2, "__proto__": {"bits": 3}}')))
      .map((i) => i.field)
      .sort(),
    ['__proto__', 'constructor', 'toString'],
  );
  const o = validateConfig(cfg({ layerOverrides: { '*.q_proj': { nope: 1, calibText: 'x', threads: 2 } } }));
  assert.deepEqual(o.map((i) => i.field).sort(), ['layerOverrides["*.q_proj"].calibText', 'layerOverrides["*.q_proj"].nope', 'layerOverrides["*.q_proj"].threads']);
  assert.match(o.find((i) => i.field.endsWith('.threads'))!.message, /run-wide setting/);
});

test('an override is checked merged over the run config, and its issues carry the override in field and message', () => {
  const issues = validateConfig(cfg({ layerOverrides: { '*.q_proj': { bits: 7 } } }));
  assert.deepEqual(issues, [{ field: 'layerOverrides["*.q_proj"].bits', message: 'layerOverrides["*.q_proj"].bits must be 2, 3, 4 or 8, got 7' }]);
  assert.equal(validateConfig(cfg({ layerOverrides: { '*': 3 } }))[0].field, 'layerOverrides["*"]');
  // Valid alone, but the merged layer is lopro_v with a codebook too large (run bits 8 × vqDim 2).
  const merged = validateConfig(cfg({ bits: 8, layerOverrides: { '*.up_proj': { method: 'lopro_v' } } }));
  assert.deepEqual(
    merged.map((i) => i.field),
    ['layerOverrides["*.up_proj"].vqBits'],
  );
});

test('lopro_v codebook: 2^(vqDim·bits) ≤ 2^MAX_CODEBOOK_LOG2; the message names both values', () => {
  assert.equal(MAX_CODEBOOK_LOG2, 12);
  const v = (o: Record<string, unknown>) => validateConfig(cfg({ method: 'lopro_v', ...o }));
  assert.deepEqual(v({ vqDim: 4, bits: 3 }), []); // 12
  assert.deepEqual(v({ vqDim: 2, vqBits: 6, bits: 8 }), []); // vqBits wins over bits: 12
  assert.deepEqual(v({ vqDim: 1, bits: 8 }), []);
  const over = v({ vqDim: 4, bits: 4 });
  assert.equal(over.length, 1);
  assert.equal(over[0].field, 'vqBits');
  assert.match(over[0].message, /vqDim 4 × bits 4 = 16 bits per vector: a codebook of 2\^16 entries, more than the 2\^12 allowed/);
  assert.match(v({ vqDim: 2, vqBits: 7 })[0].message, /vqDim 2 × vqBits 7 = 14/);
  // Not lopro_v: vqDim/bits describe no codebook.
  assert.deepEqual(validateConfig(cfg({ method: 'lopro', vqDim: 4, bits: 8 })), []);
});

test('validateLayerConfig alone (the layer view and layer/requantize): the same rules', () => {
  const layer = pickLayerConfig(cfg());
  assert.deepEqual(validateLayerConfig(layer), []);
  for (const b of BITS) assert.deepEqual(validateLayerConfig({ ...layer, bits: b }), []);
  assert.equal(validateLayerConfig({ ...layer, bits: 16 })[0].field, 'bits');
});

test('withDefaults fills missing (and undefined) keys and keeps unknown ones for the validator', () => {
  const c = withDefaults({ bits: 3, rank: undefined, typo: 1 });
  assert.equal(c.bits, 3);
  assert.equal(c.rank, DEFAULT_CONFIG.rank);
  assert.equal(c.backend, 'auto');
  assert.equal(c.compare, false);
  assert.equal(c.threads, 0);
  assert.deepEqual(
    validateConfig(c).map((i) => i.field),
    ['typo'],
  );
  assert.deepEqual(BACKENDS, ['auto', 'cpu', 'gpu']);
});
