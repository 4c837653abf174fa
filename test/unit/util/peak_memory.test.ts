// A run's peak host memory: on Linux reset at the run's start (VmHWM via /proc/self/clear_refs), so a second
// run in the same engine process reports its own peak.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { peakMemoryBytes, resetPeakMemory } from '../../../src/engine/util/peak_memory';

test('the peak covers what is resident now, grows with a touched allocation, and resets on Linux', () => {
  assert.equal(resetPeakMemory(), process.platform === 'linux');
  const before = peakMemoryBytes();
  assert.ok(before >= process.memoryUsage().rss * 0.9, `${before} vs rss ${process.memoryUsage().rss}`);
  const big = new Float64Array(32 * 2 ** 20).fill(1); // 256 MiB, every page touched
  const after = peakMemoryBytes();
  assert.ok(after - before > 200 * 2 ** 20, `peak grew by ${(after - before) / 2 ** 20} MiB`);
  assert.equal(big[big.length - 1], 1);
});
