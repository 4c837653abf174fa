// Golden GPTQ cases (gptq_golden_suite.ts, the same strict checks for every engine) on the float64
// one-thread twin (gptqQuantize_ref: TS Cholesky of H⁻¹, TS lazy updates) and on the production driver
// (quant/gptq.ts `gptq`) on the CPU backend with one thread and with three workers (row splits).

import { gptqQuantize_ref } from '../../src/engine/quant/gptq_ref';
import { cpuBackend, gptqOn } from '../unit/backend/backends';
import { goldenGptqSuite } from './gptq_golden_suite';

goldenGptqSuite('ts-f64 ref', gptqQuantize_ref);
goldenGptqSuite('cpu backend 1 thread', (W, rows, cols, H, opts) => gptqOn(cpuBackend(1), W, rows, cols, H, opts));
goldenGptqSuite('cpu backend 3 threads', (W, rows, cols, H, opts) => gptqOn(cpuBackend(3), W, rows, cols, H, opts));
