// The config panel's fields: which control edits which QuantizeConfig key, with its choices and
// number bounds taken from config.ts (CHOICES, RANGES), and the conversion between a config and
// the controls' values. No DOM here, so that a unit test can round-trip a config through the form.

import { CHOICES, RANGES, rangeBounds, type NumRange, type QuantizeConfig } from '../src/protocol/config';

export type Control = 'number' | 'text' | 'select' | 'radio' | 'toggle';
/** Keys the panel edits (the rest of the config passes through unchanged). */
export type FormKey =
  | 'targetBpw'
  | 'method'
  | 'bits'
  | 'clip'
  | 'groupSize'
  | 'rank'
  | 'salientBlock'
  | 'hadamardBlock'
  | 'powerIters'
  | 'calibText'
  | 'calibSamples'
  | 'ctx'
  | 'expertCalibration'
  | 'expertMinTokens'
  | 'ep'
  | 'backend'
  | 'threads'
  | 'compare'
  | 'keepHessians';

export interface FormField {
  key: FormKey;
  label: string;
  help: string;
  control: Control;
  /** Column of the panel. */
  section: 'method' | 'calibration' | 'compute';
  /** select / radio: the allowed values (config.ts CHOICES). */
  options?: readonly (string | number)[];
  /** number: its range (config.ts RANGES), for the field's min / max / step. */
  range?: NumRange;
  /** Shown only for a mixture-of-experts model. */
  moe?: boolean;
}

const choices = (k: keyof typeof CHOICES) => CHOICES[k] as readonly (string | number)[];
const range = (k: keyof typeof RANGES): NumRange => RANGES[k];

export const FORM_FIELDS: readonly FormField[] = [
  {
    key: 'targetBpw',
    label: 'Target bits per weight',
    control: 'number',
    section: 'method',
    range: range('targetBpw'),
    help: 'The size to reach, e.g. 2.25: each layer gets the bits, rank and method (GPTQ or the one below) of the plan with the least measured error within it. 0 = every layer at the bits and rank below.',
  },
  { key: 'method', label: 'Method', control: 'select', section: 'method', options: choices('method'), help: 'lopro = low rank + permuted partial Hadamard + GPTQ.' },
  { key: 'bits', label: 'Bits', control: 'radio', section: 'method', options: choices('bits'), help: 'Bits per code of the residual quantizer.' },
  {
    key: 'clip',
    label: 'Group range',
    control: 'select',
    section: 'method',
    options: choices('clip'),
    help: 'minmax = the protocol; mse = shrink each group range to the lowest error (better at 2–3 bits).',
  },
  { key: 'groupSize', label: 'Group size', control: 'number', section: 'method', range: range('groupSize'), help: 'Columns per scale/zero group; -1 = one group per row.' },
  { key: 'rank', label: 'Rank r', control: 'number', section: 'method', range: range('rank'), help: 'Low-rank part (stage A); 0 disables it, -1 = chosen per layer.' },
  { key: 'salientBlock', label: 'b_I (salient block)', control: 'number', section: 'method', range: range('salientBlock'), help: 'Most important columns, left unrotated.' },
  { key: 'hadamardBlock', label: 'b_H (Hadamard block)', control: 'number', section: 'method', range: range('hadamardBlock'), help: 'Walsh–Hadamard block width, a power of two.' },
  { key: 'powerIters', label: 'Power iterations', control: 'number', section: 'method', range: range('powerIters'), help: 'Per R1SVD round.' },
  { key: 'calibText', label: 'Calibration text', control: 'text', section: 'calibration', help: 'UTF-8 text file; empty = data-free (H = I).' },
  { key: 'calibSamples', label: 'Calibration samples', control: 'number', section: 'calibration', range: range('calibSamples'), help: 'Windows of ctx tokens (protocol: 128).' },
  { key: 'ctx', label: 'Context (tokens)', control: 'number', section: 'calibration', range: range('ctx'), help: "0 = the model's protocol context." },
  {
    key: 'expertCalibration',
    label: 'Expert calibration',
    control: 'select',
    section: 'calibration',
    options: choices('expertCalibration'),
    moe: true,
    help: "routed = each expert's Hessian from the tokens its router sends it; all = from every token (llm-compressor's calibrate_all_experts).",
  },
  {
    key: 'expertMinTokens',
    label: 'Fewest routed tokens per expert',
    control: 'number',
    section: 'calibration',
    range: range('expertMinTokens'),
    moe: true,
    help: 'An expert routed fewer calibration tokens than this is calibrated on every token (the layer view says which).',
  },
  { key: 'ep', label: 'Execution provider', control: 'select', section: 'compute', options: choices('ep'), help: 'ONNX Runtime EP for the forward passes.' },
  {
    key: 'backend',
    label: 'Backend',
    control: 'select',
    section: 'compute',
    options: choices('backend'),
    help: 'Where the quantization math runs: gpu = WGSL kernels on a WebGPU device, cpu = worker threads, auto = gpu when there is one.',
  },
  { key: 'threads', label: 'CPU threads', control: 'number', section: 'compute', range: range('threads'), help: '0 = automatic: one per core with 4 cores or more.' },
  {
    key: 'compare',
    label: 'Compare with RTN and GPTQ per layer (slower)',
    control: 'toggle',
    section: 'compute',
    help: "Each layer's RTN and GPTQ proxy loss on the same Hessian, shown in the layer view.",
  },
  {
    key: 'keepHessians',
    label: 'Keep Hessians (re-quantize layers later)',
    control: 'toggle',
    section: 'compute',
    help: 'Lets the layer view re-quantize a layer in seconds; costs 1.4 GB of disk per 7B block (about 7 GB per Mixtral-8x7B block).',
  },
];

/** What the controls hold: text for number, text, select and radio fields; on/off for toggles. */
export type FormValues = { [K in FormKey]: K extends 'compare' ? boolean : string };

export function formValues(c: QuantizeConfig): FormValues {
  const out = {} as Record<FormKey, string | boolean>;
  for (const f of FORM_FIELDS) {
    const v = c[f.key];
    out[f.key] = f.control === 'toggle' ? v === true : String(v);
  }
  return out as FormValues;
}

/**
 * The config the form describes: `base` with every form key replaced. An empty number field reads
 * as NaN, so that validateConfig explains it instead of a default silently taking its place.
 */
export function configFromForm(v: FormValues, base: QuantizeConfig): QuantizeConfig {
  const out = { ...base } as unknown as Record<string, unknown>;
  for (const f of FORM_FIELDS) {
    const raw = v[f.key];
    if (f.control === 'toggle') out[f.key] = raw === true;
    else if (f.control === 'number') out[f.key] = String(raw).trim() === '' ? NaN : Number(raw);
    else if (f.control === 'radio') out[f.key] = typeof f.options?.[0] === 'number' ? Number(raw) : raw;
    else out[f.key] = raw;
  }
  return out as unknown as QuantizeConfig;
}

/** HTML min / max / step of a number field, from its range (groupSize's −1 included). */
export function numberAttrs(r: NumRange | undefined): { min?: number; max?: number; step?: number } {
  if (!r) return {};
  const b = rangeBounds(r);
  return { min: b.lo, ...(b.hi !== undefined ? { max: b.hi } : {}), ...(r.integer ? { step: 1 } : {}) };
}
