// contributes.configuration mirrors DEFAULT_CONFIG: every key has a `lopro.quantize.<key>` setting
// with the same default and a matching type, and no quantize setting exists without a key.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { DEFAULT_CONFIG } from '../../../src/protocol/config';
import { QUANTIZE_SECTION, configurationContribution } from '../../../src/extension/settingsSchema';

const pkg = JSON.parse(readFileSync(join(__dirname, '../../../package.json'), 'utf8'));
const props: Record<string, { type: string; default: unknown; enum?: unknown[] }> = pkg.contributes.configuration.properties;
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
  const settingKeys = Object.keys(props).filter((k) => k.startsWith(prefix)).map((k) => k.slice(prefix.length));
  assert.deepEqual(settingKeys.sort(), Object.keys(DEFAULT_CONFIG).sort());
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
