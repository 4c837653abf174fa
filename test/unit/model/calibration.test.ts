// Calibration and evaluation windows exactly per ../shared/protocol.md.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ErrorCode } from '../../../src/protocol/messages';
import { ProtocolError } from '../../../src/protocol/rpc';
import { calibrationStarts, calibrationWindows, evalWindowCount, evalWindows } from '../../../src/engine/model/calibration';

test('calibration window i starts at floor(i·(T − ctx)/n)', () => {
  const T = 1_395_689,
    ctx = 512,
    n = 128; // train.txt under the tiny tokenizer
  const s = calibrationStarts(T, ctx, n);
  assert.equal(s.length, n);
  assert.equal(s[0], 0);
  assert.equal(s[1], Math.floor((T - ctx) / n));
  assert.equal(s[127], Math.floor((127 * (T - ctx)) / 128));
  assert.ok(s[127] + ctx <= T);
  for (let i = 1; i < n; i++) assert.ok(s[i] > s[i - 1]);
});

test('calibrationWindows copies each window; evaluation windows are non-overlapping and drop the tail', () => {
  const ids = Int32Array.from({ length: 103 }, (_, i) => i);
  const w = calibrationWindows(ids, 10, 4);
  assert.deepEqual(
    [...w.subarray(10, 20)],
    Array.from({ length: 10 }, (_, i) => Math.floor(93 / 4) + i),
  );
  assert.equal(evalWindowCount(103, 10), 10);
  assert.deepEqual(
    [...evalWindows(ids, 10)],
    Array.from({ length: 100 }, (_, i) => i),
  );
});

test('too-short texts and bad parameters are BadCalibration errors', () => {
  const isCode = (c: string) => (e: unknown) => e instanceof ProtocolError && e.code === c;
  assert.throws(() => calibrationStarts(100, 256, 128), isCode(ErrorCode.BadCalibration));
  assert.throws(() => calibrationStarts(1000, 1, 4), isCode(ErrorCode.BadCalibration));
  assert.throws(() => evalWindows(new Int32Array(5), 10), isCode(ErrorCode.BadCalibration));
});
