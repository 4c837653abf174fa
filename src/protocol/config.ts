// The one typed options object and the one set of rules over it. Engine, CLI, extension settings
// and the webview form all read these defaults, allowed values and ranges; `Object.keys(DEFAULT_CONFIG)`
// is the only list of keys (settings and CLI flags mirror it), and validateConfig is the only
// validator (the webview shows its issues, the host checks a Start with it, the engine refuses a run
// with it).
// Spec references: ../shared/lopro-spec.md (§1 stages A–C, §3 storage).

export type Method = 'rtn' | 'gptq' | 'lopro' | 'lopro_v';
export type ExecutionProviderName = 'auto' | 'cuda' | 'webgpu' | 'cpu';
/** Where the quantization math runs: TypeScript on worker threads, WGSL on a WebGPU (Dawn) device, or GPU when an adapter exists. */
export type Backend = 'auto' | 'cpu' | 'gpu';
/** Stage B rotation: the paper's partial (salient block left alone), none, or every block rotated. */
export type RotationMode = 'partial' | 'none' | 'full';
/**
 * How a group's scale/zero are fitted: 'minmax' (the protocol's and the spec's min-max range) or
 * 'mse' (the original GPTQ quant.py `mse=True` search: shrink the range, keep the lowest Σ|err|^2.4).
 */
export type ClipMode = 'minmax' | 'mse';
/**
 * How α's exponentiated activation magnitudes are normalised: 'geomean' (floor at 1e-6 of the largest, divided by
 * their geometric mean) or 'clampRange' (clamped below at 1e-4, divided by √(max·min): the authors' code).
 */
export type AlphaNorm = 'geomean' | 'clampRange';
/**
 * Stage B's column score: 'hessian' = H_jj / mean|R_j| (spec §1.6), 'logHessian' = (log2 H_jj − min log2 H + 1) /
 * mean|R_j| (the authors' code: the Hessian's spread compressed to bits). Larger first; the first b_I stay unrotated.
 */
export type ColumnScore = 'hessian' | 'logHessian';
/** Named sets of layer settings a run can start from (explicit settings win): `authors` = the LoPRo authors' code. */
export type PresetName = 'none' | 'authors';
/** Which tokens an expert's Hessian comes from: those the router sends it (as the model runs), or every token. */
export type ExpertCalibration = 'routed' | 'all';

// ── Allowed values ─────────────────────────────────────────────────────────────────────────────
export const METHODS: readonly Method[] = ['rtn', 'gptq', 'lopro', 'lopro_v'];
export const EXECUTION_PROVIDERS: readonly ExecutionProviderName[] = ['auto', 'cuda', 'webgpu', 'cpu'];
export const BACKENDS: readonly Backend[] = ['auto', 'cpu', 'gpu'];
export const CLIP_MODES: readonly ClipMode[] = ['minmax', 'mse'];
export const ROTATION_MODES: readonly RotationMode[] = ['partial', 'none', 'full'];
export const EXPERT_CALIBRATIONS: readonly ExpertCalibration[] = ['routed', 'all'];
export const ALPHA_NORMS: readonly AlphaNorm[] = ['geomean', 'clampRange'];
export const COLUMN_SCORES: readonly ColumnScore[] = ['hessian', 'logHessian'];
/** Largest rank the automatic rank choice (rank −1) considers. */
export const AUTO_RANK_MAX = 32;
/** Code widths of the scalar quantizers (codes are stored packed, one code ≤ 8 bits in a Uint8Array). */
export const BITS = [2, 3, 4, 8] as const;
/** GPTVQ vector dimensions (lopro_v). */
export const VQ_DIMS = [1, 2, 4] as const;
/**
 * Largest lopro_v codebook: 2^(vqDim·bits) entries ≤ 2^12. Its FP16 codebook per group costs
 * 2^(d·b)·d·16 bits (bitsPerWeight), already more than the codes themselves at 2^12 for g = 128.
 */
export const MAX_CODEBOOK_LOG2 = 12;
/** Most CPU-backend worker threads one run may ask for. */
export const MAX_THREADS = 256;

/** A numeric setting's range: [min, max] unless an end is open, optionally integer-only. */
export interface NumRange {
  min: number;
  max?: number;
  /** min itself is excluded. */
  openMin?: boolean;
  /** max itself is excluded. */
  openMax?: boolean;
  integer?: boolean;
  /** One value outside the range that is also allowed, with its meaning (groupSize −1). */
  or?: number;
  /** Only powers of two (b_H). */
  powerOfTwo?: boolean;
}

