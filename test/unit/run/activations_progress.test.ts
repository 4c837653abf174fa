// Activation stores (in memory vs spilled to a file give the same records, persist/load round
// trip) and the progress tracker (begin/report/end, percentage, ETA from this session's pace).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createActivationStore, loadActivationStore } from '../../../src/engine/run/activations';
import { ProgressTracker, formatEta } from '../../../src/engine/run/progress';
import type { ProgressValue } from '../../../src/protocol/messages';

test('memory and spilled stores hold the same records; persist → load round trip', () => {
  const dir = mkdtempSync(join(tmpdir(), 'lopro-acts-'));
  const n = 5,
    len = 37;
  const mem = createActivationStore(n, len, 1e9, join(dir, 'unused.f32'));
  const disk = createActivationStore(n, len, 100, join(dir, 'spill.f32'));
  assert.equal(mem.spilled, false);
  assert.equal(disk.spilled, true);
  for (let i = n - 1; i >= 0; i--) {
    const rec = Float32Array.from({ length: len }, (_, k) => Math.fround(i * 1000 + k + 0.25));
    mem.set(i, rec);
    disk.set(i, rec);
  }
  for (let i = 0; i < n; i++) assert.deepEqual(disk.get(i), Float32Array.from(mem.get(i)));
  disk.persist(join(dir, 'acts.f32'));
  const back = loadActivationStore(join(dir, 'acts.f32'), n, len, 100, join(dir, 'spill2.f32'));
  for (let i = 0; i < n; i++) assert.deepEqual(back.get(i), Float32Array.from(mem.get(i)));
  disk.dispose();
  back.dispose();
  assert.ok(!existsSync(join(dir, 'spill.f32')), 'dispose removes the scratch file');
  assert.throws(() => mem.set(0, new Float32Array(3)), /37/);
});

test('progress: begin, reports with percentage and ETA, end; resumed work is not timed', () => {
  const seen: ProgressValue[] = [];
  const p = new ProgressTracker((v) => seen.push(v), 100, 'work', 40);
  assert.deepEqual(seen[0], { kind: 'begin', title: 'work', cancellable: true, percentage: 40 });
  assert.equal(p.eta(), undefined, 'no ETA before this session did any work');
  p.advance(30, 'step', { block: 1, layer: 'x' });
  const r = seen[1];
  assert.ok(r.kind === 'report' && r.percentage === 70 && r.block === 1 && r.layer === 'x' && r.etaSeconds !== undefined && r.etaSeconds >= 0);
  p.end('done');
  assert.deepEqual(seen[2], { kind: 'end', message: 'done' });
  assert.equal(formatEta(75), '1m15s');
  assert.equal(formatEta(3 * 3600 + 120), '3h02m');
});
