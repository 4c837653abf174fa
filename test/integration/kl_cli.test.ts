// KL from the float model next to perplexity: after a run with --eval, and from `lopro eval --kl` (the run's
// own model) or `--reference DIR`; refused by name where there is no reference or it has another shape.
import type { MemoryPlanSummary } from '../../src/protocol/messages';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { PERSUASION, ROOT, runCli, SMALL, tmp, TINY, TRAIN } from './helpers';

test('a run with --eval reports KL from its float model; lopro eval --kl and --reference give the same number', () => {
  const run = join(tmp('kl'), 'run');
  const q = runCli(['quantize', TINY, '--calib', TRAIN, ...SMALL, '--method', 'rtn', '--bits', '2', '--out', run, '--eval', PERSUASION, '--json', '--quiet']);
  assert.equal(q.code, 0, q.stderr);
  const s = JSON.parse(q.stdout) as { perplexity: Record<string, number>; kl: Record<string, number>; peakHostBytes: number; memoryPlan?: MemoryPlanSummary };
  assert.ok(s.kl.persuasion > 0.01, `RTN W2 moves the distribution: KL ${s.kl.persuasion}`);
  // The run's own peak: the engine process with ORT and the tiny model, not a lifetime figure.
  assert.ok(s.peakHostBytes > 100 * 2 ** 20 && s.peakHostBytes < 8 * 2 ** 30, `peak host memory ${s.peakHostBytes}`);
  // The default budget is automatic; the summary carries the plan (the evaluation after the blocks is not in it).
  assert.ok(s.memoryPlan && s.memoryPlan.budgetMB > 0 && s.memoryPlan.peakBytes > 0 && /^automatic: 75 % of \d+ MiB, /.test(s.memoryPlan.auto ?? ''), JSON.stringify(s.memoryPlan));
  for (const flags of [['--kl'], ['--reference', TINY]]) {
    const e = runCli(['eval', run, '--text', PERSUASION, ...flags, '--json', '--quiet', '--ep', 'cpu']);
    assert.equal(e.code, 0, e.stderr);
    const r = JSON.parse(e.stdout) as { perplexity: Record<string, number>; kl: Record<string, number> };
    assert.ok(Math.abs(r.kl.persuasion / s.kl.persuasion - 1) < 1e-6, `${flags[0]}: ${r.kl.persuasion} vs ${s.kl.persuasion}`);
    assert.equal(r.perplexity.persuasion, s.perplexity.persuasion);
  }
  const self = runCli(['eval', TINY, '--text', PERSUASION, '--reference', TINY, '--json', '--quiet', '--ep', 'cpu']);
  assert.equal(self.code, 0, self.stderr);
  assert.ok((JSON.parse(self.stdout) as { kl: Record<string, number> }).kl.persuasion < 1e-6);
  const noRef = runCli(['eval', TINY, '--text', PERSUASION, '--kl', '--quiet']);
  assert.equal(noRef.code, 2);
  assert.match(noRef.stderr, /^lopro: E_INVALID_PARAMS: .*not a run directory.*--reference/);
  const other = runCli(['eval', run, '--text', PERSUASION, '--reference', join(ROOT, 'fixtures/arch/qwen2s'), '--quiet']);
  assert.equal(other.code, 2);
  assert.match(other.stderr, /^lopro: E_SHAPE_MISMATCH: the KL reference .*qwen2s has family qwen2, the evaluated model llama/);
});