/** Allowed values of every enumerated key. */
export const CHOICES = {
  method: METHODS,
  bits: BITS,
  clip: CLIP_MODES,
  rotation: ROTATION_MODES,
  alphaNorm: ALPHA_NORMS,
  columnScore: COLUMN_SCORES,
  vqDim: VQ_DIMS,
  ep: EXECUTION_PROVIDERS,
  backend: BACKENDS,
  expertCalibration: EXPERT_CALIBRATIONS,
} as const satisfies { [K in keyof QuantizeConfig]?: readonly (string | number)[] };

/** Range of every numeric key that is not enumerated. */
export const RANGES = {
  groupSize: { min: 1, integer: true, or: -1 },
  percDamp: { min: 0, max: 1, openMin: true, openMax: true },
  blockSize: { min: 1, integer: true },
  rank: { min: 0, integer: true, or: -1 },
  powerIters: { min: 0, max: 50, integer: true },
  salientBlock: { min: 0, integer: true },
  // ≤ 4096: the GPU backend rotates one block in 16 KiB of workgroup memory, WebGPU's guaranteed minimum.
  hadamardBlock: { min: 1, max: 4096, integer: true, powerOfTwo: true },
  beta: { min: 0, max: 4 },
  refineRounds: { min: 0, max: 50, integer: true },
  vqBits: { min: 0, max: MAX_CODEBOOK_LOG2, integer: true },
  calibSamples: { min: 1, integer: true },
  targetBpw: { min: 0, max: 16 },
  expertMinTokens: { min: 0, integer: true },
  ctx: { min: 0, integer: true },
  memoryBudgetMB: { min: 0 },
  threads: { min: 0, max: MAX_THREADS, integer: true },
  /** Any integer a double holds exactly (the random streams use its low 32 bits). */
  seed: { min: Number.MIN_SAFE_INTEGER, max: Number.MAX_SAFE_INTEGER, integer: true },
} as const satisfies { [K in keyof QuantizeConfig]?: NumRange };

// ── The options ────────────────────────────────────────────────────────────────────────────────
/** Options that may differ per layer (per-layer overrides replace these). */
export interface LayerConfig {
  method: Method;
  /** Bits per code of the residual quantizer (one of BITS). */
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
  /** Rank r of the R1SVD low-rank part (0 disables stage A; −1 = chosen per layer, quant/auto_rank.ts). */
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
  alphaNorm: AlphaNorm;
  columnScore: ColumnScore;
  /**
   * Alternating refinement rounds after the first pass (0 = off): the low rank of W − Q(R) replaces the factors, R is
   * re-quantized, and the round with the least layer-output error tr(ΔW·H·ΔWᵀ) is kept.
   */
  refineRounds: number;
  /** GPTVQ vector dimension (lopro_v, one of VQ_DIMS). */
  vqDim: number;
  /** GPTVQ bits per dimension: codebook size = 2^(vqDim·bits). Uses `bits` when 0. */
  vqBits: number;
}

export interface QuantizeConfig extends LayerConfig {
  /**
   * Average bits per weight of the quantized linears (0 = off: every layer takes its configured bits and rank).
   * On: a measurement pass scores each layer's candidates (bits, rank, gptq or the method) and the plan with the
   * least total error within the target replaces each layer's method, bits and rank.
   */
  targetBpw: number;
  /** Calibration text file (UTF-8); empty = data-free (H = I). */
  calibText: string;
  /** Calibration windows (protocol: 128). */
  calibSamples: number;
  /** Window length in tokens; 0 = the model's protocol ctx (max_position_embeddings capped at 512). */
  ctx: number;
  /** Mixture-of-experts: each expert's Hessian from the tokens routed to it, or from every token. */
  expertCalibration: ExpertCalibration;
  /** An expert routed fewer calibration tokens than this is calibrated on every token (routed mode). */
  expertMinTokens: number;
  ep: ExecutionProviderName;
  /** Where the quantization math runs (the forward passes run on `ep`). Does not change the output's meaning. */
  backend: Backend;
  /** Also compute each layer's RTN and GPTQ proxy loss on the same Hessian (costs time; reports only). */
  compare: boolean;
  /** Keep each block's Hessians (float32) in the run folder, for re-quantizing a layer from the layer view. */
  keepHessians: boolean;
  /** Worker threads of the CPU backend; 0 = one per core on machines with ≥ 4 cores, else the engine's own thread. */
  threads: number;
  /** Seed of every random choice (R1SVD start vectors, k-means init). */
  seed: number;
  /** Host memory a calibrated run plans for, MiB (protocol/memory_plan.ts): activations spill and statistics passes shrink to fit; 0 = automatic (machine_memory.ts). */
  memoryBudgetMB: number;
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
  alphaNorm: 'geomean',
  columnScore: 'hessian',
  refineRounds: 0,
  vqDim: 2,
  vqBits: 0,
});

