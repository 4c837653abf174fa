// The LoPRo authors' code defaults as levers of our driver (issue 17 item 7): the automatic rank, α's clampRange
// normalisation, the log-Hessian column score, the alternating refinement, and the `authors` preset over a config.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chooseRank, rankTermBits, scanRanks } from '../../../src/engine/quant/auto_rank';
import { columnScaleAlpha, leadingFactors, lowRankWeight, r1svd, scaleColumns } from '../../../src/engine/quant/r1svd';
import { columnImportance } from '../../../src/engine/quant/permute';
import { quantizeLayer } from '../../../src/engine/run/quantize_layer';
import { syntheticActivations, syntheticWeight } from '../../../src/engine/quant/lopro_synth';
import { DEFAULT_LAYER_CONFIG, PRESETS, applyPreset, bitsPerWeight, validateConfig, withDefaults, withPreset, type LayerConfig } from '../../../src/protocol/config';
import { cpuBackend } from '../backend/backends';

test('chooseRank keeps a term while log2 of its shrink of max|W|, over m·n weights, pays its 8·(m + n) + 16 bits', () => {
  const m = 64,
    n = 64; // a term costs 1040 bits = 0.254 bits per weight
  assert.equal(rankTermBits(m, n), 1040);
  // halving the range saves 1 bit per weight (4096 bits): kept; 0.5 → 0.49 saves 0.029 per weight: not worth a term
  assert.equal(chooseRank([1, 0.5, 0.49], m, n), 1);
  // a small first step followed by a large one: the net over both terms wins
  assert.equal(chooseRank([1, 0.9, 0.3], m, n), 2);
  assert.equal(chooseRank([1, 0.99, 0.98], m, n), 0);
  assert.equal(chooseRank([1, 0.5, 0], m, n), 2, 'exactly rank 2: nothing left');
  assert.equal(chooseRank([0, 0], m, n), 0, 'an all-zero layer');
  // wider layers pay less per weight for a term: the same shrink is kept at 4096×4096 but not at 16×16
  assert.equal(chooseRank([1, 0.97], 4096, 4096), 1);
  assert.equal(chooseRank([1, 0.97], 16, 16), 0);
});

test("scanRanks: max|W − W_k| and A's captured energy after each stored term equal the dense computation", () => {
  const m = 40,
    n = 96;
  const W = syntheticWeight(m, n, 3);
  const act = syntheticActivations(n, 4);
  const { alpha } = columnScaleAlpha(act.meanAbs, n, 0.5);
  const A = scaleColumns(W, m, n, alpha, new Float64Array(m * n));
  const f = r1svd(A, m, n, { rank: 6, powerIters: 4, seed: 1 });
  const scan = scanRanks(W, f, alpha);
  let total = 0;
  for (let i = 0; i < m * n; i++) total += A[i] ** 2;
  for (let k = 0; k <= f.rank; k++) {
    const fk = leadingFactors(f, k);
    const Wk = k > 0 ? lowRankWeight(fk.U, fk.sigma, fk.V, m, n, k, alpha) : new Float64Array(m * n);
    let mx = 0,
      e = 0;
    for (let i = 0; i < m * n; i++) {
      mx = Math.max(mx, Math.abs(W[i] - Wk[i]));
      e += ((W[i] - Wk[i]) * alpha[i % n]) ** 2;
    }
    assert.ok(Math.abs(scan.maxAbs[k] - mx) <= 1e-9 * mx, `k ${k}: ${scan.maxAbs[k]} vs ${mx}`);
    assert.ok(Math.abs(scan.energy[k] - (1 - e / total)) < 1e-9, `energy k ${k}`);
  }
  assert.ok(scan.maxAbs[1] < scan.maxAbs[0], 'the leading term shrinks the range of a layer with a strong rank-8 part');
});

test("columnScaleAlpha clampRange: (mean|x|)^β clamped at 1e-4, divided by √(max·min), in FP16; geomean's spread is the same for unclamped columns", () => {
  const meanAbs = [0.001, 0.1, 1, 10];
  const { alpha } = columnScaleAlpha(meanAbs, 4, 2.4, 'clampRange');
  const raw = [1e-4, 0.1 ** 2.4, 1, 10 ** 2.4];
  const mid = Math.sqrt(1e-4 * 10 ** 2.4);
  for (let j = 0; j < 4; j++) assert.ok(Math.abs(alpha[j] - raw[j] / mid) <= 1e-3 * (raw[j] / mid), `α${j} ${alpha[j]} vs ${raw[j] / mid}`);
  const g = columnScaleAlpha(meanAbs, 4, 2.4, 'geomean').alpha;
  // the ratio of two unclamped columns is the same in both (only the normalisation differs)
  assert.ok(Math.abs(alpha[3] / alpha[2] - g[3] / g[2]) <= 2e-3 * (g[3] / g[2]));
  // the clamp lifts the quiet column: its ratio to the loudest is 1e-4 / 10^2.4, not 0.001^2.4 / 10^2.4
  assert.ok(alpha[0] / alpha[3] > 100 * (g[0] / g[3]));
  assert.deepEqual(Array.from(columnScaleAlpha(null, 2, 2.4, 'clampRange').alpha), [1, 1]);
});

