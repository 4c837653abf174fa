// Mocha entry loaded by VS Code's extension host (extensionTestsPath), per the offline recipe.
// Writes a machine-readable summary to $EXT_TEST_RESULTS for scripts/e2e/run-exthost.sh.
import * as fs from 'node:fs';
import * as path from 'node:path';
import Mocha = require('mocha');

export function run(): Promise<void> {
  const mocha = new Mocha({ ui: 'tdd', color: false, timeout: 60000 });
  for (const f of fs.readdirSync(__dirname).sort()) if (f.endsWith('.test.js')) mocha.addFile(path.join(__dirname, f));
  return new Promise((resolve, reject) => {
    const runner = mocha.run((failures) => (failures ? reject(new Error(`${failures} tests failed.`)) : resolve()));
    const out = process.env.EXT_TEST_RESULTS;
    const results: { title: string; state: string; err?: string }[] = [];
    runner.on('pass', (t) => results.push({ title: t.fullTitle(), state: 'passed' }));
    runner.on('fail', (t, err) => results.push({ title: t.fullTitle(), state: 'failed', err: String(err?.stack ?? err) }));
    runner.on('end', () => {
      if (out) fs.writeFileSync(out, JSON.stringify({ stats: runner.stats, results }, null, 2));
    });
  });
}
