// Golden GPTQ cases on the ONNX Runtime path (CPU EP): the blocked ORT Cholesky of src/engine/linalg
// (float64 leaves, float32 products) and every lazy update as an ORT float64 MatMul (gptq_ort.ts),
// with two-level lazy batching (lazySpan).
// Same acceptance criteria as the TypeScript engine.

import { after } from 'node:test';
import { gptqQuantizeAsync } from '../../src/engine/quant/gptq';
import { createOrtLazyUpdate, type OrtLazyUpdate } from '../../src/engine/quant/gptq_ort';
import { choleskyInverseUpper } from '../../src/engine/linalg/cholesky';
import { goldenGptqSuite } from './gptq_golden_suite';

let lazy: Promise<OrtLazyUpdate> | undefined;
after(async () => { if (lazy) await (await lazy).release(); });

goldenGptqSuite('ort', async (W, rows, cols, H, opts) => {
  lazy ??= createOrtLazyUpdate({ dtype: 'float64', minMacs: 0 });
  const upd = await lazy;
  return gptqQuantizeAsync(W, rows, cols, H, {
    ...opts,
    lazySpan: 4 * (opts.blockSize ?? 128), // two-level lazy batching (falls back to blockSize where a group would straddle spans)
    choleskyInverseUpperAsync: (h, n) => choleskyInverseUpper(h, n),
    lazyUpdateAsync: (q) => upd.update(q),
  });
});