test('columnImportance logHessian: the Hessian diagonal in bits above its minimum, + 1, over mean|R_j| — a loud input no longer outranks a column with a large residual', () => {
  // two columns: input energy 1 and 1024 (10 bits apart), mean|R| 1 and 100
  const R = [1, 100, -1, -100];
  const h = columnImportance([1, 1024], R, 2, 2, 'hessian');
  const l = columnImportance([1, 1024], R, 2, 2, 'logHessian');
  assert.ok(h[1] > h[0], 'hessian: the loud input first');
  assert.ok(l[0] > l[1], 'logHessian: the quiet input with the small residual first');
  assert.ok(Math.abs(l[0] - 1) < 1e-6 && Math.abs(l[1] - 11 / 100) < 1e-6, `${Array.from(l)}`);
  // a dead input (H_jj = 0) counts as the smallest live one, not −∞
  const d = columnImportance([0, 1, 4], [1, 1, 1], 1, 3, 'logHessian');
  assert.ok(Math.abs(d[0] - 1) < 1e-6 && Math.abs(d[1] - 1) < 1e-6 && Math.abs(d[2] - 3) < 1e-6, `${Array.from(d)}`);
});

// The synthetic layer of lopro_layer.test.ts: heavy tails, a rank-8 part, outlier input channels.
const rows = 96,
  cols = 256;
const act = syntheticActivations(cols, 1);
const W = syntheticWeight(rows, cols, 2);
const layer = { name: 'model.layers.1.mlp.down_proj', block: 1, module: 'down_proj', rows, cols, W, H: act.H, absMean: act.meanAbs };
const runLayer = (over: Partial<LayerConfig>) =>
  quantizeLayer(cpuBackend(1), layer, { ...DEFAULT_LAYER_CONFIG, salientBlock: 64, hadamardBlock: 64, rank: 4, ...over }, { seed: 0, compare: false });

test('the alternating refinement keeps its best round: never worse than no refinement, equal when round 0 is kept; no low rank, no refinement', async () => {
  const plain = await runLayer({});
  const refined = await runLayer({ refineRounds: 8 });
  const note = refined.report.notes.find((n) => n.startsWith('refinement:'));
  assert.ok(note, refined.report.notes.join(' | '));
  const [, rounds, kept] = note!.match(/refinement: (\d+) rounds, kept round (\d+)/)!.map(Number);
  assert.ok(rounds >= 1 && rounds <= 8 && kept <= rounds, note);
  assert.ok(refined.report.proxyLoss <= plain.report.proxyLoss * (1 + 1e-12), `refined ${refined.report.proxyLoss} vs ${plain.report.proxyLoss}`);
  if (kept === 0) assert.equal(refined.report.proxyLoss, plain.report.proxyLoss);
  else assert.ok(refined.report.proxyLoss < plain.report.proxyLoss);
  // it stops after 2 rounds without a new best: the last two rounds did not improve on the kept one
  if (rounds < 8) assert.equal(rounds - kept, 2, note);
  assert.equal(refined.report.bpw, plain.report.bpw, 'the same storage');
  const r0 = await runLayer({ rank: 0, refineRounds: 4 });
  assert.ok(r0.report.notes.includes('no refinement: the layer has no low-rank part'));
});

test('rank −1: the chosen rank is in the stored layer, its bpw and the note; the layer is better than without a low rank', async () => {
  const auto = await runLayer({ rank: -1 });
  const note = auto.report.notes.find((n) => n.startsWith('rank chosen:'))!;
  const k = Number(note.match(/rank chosen: (\d+)/)![1]);
  assert.ok(k >= 1 && k <= 32, note); // the layer's rank-8 part shrinks its range
  assert.equal(auto.report.config.rank, k, 'the report states the rank chosen');
  const fixed = await runLayer({ rank: k });
  assert.equal(auto.report.bpw, fixed.report.bpw);
  assert.equal(auto.report.proxyLoss, fixed.report.proxyLoss, 'the same factors as asking for that rank (R1SVD deflates greedily)');
});

test('the authors preset: its settings under what the user gives; refinement only at 2 bits unless asked; valid', () => {
  assert.deepEqual(withPreset('none', { bits: 3 }), { bits: 3 });
  const p2 = withPreset('authors', {});
  assert.equal(p2.refineRounds, 20);
  assert.equal(p2.rank, -1);
  assert.equal(p2.beta, 2.4);
  const p3 = withPreset('authors', { bits: 3, rank: 8 });
  assert.equal(p3.refineRounds, 0);
  assert.equal(p3.rank, 8, 'the user wins');
  assert.equal(withPreset('authors', { bits: 3, refineRounds: 5 }).refineRounds, 5);
  for (const p of [p2, p3]) assert.deepEqual(validateConfig(withDefaults(p)), []);
  assert.deepEqual(Object.keys(PRESETS), ['authors']);
});

test("applyPreset (the panel's Start from): the authors' keys over a whole config, and back to our defaults of those keys only", () => {
  const mine = withDefaults({ bits: 2, targetBpw: 2.25, calibText: 'c.txt', groupSize: 64 });
  const a = applyPreset(mine, 'authors');
  for (const [k, v] of Object.entries(PRESETS.authors)) assert.equal((a as unknown as Record<string, unknown>)[k], v, k);
  assert.equal(a.groupSize, 64, 'keys the preset does not set are kept');
  assert.equal(a.targetBpw, 2.25);
  assert.equal(applyPreset({ ...mine, bits: 4 }, 'authors').refineRounds, 0);
  const back = applyPreset(a, 'none');
  assert.deepEqual(back, mine);
  assert.ok(bitsPerWeight({ ...DEFAULT_LAYER_CONFIG, rank: -1 }, 512, 512) === bitsPerWeight({ ...DEFAULT_LAYER_CONFIG, rank: 32 }, 512, 512), 'rank −1 is estimated at its bound');
});