export const DEFAULT_CONFIG: Readonly<QuantizeConfig> = Object.freeze({
  ...DEFAULT_LAYER_CONFIG,
  targetBpw: 0,
  calibText: '',
  calibSamples: 128,
  ctx: 0,
  expertCalibration: 'routed',
  expertMinTokens: 128,
  ep: 'auto',
  backend: 'auto',
  compare: false,
  keepHessians: true,
  threads: 0,
  seed: 0,
  memoryBudgetMB: 0,
  layerOverrides: {},
});

/**
 * The LoPRo authors' code defaults (facts from their public repository): α = mean|x|^2.4 clamped at 1e-4 and
 * normalised by √(max·min); the log-Hessian column score; b_I = b_H = 256; R1SVD with 8 power iterations and the
 * rank chosen per layer; at 2 bits the alternating refinement, 20 rounds. Their activation-aware clipping search
 * is taken as the closest fit we have (clip mse); their FP8 E5M2 factors as our E4M3 (see bench/RESULTS.md).
 */
export const PRESETS: { readonly [P in Exclude<PresetName, 'none'>]: Readonly<Partial<LayerConfig>> } = Object.freeze({
  authors: Object.freeze({
    beta: 2.4,
    alphaNorm: 'clampRange',
    columnScore: 'logHessian',
    salientBlock: 256,
    hadamardBlock: 256,
    powerIters: 8,
    rank: -1,
    clip: 'mse',
    refineRounds: 20,
  } satisfies Partial<LayerConfig>),
});
export const PRESET_NAMES: readonly PresetName[] = ['none', 'authors'];

/**
 * A whole config with a preset's keys set (the config panel's "Start from"): `authors` its values, `none` the
 * defaults of the keys a preset sets; the refinement as withPreset decides it for the config's bits.
 */
export function applyPreset(c: QuantizeConfig, name: PresetName): QuantizeConfig {
  const keys = Object.keys(PRESETS.authors) as (keyof LayerConfig)[];
  const set = name === 'none' ? Object.fromEntries(keys.map((k) => [k, DEFAULT_LAYER_CONFIG[k]])) : PRESETS[name];
  const out = { ...c, ...set } as QuantizeConfig;
  if (name !== 'none' && out.bits !== 2) out.refineRounds = 0;
  return out;
}

/**
 * `partial` over a preset's settings: what `partial` sets wins. The refinement is the authors' at 2 bits only, so
 * a preset run at other bits has none unless `partial` asks for it.
 */
export function withPreset(name: PresetName, partial: Partial<QuantizeConfig>): Partial<QuantizeConfig> {
  if (name === 'none') return partial;
  const out: Partial<QuantizeConfig> = { ...PRESETS[name] };
  for (const [k, v] of Object.entries(partial)) if (v !== undefined) (out as Record<string, unknown>)[k] = v;
  if (partial.refineRounds === undefined && (out.bits ?? DEFAULT_LAYER_CONFIG.bits) !== 2) out.refineRounds = 0;
  return out;
}

