// Command-line flags → QuantizeConfig. Every QuantizeConfig key is a flag, named in kebab-case
// (groupSize → --group-size), typed by its default's type; a few short aliases follow the task's
// wording (--group, --calib, --samples, --damp). Errors name the flag and say what was expected.
// Parsing checks only that a value reads as its key's type; the rules (allowed values, ranges,
// conflicts) are checked once, by the engine at its entry (pipeline.ts checkedConfig), and the CLI
// shows that error's field as its flag (flagFor).

import { DEFAULT_CONFIG, withDefaults, type LayerConfig, type QuantizeConfig } from '../../protocol/config';
import { ErrorCode } from '../../protocol/messages';
import { ProtocolError } from '../../protocol/rpc';

/** groupSize → group-size, memoryBudgetMB → memory-budget-mb. */
export const kebab = (k: string) => k.replace(/([a-z0-9])([A-Z])/g, '$1-$2').toLowerCase();

const ALIASES: Record<string, string> = { group: 'groupSize', calib: 'calibText', samples: 'calibSamples', damp: 'percDamp' };

/** Flag name (without --) → config key, for every key of DEFAULT_CONFIG and the aliases. */
export function configFlags(): Map<string, keyof QuantizeConfig> {
  const m = new Map<string, keyof QuantizeConfig>();
  for (const k of Object.keys(DEFAULT_CONFIG) as (keyof QuantizeConfig)[]) m.set(kebab(k), k);
  for (const [a, k] of Object.entries(ALIASES)) m.set(a, k as keyof QuantizeConfig);
  return m;
}

export interface ParsedArgs {
  positional: string[];
  /** Flags that are not config keys (--out, --resume, --text …), last value wins except lists. */
  flags: Map<string, string[]>;
  config: Partial<QuantizeConfig>;
}

const badFlag = (flag: string, message: string, hint?: string) => new ProtocolError(ErrorCode.BadConfig, message, `--${flag}`, hint);

function parseValue(flag: string, key: keyof QuantizeConfig, raw: string): unknown {
  const def = DEFAULT_CONFIG[key];
  if (typeof def === 'number') {
    const v = Number(raw);
    if (raw.trim() === '' || !Number.isFinite(v)) throw badFlag(flag, `--${flag} expects a number, got "${raw}"`);
    return v;
  }
  if (typeof def === 'boolean') {
    if (raw === 'true' || raw === '1' || raw === 'yes') return true;
    if (raw === 'false' || raw === '0' || raw === 'no') return false;
    throw badFlag(flag, `--${flag} expects true or false, got "${raw}"`);
  }
  if (key === 'layerOverrides') {
    try {
      const v = JSON.parse(raw) as unknown;
      if (!v || typeof v !== 'object' || Array.isArray(v)) throw new Error('not an object');
      return v;
    } catch (e) {
      throw badFlag(flag, `--${flag} expects a JSON object {"pattern": {"bits": 4}}: ${(e as Error).message}`);
    }
  }
  return raw;
}

/**
 * `--override "model.layers.0.*:bits=4,rank=32"` → ['model.layers.0.*', {bits: 4, rank: 32}].
 * Values are typed by the layer default's type.
 */
export function parseOverride(raw: string): [string, Partial<LayerConfig>] {
  const i = raw.lastIndexOf(':');
  if (i <= 0) throw badFlag('override', `--override expects PATTERN:key=value[,key=value], got "${raw}"`, 'e.g. --override "*.down_proj:bits=3"');
  const pattern = raw.slice(0, i);
  const out: Record<string, unknown> = {};
  const flags = configFlags();
  for (const kv of raw.slice(i + 1).split(',')) {
    const [k, v] = kv.split('=');
    const key = flags.get(k?.trim() ?? '') ?? (k?.trim() as keyof QuantizeConfig);
    if (v === undefined || !(key in DEFAULT_CONFIG) || key === 'layerOverrides')
      throw badFlag('override', `--override: unknown or malformed setting "${kv}" in "${raw}"`, 'keys are layer settings such as bits, rank, method, group-size');
    out[key] = parseValue('override', key, v.trim());
  }
  return [pattern, out as Partial<LayerConfig>];
}

/** Splits argv into positionals, config flags and other flags (`--x v`, `--x=v`, boolean `--x`). */
export function parseArgs(argv: string[], booleanFlags: ReadonlySet<string>, valueFlags: ReadonlySet<string>): ParsedArgs {
  const flagsMap = configFlags();
  const positional: string[] = [];
  const flags = new Map<string, string[]>();
  const config: Record<string, unknown> = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (!a.startsWith('--') || a === '--') {
      positional.push(a);
      continue;
    }
    const eq = a.indexOf('=');
    let name = eq > 0 ? a.slice(2, eq) : a.slice(2);
    let inline = eq > 0 ? a.slice(eq + 1) : undefined;
    if (name.startsWith('no-') && !flagsMap.has(name) && !booleanFlags.has(name)) {
      name = name.slice(3);
      inline = 'false';
    }
    const key = flagsMap.get(name);
    const isBool = booleanFlags.has(name) || (key !== undefined && typeof DEFAULT_CONFIG[key] === 'boolean');
    let value: string;
    if (inline !== undefined) value = inline;
    else if (isBool) value = 'true';
    else {
      if (i + 1 >= argv.length) throw badFlag(name, `--${name} needs a value`);
      value = argv[++i];
    }
    if (key !== undefined) config[key] = parseValue(name, key, value);
    else if (name === 'override') {
      const [p, o] = parseOverride(value);
      const lo = (config.layerOverrides ?? {}) as Record<string, unknown>;
      lo[p] = { ...(lo[p] as object | undefined), ...o };
      config.layerOverrides = lo;
    } else if (booleanFlags.has(name) || valueFlags.has(name)) flags.set(name, [...(flags.get(name) ?? []), value]);
    else throw badFlag(name, `unknown option --${name}`, 'run `lopro --help` for the list of options');
  }
  return { positional, flags, config: config as Partial<QuantizeConfig> };
}

/** Defaults ← flags. Not validated here: quantizeRun validates the config it is given (see the top). */
export function configFromFlags(partial: Partial<QuantizeConfig>): QuantizeConfig {
  return withDefaults(partial);
}

/**
 * The flag that sets a config field, for errors about that field: `hadamardBlock` → `--hadamard-block`,
 * `layerOverrides["*.q_proj"].bits` → `--override "*.q_proj:bits"`; undefined for anything else.
 */
export function flagFor(field: string): string | undefined {
  if (Object.hasOwn(DEFAULT_CONFIG, field)) return `--${kebab(field)}`;
  const o = /^layerOverrides\["(.*)"\]\.(\w+)$/.exec(field);
  if (o) return `--override "${o[1]}:${kebab(o[2])}"`;
  return undefined;
}
