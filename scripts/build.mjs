// One esbuild script, three bundles: extension host (cjs), engine child process + CLI (cjs), webview (browser).
// onnxruntime-node loads native .node binaries, so it stays external and ships in node_modules (see .vscodeignore).
import * as esbuild from 'esbuild';
import { rmSync } from 'node:fs';

const production = process.argv.includes('--production');
const watch = process.argv.includes('--watch');
const common = { bundle: true, sourcemap: !production, minify: production, sourcesContent: false, logLevel: 'info' };

/** Prints `✘ [ERROR] file:line:col` so a VS Code problem matcher picks errors up in watch mode. */
const problemMatcher = {
  name: 'problem-matcher',
  setup(build) {
    build.onEnd((result) => {
      for (const { text, location } of result.errors) {
        console.error(`✘ [ERROR] ${text}`);
        if (location) console.error(`    ${location.file}:${location.line}:${location.column}:`);
      }
    });
  },
};

const builds = [
  {
    ...common,
    entryPoints: ['src/extension/extension.ts'],
    outfile: 'dist/extension.js',
    platform: 'node',
    format: 'cjs',
    target: 'node20',
    external: ['vscode', 'onnxruntime-node'],
  },
  { ...common, entryPoints: ['src/engine/main.ts'], outfile: 'dist/engine.js', platform: 'node', format: 'cjs', target: 'node20', external: ['onnxruntime-node'] },
  // The CPU backend's worker thread (src/engine/backend/cpu/pool.ts looks for it next to the engine bundle).
  {
    ...common,
    entryPoints: ['src/engine/backend/cpu/worker.ts'],
    outfile: 'dist/cpu_worker.js',
    platform: 'node',
    format: 'cjs',
    target: 'node20',
    external: ['onnxruntime-node'],
  },
  { ...common, entryPoints: ['webview/main.ts'], outfile: 'dist/webview.js', platform: 'browser', format: 'iife', target: 'es2022', loader: { '.css': 'text' } },
];

if (!watch) rmSync('dist', { recursive: true, force: true });
for (const options of builds) {
  if (watch) await (await esbuild.context({ ...options, plugins: [problemMatcher] })).watch();
  else await esbuild.build({ ...options, plugins: [problemMatcher] });
}
