// The one typed options object. Engine, CLI, extension settings and the webview form all read
// these defaults; `Object.keys(DEFAULT_CONFIG)` is the only list of keys (settings mirror it).
// Spec references: ../shared/lopro-spec.md (§1 stages A–C, §3 storage).

export type Method = 'rtn' | 'gptq' | 'lopro' | 'lopro_v';
export type ExecutionProviderName = 'auto' | 'cuda' | 'webgpu' | 'cpu';
/** Stage B rotation: the paper's partial (salient block left alone), none, or every block rotated. */
export type RotationMode = 'partial' | 'none' | 'full';
/**
 * How a group's scale/zero are fitted: 'minmax' (the protocol's and the spec's min-max range) or
 * 'mse' (the original GPTQ quant.py `mse=True` search: shrink the range, keep the lowest Σ|err|^2.4).
 */
export type ClipMode = 'minmax' | 'mse';
export const CLIP_MODES: readonly ClipMode[] = ['minmax', 'mse'];

/** Options that may differ per layer (per-layer overrides replace these). */
export interface LayerConfig {
  method: Method;
  /** Bits per code of the residual quantizer (2, 3, 4 or 8). */
  bits: number;
  /** Group size along the input (column) dimension; -1 = one group per row. */
  groupSize: number;
  /** Symmetric scale (zero fixed at (maxq+1)/2) instead of asymmetric min–max. */
  sym: boolean;
  /** Group range fit (rtn, gptq and lopro's residual; lopro_v's codebooks have no range). */
  clip: ClipMode;
  /** GPTQ damping as a fraction of mean(diag H). */
  percDamp: number;
  /** GPTQ lazy-batch width (columns). */
  blockSize: number;
  /** GPTQ act-order (permute by diag H). Off for LoPRo: the importance permutation orders columns. */
  actOrder: boolean;
  /** GPTQ static groups (group params from the un-updated weight). */
  staticGroups: boolean;
  /** Rank r of the R1SVD low-rank part (0 disables stage A). */
  rank: number;
  /** Power iterations per R1SVD round. */
  powerIters: number;
  /** b_I: width of the unrotated salient block. */
  salientBlock: number;
  /** b_H: Walsh–Hadamard block width (a power of two). */
  hadamardBlock: number;
  rotation: RotationMode;
  /** AWQ-style activation exponent β for the column scale α. */
  beta: number;
  /** GPTVQ vector dimension (lopro_v). */
  vqDim: number;
  /** GPTVQ bits per dimension: codebook size = 2^(vqDim·bits). Uses `bits` when 0. */
  vqBits: number;
}

export interface QuantizeConfig extends LayerConfig {
  /** Calibration text file (UTF-8); empty = data-free (H = I). */
  calibText: string;
  /** Calibration windows (protocol: 128). */
  calibSamples: number;
  /** Window length in tokens; 0 = the model's protocol ctx (max_position_embeddings capped at 512). */
  ctx: number;
  ep: ExecutionProviderName;
  /** Seed of every random choice (R1SVD start vectors, k-means init). */
  seed: number;
  /** Spill calibration activations to disk above this many MiB. */
  memoryBudgetMB: number;
  /** Where the quantization math runs: cpu, gpu, or auto (the GPU when there is one). */
  backend: 'auto' | 'cpu' | 'gpu';
  /** Also compute each layer's RTN and GPTQ proxy losses on the same Hessian. */
  compare: boolean;
  /** CPU backend worker threads (0 = automatic). */
  threads: number;
  /** Layer name (or glob with *) → overrides. */
  layerOverrides: Record<string, Partial<LayerConfig>>;
}

export const DEFAULT_LAYER_CONFIG: Readonly<LayerConfig> = Object.freeze({
  method: 'lopro',
  bits: 2,
  groupSize: 128,
  sym: false,
  clip: 'minmax',
  percDamp: 0.01,
  blockSize: 128,
  actOrder: false,
  staticGroups: false,
  rank: 16,
  powerIters: 2,
  salientBlock: 128,
  hadamardBlock: 128,
  rotation: 'partial',
  beta: 0.5,
  vqDim: 2,
  vqBits: 0,
});