/** One line per key: the Settings UI's description and the CLI's `--help`. */
export const CONFIG_DOCS: { readonly [K in keyof QuantizeConfig]: string } = {
  method: 'Quantization method: rtn (round to nearest), gptq, lopro (low-rank + permuted partial Hadamard + GPTQ), lopro_v (LoPRo with GPTVQ).',
  bits: 'Bits per code of the residual quantizer.',
  groupSize: 'Group size along the input (column) dimension; -1 = one group per row.',
  sym: 'Symmetric scale (zero fixed at (maxq+1)/2) instead of asymmetric min-max.',
  clip: 'Group scale/zero fit: minmax (the protocol) or mse (shrink the range to the lowest error, GPTQ quant.py mse=True; better at 2-3 bits).',
  percDamp: 'GPTQ damping as a fraction of mean(diag H).',
  blockSize: 'GPTQ lazy-batch width in columns.',
  actOrder: 'GPTQ act-order (permute columns by diag H). Off for LoPRo: the importance permutation orders columns.',
  staticGroups: 'GPTQ static groups (group parameters from the un-updated weight).',
  rank: `Rank r of the R1SVD low-rank part (0 disables stage A; -1 = chosen per layer: rank-1 terms are kept while the bits their shrinking of max|W| saves exceed their storage, at most ${AUTO_RANK_MAX}).`,
  powerIters: 'Power iterations per R1SVD round.',
  salientBlock: 'b_I: width of the unrotated salient column block.',
  hadamardBlock: 'b_H: Walsh-Hadamard block width (a power of two, at most 4096).',
  rotation: 'Stage B rotation: partial (salient block left alone), none, or full (every block rotated).',
  beta: 'AWQ-style activation exponent for the column scale alpha.',
  alphaNorm:
    "Normalisation of alpha: geomean (floor at 1e-6 of the largest, divided by the geometric mean) or clampRange (clamped at 1e-4, divided by sqrt(max*min), as the authors' code).",
  columnScore:
    "Stage B column score, larger first (the first b_I columns stay unrotated): hessian = H_jj / mean|R_j|, logHessian = (log2 H_jj - min log2 H + 1) / mean|R_j| (the authors' code).",
  refineRounds:
    'Alternating refinement (0 = off): up to this many rounds of low rank of W - Q(R), re-clip and re-quantize, keeping the round with the least layer-output error; stops after 2 rounds without improvement.',
  vqDim: 'GPTVQ vector dimension (lopro_v).',
  vqBits: `GPTVQ bits per dimension; 0 = use bits. The codebook has 2^(vqDim·bits) entries, at most 2^${MAX_CODEBOOK_LOG2}.`,
  targetBpw:
    "Target average bits per weight of the quantized linears, e.g. 2.25 (0 = off: every layer uses bits and rank as set). A measurement pass scores each layer at 2/3/4 bits and several ranks (and plain GPTQ), then the plan with the least total error within the target sets each layer's method, bits and rank; the real bits per weight never exceed it.",
  calibText: 'Calibration text file (UTF-8). Empty = data-free (H = I).',
  calibSamples: 'Number of calibration windows (the protocol uses 128).',
  ctx: "Calibration window length in tokens; 0 = the model's protocol context.",
  expertCalibration:
    "Mixture-of-experts models: each expert's Hessian from the calibration tokens the router sends it (routed, as the model runs) or from every token (all, as llm-compressor's calibrate_all_experts).",
  expertMinTokens:
    'Mixture-of-experts models, routed calibration: an expert routed fewer calibration tokens than this is calibrated on every token instead (the report says which).',
  ep: 'ONNX Runtime execution provider of the forward passes.',
  backend:
    'Where the quantization math runs: cpu (TypeScript on worker threads), gpu (WGSL kernels on a WebGPU/Dawn device), auto (gpu when an adapter exists, else cpu). Does not change what the output means.',
  compare: "Also compute each layer's RTN and GPTQ proxy loss on the same Hessian, next to its own in the reports and the layer view (slower).",
  keepHessians:
    "Keep each block's Hessians (float32) in the run folder so that the layer view can re-quantize a layer in seconds: 1.4 GB per LLaMA-7B block, about 7 GB per Mixtral-8x7B block, written to disk pass by pass. Off: less disk, no re-quantize.",
  threads: "Worker threads of the CPU backend; 0 = automatic: one per core on machines with 4 or more cores, else only the engine's own thread.",
  seed: 'Seed of every random choice (R1SVD start vectors, k-means init).',
  memoryBudgetMB:
    "Host memory a calibrated run plans for, in MiB; 0 = automatic: 75 % of the machine's memory or of its cgroup limit, whichever is smaller. The runtime, one block of weights, the largest layer and the widest Hessian come first (the log warns when the budget is below them); the calibration activations stay in memory if they fit beside that (else they are spilled to disk), and what is left sizes a statistics pass (mixture-of-experts blocks are measured in more passes below it).",
  layerOverrides: 'Per-layer overrides: layer name or glob (with *) -> partial layer config, e.g. {"*.down_proj": {"bits": 4}}.',
};

// ── Validation ─────────────────────────────────────────────────────────────────────────────────
export interface ConfigIssue {
  /** The offending key (`layerOverrides["pattern"].key` inside an override). */
  field: keyof QuantizeConfig | string;
  /** Self-contained: starts with the field's name, says what is allowed and what was given. */
  message: string;
}

