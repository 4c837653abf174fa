// Bundles the extension-host tests (test/exthost/*.ts) to CommonJS for Mocha in the extension host.
// vscode comes from the host, mocha from NODE_PATH (the repo's node_modules).
// Usage: node scripts/e2e/build-exthost.mjs <out-dir>
import * as esbuild from 'esbuild';
import { readdirSync, rmSync } from 'node:fs';

const out = process.argv[2];
if (!out) throw new Error('usage: build-exthost.mjs <out-dir>');
rmSync(out, { recursive: true, force: true });
const entryPoints = readdirSync('test/exthost')
  .filter((f) => f.endsWith('.ts'))
  .map((f) => `test/exthost/${f}`);
await esbuild.build({
  entryPoints,
  outdir: out,
  bundle: true,
  platform: 'node',
  format: 'cjs',
  target: 'node20',
  external: ['vscode', 'mocha'],
  sourcemap: 'inline',
  logLevel: 'warning',
});
console.log(`exthost tests: ${entryPoints.length} files → ${out}`);
