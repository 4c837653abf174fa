// The heatmap's columns: one per module, and for a mixture-of-experts block one per expert role holding
// every expert (8 or 128 experts stay one row per block), in attention → MLP → experts → shared order.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { columnLabel, columnOf } from '../../../webview/heatmap';

test('experts share their role column; labels are short', () => {
  const l = (module: string, expert?: number) => ({ name: `model.layers.0.x.${module}`, block: 0, module, rows: 1, cols: 1, expert });
  assert.equal(columnOf(l('q_proj')), 'q_proj');
  assert.equal(columnOf(l('experts.7.w1', 7)), 'experts.w1');
  assert.equal(columnOf(l('experts.127.down_proj', 127)), 'experts.down_proj');
  assert.equal(columnOf(l('shared_expert.up_proj')), 'shared_expert.up_proj');
  assert.deepEqual(['q_proj', 'gate_proj', 'experts.w2', 'experts.gate_proj', 'shared_expert.down_proj'].map(columnLabel), [
    'q',
    'gate',
    'experts w2',
    'experts gate',
    'shared down',
  ]);
});
