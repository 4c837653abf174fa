// A target-size run end to end on the embedded tiny model: the measurement pass, the plan within the target (the
// run's real bits per weight never above it, each layer quantized as planned), the measurement reused by a second
// run with another target and by `lopro plan`, and the refusals (a target below every plan, a bare file, a
// measurement of another config) with nothing written.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Measurements, Plan } from '../../src/protocol/plan';
import { makeBareCheckpoint, ROOT, runCli, sha256, SMALL, spawnCli, tmp, TINY, TRAIN } from './helpers';
import type { LayerReport } from '../../src/protocol/messages';

interface Summary {
  bpw: number;
}

test('--target-bpw: measure, plan, quantize as planned within the target; reuse the measurement for another target', () => {
  const root = tmp('target');
  const run = join(root, 'a');
  const q = runCli(['quantize', TINY, '--calib', TRAIN, ...SMALL, '--target-bpw', '2.6', '--out', run, '--json']);
  assert.equal(q.code, 0, q.stderr);
  assert.match(q.stderr, /measuring candidate configurations on 4 blocks/);
  assert.match(q.stderr, /plan for 2\.6 bits per weight: 2\.\d+ bpw/);
  const s = JSON.parse(q.stdout) as Summary;
  assert.ok(s.bpw <= 2.6 && s.bpw > 2.45, `real bpw ${s.bpw}`);
  const manifest = JSON.parse(readFileSync(join(run, 'run.json'), 'utf8')) as { plan: Plan; layers: LayerReport[] };
  const meas = JSON.parse(readFileSync(join(run, 'measurements.json'), 'utf8')) as Measurements;
  assert.equal(meas.layers.length, 28);
  // Each layer's block gain: down_proj adds its output into the residual stream, so its gain is 1 up to the
  // noise sample's spread; the others pass through the rest of the block.
  for (const l of meas.layers) {
    assert.ok(Number.isFinite(l.gain) && l.gain! > 0, `${l.name}: gain ${l.gain}`);
    if (l.module.endsWith('down_proj')) assert.ok(Math.abs(l.gain! - 1) < 0.15, `${l.name}: gain ${l.gain}`);
  }
  assert.equal(manifest.plan.choices.length, 28);
  // Every layer was quantized with its planned method, bits and rank, and the plan's bpw is the run's.
  const byName = new Map(manifest.layers.map((l) => [l.name, l]));
  manifest.plan.choices.forEach((ch, i) => {
    const c = meas.layers[i].candidates[ch.candidate];
    const r = byName.get(ch.name)!;
    assert.deepEqual({ method: r.config.method, bits: r.config.bits, rank: r.config.rank }, c.config, ch.name);
    assert.ok(Math.abs(r.bpw - c.bpw) < 1e-9, `${ch.name}: run bpw ${r.bpw} vs planned ${c.bpw}`);
  });
  assert.ok(Math.abs(manifest.plan.bpw - s.bpw) < 1e-3, `${manifest.plan.bpw} vs ${s.bpw}`);
  // Not one uniform choice: a plan mixes widths.
  assert.ok(new Set(manifest.layers.map((l) => l.config.bits)).size > 1, 'the plan mixes bit widths');

  // `lopro plan` from the file gives the run's plan; a larger target spends more bits for less error.
  const p = runCli(['plan', join(run, 'measurements.json'), '--target-bpw', '2.6', '--json']);
  assert.equal(p.code, 0, p.stderr);
  assert.deepEqual((JSON.parse(p.stdout) as { plan: Plan }).plan.choices, manifest.plan.choices);
  const p3 = JSON.parse(runCli(['plan', join(run, 'measurements.json'), '--target-bpw', '3.25', '--json']).stdout) as {
    plan: Plan;
    curve: { targetBpw: number; bpw: number; loss: number }[];
  };
  assert.ok(p3.plan.bpw > manifest.plan.bpw && p3.plan.bpw <= 3.25 && p3.plan.loss < manifest.plan.loss);
  // The error-vs-bits curve of the same measurement: every plan within its target, the error never rising with it (beyond the
  // exact solver’s rounding of costs to units).
  assert.ok(p3.curve.length >= 5, `${p3.curve.length} points`);
  for (let i = 0; i < p3.curve.length; i++) {
    assert.ok(p3.curve[i].bpw <= p3.curve[i].targetBpw + 1e-12);
    if (i) assert.ok(p3.curve[i].loss <= p3.curve[i - 1].loss * (1 + 1e-3), `curve rises at ${p3.curve[i].targetBpw}`);
  }
  const tooLow = runCli(['plan', join(run, 'measurements.json'), '--target-bpw', '1.5']);
  assert.equal(tooLow.code, 2);
  assert.match(tooLow.stderr, /targetBpw 1\.5: target below the smallest measured configuration \(2\.\d+ bits per weight\)/);

  // A second run with another target reuses the measurement (no measuring) through --measurements.
  const run2 = join(root, 'b');
  const q2 = runCli(['quantize', TINY, '--calib', TRAIN, ...SMALL, '--target-bpw', '3.25', '--measurements', join(run, 'measurements.json'), '--out', run2, '--json']);
  assert.equal(q2.code, 0, q2.stderr);
  assert.doesNotMatch(q2.stderr, /measuring candidate configurations/);
  assert.match(q2.stderr, /reusing the measurement/);
  const s2 = JSON.parse(q2.stdout) as Summary;
  assert.ok(Math.abs(s2.bpw - p3.plan.bpw) < 1e-3 && s2.bpw <= 3.25, `${s2.bpw} vs planned ${p3.plan.bpw}`);

  // A measurement of another config is refused by name; so is a target no plan reaches, with nothing written.
  const other = runCli([
    'quantize',
    TINY,
    '--calib',
    TRAIN,
    ...SMALL,
    '--group',
    '64',
    '--target-bpw',
    '3',
    '--measurements',
    join(run, 'measurements.json'),
    '--out',
    join(root, 'c'),
  ]);
  assert.equal(other.code, 2);
  assert.match(other.stderr, /E_INCOMPATIBLE_CHECKPOINT: .*measurements\.json was measured on another model, calibration text or config/);
  assert.ok(!existsSync(join(root, 'c')), 'nothing written');
  const low = runCli(['quantize', TINY, '--calib', TRAIN, ...SMALL, '--target-bpw', '2', '--out', join(root, 'd')]);
  assert.equal(low.code, 2);
  assert.match(low.stderr, /E_BAD_CONFIG: targetBpw 2 is below the smallest plan for .*: 2\.\d+ bits per weight .*\[--target-bpw\]/);
  assert.ok(!existsSync(join(root, 'd')), 'nothing written');
  const both = runCli(['quantize', TINY, '--calib', TRAIN, ...SMALL, '--target-bpw', '3', '--target-size', '5MB', '--out', join(root, 'f')]);
  assert.equal(both.code, 2);
  assert.match(both.stderr, /--target-size and --target-bpw ask for the same thing twice/);
  const tiny = runCli(['quantize', TINY, '--calib', TRAIN, ...SMALL, '--target-size', '1MB', '--out', join(root, 'g')]);
  assert.equal(tiny.code, 2);
  assert.match(tiny.stderr, /E_BAD_CONFIG: --target-size 0\.001 GB is less than what .* keeps unquantized/);
  const bare = join(root, 'bare.safetensors');
  makeBareCheckpoint(bare);
  const b = runCli(['quantize', bare, '--target-bpw', '3', '--out', join(root, 'e')]);
  assert.equal(b.code, 2);
  assert.match(b.stderr, /E_BAD_CONFIG: targetBpw needs a model folder: .*bare\.safetensors is a bare safetensors file/);
  assert.deepEqual(readdirSync(root).sort(), ['a', 'b', 'bare.safetensors']);
});