const isPow2 = (n: number) => Number.isInteger(n) && n > 0 && (n & (n - 1)) === 0;
/** An own key: `in` would also take inherited names such as "constructor" for settings. */
const own = (o: object, k: string) => Object.hasOwn(o, k);
/** `a, b or c`. */
const orList = (xs: readonly unknown[]) => (xs.length < 2 ? xs.join('') : `${xs.slice(0, -1).join(', ')} or ${xs[xs.length - 1]}`);
const shown = (v: unknown) => (typeof v === 'string' ? `"${v}"` : typeof v === 'object' && v !== null ? JSON.stringify(v) : String(v));
/** The names the paper uses, next to ours in messages. */
const ALIAS: Record<string, string> = { salientBlock: 'salientBlock (b_I)', hadamardBlock: 'hadamardBlock (b_H)' };

/** The outermost allowed values of a range (its `or` value included) and whether each end is open. */
export function rangeBounds(r: NumRange): { lo: number; hi?: number; loOpen: boolean; hiOpen: boolean } {
  const lo = r.or !== undefined ? Math.min(r.or, r.min) : r.min;
  const hi = r.max === undefined ? undefined : r.or !== undefined ? Math.max(r.or, r.max) : r.max;
  return { lo, hi, loOpen: !!r.openMin && lo === r.min, hiOpen: !!r.openMax && hi === r.max };
}

export function inRange(v: number, r: NumRange): boolean {
  if (r.or !== undefined && v === r.or) return true;
  if (!Number.isFinite(v) || (r.integer && !Number.isInteger(v))) return false;
  if (r.openMin ? !(v > r.min) : !(v >= r.min)) return false;
  if (r.max !== undefined && (r.openMax ? !(v < r.max) : !(v <= r.max))) return false;
  return !r.powerOfTwo || isPow2(v);
}

/** What a range allows, in words: "an integer in [0, 50]", "in (0, 1)", "-1 or an integer ≥ 1", "a power of two". */
export function describeRange(r: NumRange): string {
  if (r.powerOfTwo) return r.max === undefined ? 'a power of two' : `a power of two ≤ ${r.max}`;
  const what = r.integer ? 'an integer ' : '';
  let body: string;
  if (r.max === undefined) body = `${what}${r.openMin ? '>' : '≥'} ${r.min}`;
  else body = `${r.integer ? what : ''}in ${r.openMin ? '(' : '['}${r.min}, ${r.max}${r.openMax ? ')' : ']'}`;
  return r.or !== undefined ? `${r.or} or ${body}` : body;
}

/** Type, allowed value or range of one key; undefined when fine. */
function keyIssue(key: string, v: unknown, label: string): string | undefined {
  const def = (DEFAULT_CONFIG as unknown as Record<string, unknown>)[key];
  const type = typeof def;
  if (typeof v !== type || v === null || Array.isArray(v) || (type === 'number' && !Number.isFinite(v as number)))
    return `${label} must be ${type === 'object' ? 'an object' : `a ${type === 'number' ? 'finite number' : type}`}, got ${shown(v)}`;
  const choices = (CHOICES as Record<string, readonly unknown[]>)[key];
  if (choices && !choices.includes(v)) return `${label} must be ${orList(choices)}, got ${shown(v)}`;
  const range = (RANGES as Record<string, NumRange>)[key];
  if (range && !inRange(v as number, range)) return `${label} must be ${describeRange(range)}, got ${shown(v)}`;
  return undefined;
}

/**
 * Checks one layer config: every key's type and allowed values, unknown keys, and the one conflict
 * between keys (lopro_v's codebook size). Messages name the field and both values of a conflict.
 * Rules that depend on a layer's shape (group or b_I + b_H vs the width, vqDim dividing the group)
 * are the engine's, per layer (linalg/fwht.ts, quant/gptvq.ts gptvqShape).
 */