export const DEFAULT_CONFIG: Readonly<QuantizeConfig> = Object.freeze({
  ...DEFAULT_LAYER_CONFIG,
  calibText: '',
  calibSamples: 128,
  ctx: 0,
  ep: 'auto',
  seed: 0,
  memoryBudgetMB: 4096,
  backend: 'auto',
  compare: false,
  threads: 0,
  layerOverrides: {},
});

export const METHODS: readonly Method[] = ['rtn', 'gptq', 'lopro', 'lopro_v'];
export const EXECUTION_PROVIDERS: readonly ExecutionProviderName[] = ['auto', 'cuda', 'webgpu', 'cpu'];

export interface ConfigIssue {
  /** The offending key. */
  field: keyof QuantizeConfig | string;
  message: string;
}

const isPow2 = (n: number) => Number.isInteger(n) && n > 0 && (n & (n - 1)) === 0;

/**
 * Checks one layer config (shape-independent rules). Messages name both values of a conflict.
 * Shape-dependent rules (group vs width, b_I + b_H vs width) are in `validateForShape`.
 */
export function validateLayerConfig(c: LayerConfig, prefix = ''): ConfigIssue[] {
  const out: ConfigIssue[] = [];
  const f = (field: string, message: string) => out.push({ field: prefix + field, message });
  if (!METHODS.includes(c.method)) f('method', `unknown method "${c.method}" (expected one of ${METHODS.join(', ')})`);
  if (![2, 3, 4, 8].includes(c.bits)) f('bits', `bits must be 2, 3, 4 or 8, got ${c.bits}`);
  if (!(c.groupSize === -1 || (Number.isInteger(c.groupSize) && c.groupSize > 0)))
    f('groupSize', `groupSize must be -1 or a positive integer, got ${c.groupSize}`);
  if (!(c.percDamp > 0 && c.percDamp < 1)) f('percDamp', `percDamp must be in (0, 1), got ${c.percDamp}`);
  if (!(Number.isInteger(c.blockSize) && c.blockSize > 0)) f('blockSize', `blockSize must be a positive integer, got ${c.blockSize}`);
  if (!(Number.isInteger(c.rank) && c.rank >= 0)) f('rank', `rank must be a non-negative integer, got ${c.rank}`);
  if (!(Number.isInteger(c.powerIters) && c.powerIters >= 0 && c.powerIters <= 50))
    f('powerIters', `powerIters must be an integer in [0, 50], got ${c.powerIters}`);
  if (!(Number.isInteger(c.salientBlock) && c.salientBlock >= 0)) f('salientBlock', `salientBlock (b_I) must be ≥ 0, got ${c.salientBlock}`);
  if (!isPow2(c.hadamardBlock)) f('hadamardBlock', `hadamardBlock (b_H) must be a power of two, got ${c.hadamardBlock}`);
  if (!CLIP_MODES.includes(c.clip)) f('clip', `clip must be ${CLIP_MODES.join(' or ')}, got "${c.clip}"`);
  if (!['partial', 'none', 'full'].includes(c.rotation)) f('rotation', `rotation must be partial, none or full, got "${c.rotation}"`);
  if (!(c.beta >= 0 && c.beta <= 1)) f('beta', `beta must be in [0, 1], got ${c.beta}`);
  if (c.method === 'lopro_v') {
    if (![1, 2, 4].includes(c.vqDim)) f('vqDim', `vqDim must be 1, 2 or 4, got ${c.vqDim}`);
    const vb = c.vqBits || c.bits;
    if (c.vqDim * vb > 12) f('vqBits', `codebook of 2^(vqDim·bits) = 2^${c.vqDim * vb} entries is too large (max 2^12)`);
  }
  return out;
}

