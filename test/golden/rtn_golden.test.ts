// Every golden RTN case (`find_params` + `quantize` per group, no H): float32 semantics with
// round-half-to-even reproduce Q, codes, scale and zero bit for bit (README §7), including the
// sym −maxq/2 ties and the half-integer tie rows of *_ties — on the one-thread twin (rtnQuantize_ref)
// and on the production driver (quant/rtn.ts `rtn`) on the CPU backend with one thread and three workers.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { QuantizedWeight, RtnOptions } from '../../src/engine/quant/rtn';
import { rtnQuantize_ref } from '../../src/engine/quant/rtn_ref';
import { cpuBackend, rtnOn } from '../unit/backend/backends';
import { caseFiles, loadCase } from './golden_cases';

type RtnEngine = (W: Float32Array, rows: number, cols: number, opts: RtnOptions) => QuantizedWeight | Promise<QuantizedWeight>;
const engines: [string, RtnEngine][] = [
  ['ref', rtnQuantize_ref],
  ['cpu backend 1 thread', (W, rows, cols, o) => rtnOn(cpuBackend(1), W, rows, cols, o)],
  ['cpu backend 3 threads', (W, rows, cols, o) => rtnOn(cpuBackend(3), W, rows, cols, o)],
];

const { files } = caseFiles('rtn');

for (const [label, engine] of engines) {
  const totals = { codes: 0, equal: 0, perCase: [] as string[] };
  for (const file of files) {
    const c = loadCase(file);
    test(`golden ${label} ${c.name}`, async () => {
      const res = await engine(c.W, c.rows, c.cols, { bits: c.bits, groupSize: c.groupSize, sym: c.sym });
      assert.equal(res.scale.length, c.scale.length, 'group count');
      assert.equal(res.Q.length, c.Q.length, 'Q');
      assert.deepEqual(Array.from(res.gIdx), Array.from(c.gIdx), 'g_idx');
      let diff = 0;
      for (let i = 0; i < c.codes.length; i++) if (res.codes[i] !== c.codes[i]) diff++;
      totals.codes += c.codes.length;
      totals.equal += c.codes.length - diff;
      totals.perCase.push(`${c.name}=${diff}`);
      assert.equal(diff, 0, 'codes must be bit-exact');
      // Bit-exact float32: compare the values as float32 (−0 and 0 compare equal, as in torch.equal).
      for (let i = 0; i < c.Q.length; i++) if (res.Q[i] !== c.Q[i]) assert.fail(`Q[${i}] = ${res.Q[i]}, expected ${c.Q[i]}`);
      for (let i = 0; i < c.scale.length; i++) {
        assert.equal(res.scale[i], c.scale[i], `scale[${i}]`);
        assert.equal(res.zero[i], c.zero[i], `zero[${i}]`);
      }
    });
  }

  test(`golden RTN ${label} overall: every code equal`, () => {
    assert.ok(totals.codes > 0, 'no RTN golden cases found');
    console.log(
      `[rtn golden ${label}] ${totals.perCase.length} cases, ${totals.codes} codes compared, ${((100 * totals.equal) / totals.codes).toFixed(4)} % equal; mismatches per case: ${totals.perCase.join(' ')}`,
    );
    assert.equal(totals.equal, totals.codes);
  });
}