export function validateLayerConfig(c: LayerConfig, prefix = ''): ConfigIssue[] {
  const out: ConfigIssue[] = [];
  const bad = new Set<string>();
  for (const key of Object.keys(c)) {
    if (!own(DEFAULT_LAYER_CONFIG, key)) {
      const inRun = own(DEFAULT_CONFIG, key);
      out.push({ field: prefix + key, message: `${prefix + key}: ${inRun ? 'a run-wide setting, it cannot differ per layer' : 'unknown setting'}` });
    }
  }
  for (const key of Object.keys(DEFAULT_LAYER_CONFIG)) {
    const m = keyIssue(key, (c as unknown as Record<string, unknown>)[key], prefix + (ALIAS[key] ?? key));
    if (m) {
      out.push({ field: prefix + key, message: m });
      bad.add(key);
    }
  }
  if (c.method === 'lopro_v' && !bad.has('vqDim') && !bad.has('vqBits') && !bad.has('bits')) {
    const [bitsKey, vb] = c.vqBits ? ['vqBits', c.vqBits] : ['bits', c.bits];
    if (c.vqDim * vb > MAX_CODEBOOK_LOG2)
      out.push({
        field: prefix + 'vqBits',
        message: `${prefix}vqDim ${c.vqDim} × ${prefix}${bitsKey} ${vb} = ${c.vqDim * vb} bits per vector: a codebook of 2^${c.vqDim * vb} entries, more than the 2^${MAX_CODEBOOK_LOG2} allowed`,
      });
  }
  return out;
}

/** Every rule over a whole run config: its layer settings, each override merged over them, the run-wide keys. */
export function validateConfig(c: QuantizeConfig): ConfigIssue[] {
  const out = validateLayerConfig(pickLayerConfig(c));
  for (const key of Object.keys(c)) if (!own(DEFAULT_CONFIG, key)) out.push({ field: key, message: `${key}: unknown setting` });
  for (const key of Object.keys(DEFAULT_CONFIG)) {
    if (own(DEFAULT_LAYER_CONFIG, key)) continue;
    const m = keyIssue(key, (c as unknown as Record<string, unknown>)[key], key);
    if (m) out.push({ field: key, message: m });
  }
  const overrides = c.layerOverrides;
  if (overrides && typeof overrides === 'object' && !Array.isArray(overrides)) {
    for (const [name, o] of Object.entries(overrides)) {
      const prefix = `layerOverrides["${name}"].`;
      if (!o || typeof o !== 'object' || Array.isArray(o))
        out.push({ field: `layerOverrides["${name}"]`, message: `layerOverrides["${name}"] must be an object of layer settings, got ${shown(o)}` });
      else out.push(...validateLayerConfig({ ...pickLayerConfig(c), ...o }, prefix));
    }
  }
  return out;
}

/** All issues as one line (the messages name their fields). */
export const describeIssues = (issues: readonly ConfigIssue[]): string => issues.map((i) => i.message).join('; ');

/**
 * The defaults for every key `partial` lacks (or holds as undefined). Unknown keys are kept so
 * that validateConfig reports them instead of a run silently ignoring a misspelt setting.
 */
export function withDefaults(partial: object): QuantizeConfig {
  const config = { ...DEFAULT_CONFIG, layerOverrides: {} } as Record<string, unknown>;
  // defineProperty: a parsed "__proto__" key becomes a key (and an issue), not the object's prototype.
  for (const [k, v] of Object.entries(partial)) if (v !== undefined) Object.defineProperty(config, k, { value: v, enumerable: true, writable: true, configurable: true });
  return config as unknown as QuantizeConfig;
}

export function pickLayerConfig(c: QuantizeConfig | LayerConfig): LayerConfig {
  const out = {} as Record<string, unknown>;
  for (const k of Object.keys(DEFAULT_LAYER_CONFIG)) out[k] = (c as unknown as Record<string, unknown>)[k];
  return out as unknown as LayerConfig;
}

/** Glob match for layer override keys: `*` matches any run of characters. */
export function matchesLayerPattern(pattern: string, name: string): boolean {
  const re = new RegExp(
    '^' +
      pattern
        .split('*')
        .map((s) => s.replace(/[.+?^${}()|[\]\\]/g, '\\$&'))
        .join('.*') +
      '$',
  );
  return re.test(name);
}

/** The effective config of one layer: defaults ← run config ← matching overrides (in key order). */
export function layerConfigFor(c: QuantizeConfig, layerName: string): LayerConfig {
  let lc = pickLayerConfig(c);
  for (const [pattern, o] of Object.entries(c.layerOverrides ?? {})) if (matchesLayerPattern(pattern, layerName)) lc = { ...lc, ...o };
  return lc;
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
  const m = rows,
    n = cols;
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
    // rank −1 is chosen per layer when it is quantized: until then the bound at the largest rank it may choose.
    const r = c.rank === -1 ? AUTO_RANK_MAX : c.rank;
    bpw += (r * 8) / n + (r * 8) / m + (2 * 16) / m + (r * 16) / (m * n);
  }
  return bpw;
}
