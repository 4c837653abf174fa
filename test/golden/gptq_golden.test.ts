// Golden GPTQ cases on the float64 TypeScript engine (gptqQuantize: TS Cholesky of H⁻¹, TS lazy updates).

import { gptqQuantize } from '../../src/engine/quant/gptq';
import { goldenGptqSuite } from './gptq_golden_suite';

goldenGptqSuite('ts-f64', gptqQuantize);