/** Runs until a stderr line matches `when`, then SIGKILLs after `delayMs`; resolves with the exit code (null when killed). */
function killWhen(args: string[], when: RegExp, delayMs: number): Promise<number | null> {
  return new Promise((resolve) => {
    const child = spawnCli(args);
    let armed = false,
      text = '';
    child.stderr!.on('data', (d: Buffer) => {
      text += d.toString();
      if (!armed && when.test(text)) {
        armed = true;
        setTimeout(() => child.kill('SIGKILL'), delayMs);
      }
    });
    child.stdout!.resume();
    child.on('exit', (code) => resolve(code));
  });
}

test('a target run killed in its measurement pass and again in its blocks resumes to the uninterrupted run’s bytes', async () => {
  const root = tmp('target-kill');
  const args = ['quantize', TINY, '--calib', TRAIN, ...SMALL, '--target-bpw', '2.7'];
  const ref = runCli([...args, '--out', join(root, 'ref')]);
  assert.equal(ref.code, 0, ref.stderr);
  const out = join(root, 'killed');
  // In the measurement pass: nothing of it is kept (it is written once, complete), the resume measures again.
  assert.equal(await killWhen([...args, '--out', out], /block 1 \w+_proj: 12 candidates/, 0), null);
  assert.ok(!existsSync(join(out, 'measurements.json')));
  // In the blocks: the measurement is kept and reused.
  assert.equal(await killWhen([...args, '--out', out, '--resume'], /block 2\/4 done/, 0), null);
  assert.ok(existsSync(join(out, 'measurements.json')));
  const r = runCli([...args, '--out', out, '--resume']);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /reusing this folder's measurement/);
  assert.doesNotMatch(r.stderr, /measuring candidate configurations/);
  assert.equal(sha256(join(out, 'native', 'model.safetensors')), sha256(join(root, 'ref', 'native', 'model.safetensors')));
});

test('a mixture-of-experts target run: every expert measured on its routed statistic and planned, within the target', () => {
  const root = tmp('target-moe');
  const run = join(root, 'mx');
  const q = runCli([
    'quantize',
    join(ROOT, 'fixtures/arch/mixtralt'),
    '--calib',
    TRAIN,
    '--samples',
    '8',
    '--ctx',
    '64',
    '--ep',
    'cpu',
    '--target-bpw',
    '2.5',
    '--out',
    run,
    '--json',
  ]);
  assert.equal(q.code, 0, q.stderr);
  const s = JSON.parse(q.stdout) as { bpw: number; layers: LayerReport[] };
  assert.ok(s.bpw <= 2.5 && s.bpw > 2.3, `${s.bpw}`);
  const meas = JSON.parse(readFileSync(join(run, 'measurements.json'), 'utf8')) as Measurements;
  assert.deepEqual(meas.layers.map((l) => l.name).sort(), s.layers.map((l) => l.name).sort());
  const experts = meas.layers.filter((l) => /experts\.\d+\./.test(l.name));
  assert.ok(experts.length >= 16, `${experts.length} expert layers`);
  // An expert's output is scaled by its routing weight (≤ 1) and reaches only its tokens: its down projection's gain is below 1.
  for (const l of experts.filter((e) => e.name.endsWith('.w2'))) assert.ok(l.gain > 0 && l.gain < 1, `${l.name}: gain ${l.gain}`);
});
