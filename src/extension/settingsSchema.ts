// `contributes.configuration` is generated from DEFAULT_CONFIG: one setting `lopro.quantize.<key>`
// per key, with the same default, and its description, allowed values and bounds from config.ts.
// `node --import tsx scripts/e2e/gen-contributes.ts` writes it into package.json;
// test/unit/extension/settings.test.ts checks both directions stay in sync.
// Pure module (no vscode import) so unit tests and the generator can load it.

import { CHOICES, CONFIG_DOCS, DEFAULT_CONFIG, RANGES, rangeBounds, type NumRange, type QuantizeConfig } from '../protocol/config';

export const QUANTIZE_SECTION = 'lopro.quantize';

/**
 * The JSON-schema bounds of a range (what the Settings UI can express; integer-ness is the type,
 * powers of two and the range itself are validateConfig's, shown when a run is started).
 */
export function schemaBounds(r: NumRange): Pick<SettingSchema, 'minimum' | 'maximum' | 'exclusiveMinimum' | 'exclusiveMaximum'> {
  const b = rangeBounds(r);
  return {
    ...(b.loOpen ? { exclusiveMinimum: b.lo } : { minimum: b.lo }),
    ...(b.hi === undefined ? {} : b.hiOpen ? { exclusiveMaximum: b.hi } : { maximum: b.hi }),
  };
}

/**
 * JSON-schema type of a key: 'integer' where its range says so (the Settings UI then rejects 2.5
 * threads), else by its default's value.
 */
const jsonType = (v: unknown, range: NumRange | undefined): string => (typeof v !== 'number' ? typeof v : (range ? range.integer : Number.isInteger(v)) ? 'integer' : 'number');

export interface SettingSchema {
  type: string;
  default: unknown;
  description: string;
  enum?: readonly unknown[];
  minimum?: number;
  maximum?: number;
  exclusiveMinimum?: number;
  exclusiveMaximum?: number;
  order: number;
}

/** The `contributes.configuration` object: quantize settings mirrored from DEFAULT_CONFIG plus the extension's own. */
export function configurationContribution(): { title: string; properties: Record<string, SettingSchema | Omit<SettingSchema, 'order'>> } {
  const properties: Record<string, SettingSchema | Omit<SettingSchema, 'order'>> = {};
  Object.keys(DEFAULT_CONFIG).forEach((k, order) => {
    const key = k as keyof QuantizeConfig;
    const def = DEFAULT_CONFIG[key];
    const choices = (CHOICES as Record<string, readonly unknown[]>)[key];
    const range = (RANGES as Record<string, NumRange>)[key];
    properties[`${QUANTIZE_SECTION}.${key}`] = {
      type: jsonType(def, range),
      default: typeof def === 'object' ? { ...def } : def,
      description: CONFIG_DOCS[key],
      ...(choices ? { enum: [...choices] } : {}),
      ...(range ? schemaBounds(range) : {}),
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
    description:
      'Evaluation text: its perplexity is measured after each run, and each export is checked against it (export vs run perplexity). Empty = no evaluation after runs; exports are checked on the calibration text.',
  };
  return { title: 'LoPRo', properties };
}