export function validateConfig(c: QuantizeConfig): ConfigIssue[] {
  const out = validateLayerConfig(c);
  if (!(Number.isInteger(c.calibSamples) && c.calibSamples > 0)) out.push({ field: 'calibSamples', message: `calibSamples must be a positive integer, got ${c.calibSamples}` });
  if (!(Number.isInteger(c.ctx) && c.ctx >= 0)) out.push({ field: 'ctx', message: `ctx must be 0 (model default) or a positive integer, got ${c.ctx}` });
  if (!EXECUTION_PROVIDERS.includes(c.ep)) out.push({ field: 'ep', message: `ep must be one of ${EXECUTION_PROVIDERS.join(', ')}, got "${c.ep}"` });
  if (!(c.memoryBudgetMB > 0)) out.push({ field: 'memoryBudgetMB', message: `memoryBudgetMB must be positive, got ${c.memoryBudgetMB}` });
  for (const [name, o] of Object.entries(c.layerOverrides ?? {})) {
    out.push(...validateLayerConfig({ ...pickLayerConfig(c), ...o }, `layerOverrides["${name}"].`));
  }
  return out;
}

export function pickLayerConfig(c: QuantizeConfig | LayerConfig): LayerConfig {
  const out = {} as Record<string, unknown>;
  for (const k of Object.keys(DEFAULT_LAYER_CONFIG)) out[k] = (c as unknown as Record<string, unknown>)[k];
  return out as unknown as LayerConfig;
}

/** Glob match for layer override keys: `*` matches any run of characters. */
export function matchesLayerPattern(pattern: string, name: string): boolean {
  const re = new RegExp('^' + pattern.split('*').map((s) => s.replace(/[.+?^${}()|[\]\\]/g, '\\$&')).join('.*') + '$');
  return re.test(name);
}

/** The effective config of one layer: defaults ← run config ← matching overrides (in key order). */
export function layerConfigFor(c: QuantizeConfig, layerName: string): LayerConfig {
  let lc = pickLayerConfig(c);
  for (const [pattern, o] of Object.entries(c.layerOverrides ?? {})) if (matchesLayerPattern(pattern, layerName)) lc = { ...lc, ...o };
  return lc;
}

/** Fills missing keys from the defaults and drops unknown ones (with a list of what was dropped). */
export function normalizeConfig(partial: Partial<QuantizeConfig> & Record<string, unknown>): { config: QuantizeConfig; unknownKeys: string[] } {
  const config = { ...DEFAULT_CONFIG, layerOverrides: {} } as QuantizeConfig;
  const unknownKeys: string[] = [];
  for (const [k, v] of Object.entries(partial)) {
    if (k in DEFAULT_CONFIG) (config as unknown as Record<string, unknown>)[k] = v;
    else unknownKeys.push(k);
  }
  return { config, unknownKeys };
}

/**
 * Effective bits per weight of one m×n layer (spec §3, Eq. 13, zeros included when asymmetric),
 * counted exactly from what the native format stores (docs/lopro-format.md), G = ⌈n/g⌉ groups:
 *   bpw = b + 16·G/n [+ b·G/n] + r·8/n + r·8/m + 2·16/m + r·16/(mn)   (lopro; baselines omit the LoPRo terms)
 * U is m×r and V is r×n in FP8 (r·8·(m+n) bits); α and perm are n-vectors of 16 bits each, i.e.
 * 2·16·n/(mn) = 2·16/m per weight. (The spec prints 2·16/n for them: the same for square layers,
 * but an n-vector costs 16/m per weight of an m×n matrix.) With n a multiple of g, 16·G/n = 16/g.
 * For lopro_v the codes cost `bits` per weight too (vqDim·bits per vector) plus one FP16 codebook
 * of 2^(vqDim·bits) entries × vqDim per group of g columns × all rows. The 32-bit row padding of
 * packed codes and the few fixed-size header tensors are not counted.
 */
export function bitsPerWeight(c: LayerConfig, rows: number, cols: number): number {
  const m = rows, n = cols;
  const g = c.groupSize === -1 ? n : Math.min(c.groupSize, n);
  const G = Math.ceil(n / g);
  let bpw = c.bits;
  if (c.method === 'lopro_v') {
    const vb = c.vqBits || c.bits;
    const entries = 2 ** (c.vqDim * vb);
    bpw = vb + (G * entries * c.vqDim * 16) / (m * n);
  } else {
    bpw += (16 * G) / n;
    if (!c.sym) bpw += (c.bits * G) / n;
  }
  if (c.method === 'lopro' || c.method === 'lopro_v') {
    const r = c.rank;
    bpw += (r * 8) / n + (r * 8) / m + (2 * 16) / m + (r * 16) / (m * n);
  }
  return bpw;
}
