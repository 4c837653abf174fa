// `contributes.configuration` is generated from DEFAULT_CONFIG: one setting `lopro.quantize.<key>`
// per key, with the same default. `node --import tsx scripts/e2e/gen-contributes.ts` writes it into
// package.json; test/unit/extension/settings.test.ts checks both directions stay in sync.
// Pure module (no vscode import) so unit tests and the generator can load it.

import { CLIP_MODES, DEFAULT_CONFIG, EXECUTION_PROVIDERS, METHODS, type QuantizeConfig } from '../protocol/config';

export const QUANTIZE_SECTION = 'lopro.quantize';

/** Description (and enum / range) of every QuantizeConfig key, shown in the Settings UI. */
const META: { [K in keyof QuantizeConfig]: { description: string; enum?: readonly unknown[]; minimum?: number; maximum?: number } } = {
  method: { description: 'Quantization method: rtn (round to nearest), gptq, lopro (low-rank + permuted partial Hadamard + GPTQ), lopro_v (LoPRo with GPTVQ).', enum: METHODS },
  bits: { description: 'Bits per code of the residual quantizer.', enum: [2, 3, 4, 8] },
  groupSize: { description: 'Group size along the input (column) dimension; -1 = one group per row.', minimum: -1 },
  sym: { description: 'Symmetric scale (zero fixed at (maxq+1)/2) instead of asymmetric min-max.' },
  clip: { description: 'Group scale/zero fit: minmax (the protocol) or mse (shrink the range to the lowest error, GPTQ quant.py mse=True; better at 2-3 bits).', enum: CLIP_MODES },
  percDamp: { description: 'GPTQ damping as a fraction of mean(diag H).', minimum: 0, maximum: 1 },
  blockSize: { description: 'GPTQ lazy-batch width in columns.', minimum: 1 },
  actOrder: { description: 'GPTQ act-order (permute columns by diag H). Off for LoPRo: the importance permutation orders columns.' },
  staticGroups: { description: 'GPTQ static groups (group parameters from the un-updated weight).' },
  rank: { description: 'Rank r of the R1SVD low-rank part (0 disables stage A).', minimum: 0 },
  powerIters: { description: 'Power iterations per R1SVD round.', minimum: 0, maximum: 50 },
  salientBlock: { description: 'b_I: width of the unrotated salient column block.', minimum: 0 },
  hadamardBlock: { description: 'b_H: Walsh-Hadamard block width (a power of two).', minimum: 1 },
  rotation: { description: 'Stage B rotation: partial (salient block left alone), none, or full (every block rotated).', enum: ['partial', 'none', 'full'] },
  beta: { description: 'AWQ-style activation exponent for the column scale alpha.', minimum: 0, maximum: 1 },
  vqDim: { description: 'GPTVQ vector dimension (lopro_v).', enum: [1, 2, 4] },
  vqBits: { description: 'GPTVQ bits per dimension; 0 = use bits.', minimum: 0 },
  calibText: { description: 'Calibration text file (UTF-8). Empty = data-free (H = I).' },
  calibSamples: { description: 'Number of calibration windows (the protocol uses 128).', minimum: 1 },
  ctx: { description: "Calibration window length in tokens; 0 = the model's protocol context.", minimum: 0 },
  ep: { description: 'ONNX Runtime execution provider.', enum: EXECUTION_PROVIDERS },
  seed: { description: 'Seed of every random choice (R1SVD start vectors, k-means init).' },
  memoryBudgetMB: { description: 'Spill calibration activations to disk above this many MiB.', minimum: 1 },
  layerOverrides: { description: 'Per-layer overrides: layer name or glob (with *) -> partial layer config, e.g. {"*.down_proj": {"bits": 4}}.' },
};

/** JSON-schema type of a default value (integers get 'integer' so the Settings UI rejects 2.5 bits). */
const jsonType = (v: unknown): string => (typeof v === 'number' ? (Number.isInteger(v) ? 'integer' : 'number') : typeof v);

export interface SettingSchema {
  type: string;
  default: unknown;
  description: string;
  enum?: readonly unknown[];
  minimum?: number;
  maximum?: number;
  order: number;
}

/** The `contributes.configuration` object: quantize settings mirrored from DEFAULT_CONFIG plus the extension's own. */
export function configurationContribution(): { title: string; properties: Record<string, SettingSchema | Omit<SettingSchema, 'order'>> } {
  const properties: Record<string, SettingSchema | Omit<SettingSchema, 'order'>> = {};
  Object.keys(DEFAULT_CONFIG).forEach((k, order) => {
    const key = k as keyof QuantizeConfig;
    const def = DEFAULT_CONFIG[key];
    const meta = META[key];
    properties[`${QUANTIZE_SECTION}.${key}`] = {
      type: jsonType(def),
      default: typeof def === 'object' ? { ...def } : def,
      description: meta.description,
      ...(meta.enum ? { enum: meta.enum } : {}),
      ...(meta.minimum !== undefined ? { minimum: meta.minimum } : {}),
      ...(meta.maximum !== undefined ? { maximum: meta.maximum } : {}),
      order,
    };
  });
  properties['lopro.runsFolder'] = {
    type: 'string',
    default: '',
    description: 'Where runs are written. Empty = a lopro-runs folder in the workspace (or next to the model).',
  };
  properties['lopro.evalText'] = {
    type: 'string',
    default: '',
    description: 'Evaluation text: its perplexity is measured after each run, and each export is checked against it (export vs run perplexity). Empty = no evaluation after runs; exports are checked on the calibration text.',
  };
  return { title: 'LoPRo', properties };
}
