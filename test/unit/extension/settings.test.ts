// contributes.configuration mirrors DEFAULT_CONFIG: every key has a `lopro.quantize.<key>` setting
// with the same default and a matching type, and no quantize setting exists without a key.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { DEFAULT_CONFIG, validateConfig, type QuantizeConfig } from '../../../src/protocol/config';
import { QUANTIZE_SECTION, configurationContribution } from '../../../src/extension/settingsSchema';

const pkg = JSON.parse(readFileSync(join(__dirname, '../../../package.json'), 'utf8'));
type Prop = { type: string; default: unknown; enum?: unknown[]; minimum?: number; maximum?: number; exclusiveMinimum?: number; exclusiveMaximum?: number };
const props: Record<string, Prop> = pkg.contributes.configuration.properties;
const prefix = `${QUANTIZE_SECTION}.`;

test('every DEFAULT_CONFIG key has a setting with the same default and type', () => {
  for (const [k, def] of Object.entries(DEFAULT_CONFIG)) {
    const p = props[prefix + k];
    assert.ok(p, `no setting ${prefix + k}`);
    assert.deepEqual(p.default, def, `default of ${prefix + k}`);
    const want = typeof def === 'number' ? ['number', 'integer'] : [typeof def];
    assert.ok(want.includes(p.type), `${prefix + k}: type ${p.type}, default is ${typeof def}`);
    if (p.type === 'integer') assert.ok(Number.isInteger(def), `${prefix + k} is integer but its default ${def} is not`);
    if (p.enum) assert.ok(p.enum.includes(def), `${prefix + k}: default ${String(def)} not in its enum`);
  }
});

test('every quantize setting is a DEFAULT_CONFIG key (vice versa)', () => {
  const settingKeys = Object.keys(props)
    .filter((k) => k.startsWith(prefix))
    .map((k) => k.slice(prefix.length));
  assert.deepEqual(settingKeys.sort(), Object.keys(DEFAULT_CONFIG).sort());
});

test('the Settings UI allows what the validator allows: enums, bounds and integer-ness agree with validateConfig', () => {
  const ok = (k: string, v: unknown) => validateConfig({ ...DEFAULT_CONFIG, layerOverrides: {}, [k]: v } as QuantizeConfig).length === 0;
  for (const [k, def] of Object.entries(DEFAULT_CONFIG)) {
    const p = props[prefix + k];
    if (p.enum) {
      for (const v of p.enum) assert.ok(ok(k, v), `${k}: the setting offers ${String(v)}, the validator refuses it`);
      // A value of the right type outside the enum is refused.
      assert.ok(!ok(k, typeof def === 'number' ? Math.max(...(p.enum as number[])) + 1 : 'not-a-choice'), `${k}: the validator accepts a value the setting does not offer`);
    }
    if (typeof def !== 'number' || p.enum) continue;
    assert.ok(p.minimum !== undefined || p.exclusiveMinimum !== undefined, `${k}: a number setting without a lower bound`);
    if (p.minimum !== undefined) {
      assert.ok(ok(k, p.minimum), `${k}: minimum ${p.minimum} refused by the validator`);
      assert.ok(!ok(k, p.minimum - 1), `${k}: ${p.minimum - 1} below the minimum accepted by the validator`);
    }
    if (p.exclusiveMinimum !== undefined) assert.ok(!ok(k, p.exclusiveMinimum) && ok(k, p.exclusiveMinimum + 1e-6), `${k}: exclusiveMinimum ${p.exclusiveMinimum}`);
    if (p.maximum !== undefined) assert.ok(ok(k, p.maximum) && !ok(k, p.maximum + 1), `${k}: maximum ${p.maximum}`);
    if (p.exclusiveMaximum !== undefined) assert.ok(!ok(k, p.exclusiveMaximum) && ok(k, p.exclusiveMaximum - 1e-6), `${k}: exclusiveMaximum ${p.exclusiveMaximum}`);
    // 'integer' settings: the validator refuses fractions too ('number' ones accept them).
    assert.equal(ok(k, def + 0.5), p.type === 'number', `${k}: type ${p.type}, yet ${def + 0.5} is ${ok(k, def + 0.5) ? 'accepted' : 'refused'}`);
  }
});

test('package.json holds exactly what the generator produces (run scripts/e2e/gen-contributes.ts)', () => {
  assert.deepEqual(pkg.contributes.configuration, JSON.parse(JSON.stringify(configurationContribution())));
});

test('every contributed command is in the palette list, and Quantize is on the Explorer menu', () => {
  const commands: string[] = pkg.contributes.commands.map((c: { command: string }) => c.command);
  const palette: string[] = pkg.contributes.menus.commandPalette.map((c: { command: string }) => c.command);
  assert.deepEqual([...palette].sort(), [...commands].sort());
  const explorer = pkg.contributes.menus['explorer/context'].find((m: { command: string }) => m.command === 'lopro.quantize');
  assert.match(explorer.when, /resourceExtname == \.safetensors/);
  assert.match(explorer.when, /explorerResourceIsFolder && resourcePath in lopro\.modelFolders/);
});
