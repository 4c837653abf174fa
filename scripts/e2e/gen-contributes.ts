// Writes package.json `contributes.configuration` from DEFAULT_CONFIG (src/extension/settingsSchema.ts).
// Touches nothing else in package.json. Usage: node --import tsx scripts/e2e/gen-contributes.ts [--check]
import { readFileSync, writeFileSync } from 'node:fs';
import { configurationContribution } from '../../src/extension/settingsSchema';

const file = new URL('../../package.json', import.meta.url);
const text = readFileSync(file, 'utf8');
const pkg = JSON.parse(text);
pkg.contributes = { ...pkg.contributes, configuration: configurationContribution() };
const next = JSON.stringify(pkg, null, 2) + '\n';
if (process.argv.includes('--check')) {
  if (next !== text) {
    console.error('package.json contributes.configuration is stale: run node --import tsx scripts/e2e/gen-contributes.ts');
    process.exit(1);
  }
  console.log('contributes.configuration up to date');
} else if (next !== text) {
  writeFileSync(file, next);
  console.log('package.json contributes.configuration written');
}
