// Run fingerprints (stable under key order and non-output settings, sensitive to the model bytes,
// the config and the calibration text; the refusal names what differs) and the run-directory lock.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DEFAULT_CONFIG, type QuantizeConfig } from '../../../src/protocol/config';
import { canonicalJson, computeFingerprint, fingerprintMismatch, outputConfig } from '../../../src/engine/run/fingerprint';
import { writeSafetensorsAtomic } from '../../../src/engine/io/safetensors_writer';

const cfg = (o: Partial<QuantizeConfig> = {}): QuantizeConfig => ({ ...DEFAULT_CONFIG, layerOverrides: {}, ...o });

test('canonical JSON ignores key order', () => {
  assert.equal(canonicalJson({ b: 1, a: { d: [1, { y: 2, x: 1 }], c: 'x' } }), canonicalJson({ a: { c: 'x', d: [1, { x: 1, y: 2 }] }, b: 1 }));
});

test('fingerprint parts and mismatch reasons', () => {
  const dir = mkdtempSync(join(tmpdir(), 'lopro-fp-'));
  const file = join(dir, 'm.safetensors');
  const data = new Float32Array(4096).map((_, i) => Math.sin(i));
  writeSafetensorsAtomic(file, [{ name: 'w', dtype: 'F32', shape: [64, 64], data }]);
  const calib = new TextEncoder().encode('some calibration text');
  const a = computeFingerprint(file, cfg(), calib);
  assert.deepEqual(computeFingerprint(file, cfg({ memoryBudgetMB: 1, ep: 'cpu' }), calib), a, 'budget and EP do not change outputs');
  // Where the math runs and the reports-only comparison: a run may resume with other values.
  assert.deepEqual(computeFingerprint(file, cfg({ backend: 'gpu', threads: 8, compare: true }), calib), a, 'backend, threads and compare do not change outputs');
  assert.deepEqual(
    Object.keys(outputConfig(cfg())).filter((k) => ['backend', 'threads', 'compare', 'ep'].includes(k)),
    [],
  );
  assert.equal(fingerprintMismatch(a, a), undefined);

  const b = computeFingerprint(file, cfg({ bits: 3 }), calib);
  assert.match(fingerprintMismatch(a, b, outputConfig(cfg()), outputConfig(cfg({ bits: 3 })))!, /config differs \(bits: 2 → 3\)/);
  assert.match(fingerprintMismatch(a, computeFingerprint(file, cfg(), new TextEncoder().encode('other')))!, /calibration text differs/);

  // One flipped byte in a sampled region (the last bytes are always sampled) changes the model hash.
  const bytes = readFileSync(file);
  bytes[bytes.length - 1] ^= 1;
  writeFileSync(file, bytes);
  assert.match(fingerprintMismatch(a, computeFingerprint(file, cfg(), calib))!, /model files differ/);
  assert.match(fingerprintMismatch({ ...a, engine: 'old' }, a)!, /engine old/);
});

test("run directory lock: one writer; a dead owner's lock is taken over", async () => {
  const { RunDir } = await import('../../../src/engine/run/rundir');
  const dir = new RunDir(mkdtempSync(join(tmpdir(), 'lopro-lock-')));
  const release = dir.lock();
  assert.throws(() => dir.lock(), /in use by another request/);
  release();
  writeFileSync(dir.lockFile, String(process.pid)); // a lock left by this live process's twin
  assert.throws(() => new RunDir(dir.dir).lock(), /in use by another engine process/);
  writeFileSync(dir.lockFile, '999999999'); // no such process: stale
  new RunDir(dir.dir).lock()();
});
