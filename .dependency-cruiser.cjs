// The dependency rules `npm test` checks (npx depcruise src webview bench test --config .dependency-cruiser.cjs):
// no cycles, folders in layers, the webview and the extension kept to their own side of the protocol,
// production code never importing a float64 twin, benches never importing tests.
/** @type {import('dependency-cruiser').IConfiguration} */
module.exports = {
  forbidden: [
    { name: 'no-circular', severity: 'error', comment: 'No import cycles between files.', from: {}, to: { circular: true } },
    {
      name: 'engine-layers',
      severity: 'error',
      comment:
        'Engine folders form layers, each importing only the ones below it: run > model > compute > backend > quant > io, linalg, util ' +
        '(compute asks backend/gpu whether a WebGPU adapter exists; the drivers in quant/ are written against quant/backend.ts).',
      from: { path: '^src/engine/(io|linalg|util)/' },
      to: { path: '^src/engine/(quant|backend|compute|model|run)/' },
    },
    { name: 'quant-below-backend', severity: 'error', comment: 'The drivers (quant/) are written against quant/backend.ts; backends implement it.', from: { path: '^src/engine/quant/' }, to: { path: '^src/engine/(backend|compute|model|run)/' } },
    { name: 'backend-below-run', severity: 'error', from: { path: '^src/engine/backend/' }, to: { path: '^src/engine/(compute|model|run)/' } },
    { name: 'compute-below-model', severity: 'error', from: { path: '^src/engine/compute/' }, to: { path: '^src/engine/(model|run|quant)/' } },
    { name: 'model-below-run', severity: 'error', from: { path: '^src/engine/model/' }, to: { path: '^src/engine/(run|quant|backend)/' } },
    { name: 'protocol-is-a-leaf', severity: 'error', comment: 'Messages and the config are shared by host, engine and webview: they import none of them.', from: { path: '^src/protocol/' }, to: { path: '^(src/(engine|extension)|webview)/' } },
    { name: 'engine-without-vscode', severity: 'error', comment: 'The engine is also the CLI.', from: { path: '^src/engine/' }, to: { path: '^(src/extension|webview)/|^vscode$' } },
    { name: 'webview-only-protocol', severity: 'error', comment: 'The webview sees the host through the protocol only.', from: { path: '^webview/' }, to: { path: '^src/(engine|extension)/' } },
    { name: 'extension-not-engine', severity: 'error', comment: 'The host talks to the engine process through the protocol, never by import.', from: { path: '^src/extension/' }, to: { path: '^src/engine/' } },
    { name: 'no-ref-in-production', severity: 'error', comment: 'The float64 twins (*_ref.ts) are what tests compare against, never what runs.', from: { path: '^src/', pathNot: '_ref\\.ts$' }, to: { path: '_ref\\.ts$' } },
    { name: 'bench-not-test', severity: 'error', comment: 'Benchmarks stand on their own.', from: { path: '^bench/' }, to: { path: '^test/' } },
    { name: 'no-orphans', severity: 'error', comment: 'A source file nothing imports is dead code.', from: { orphan: true, path: '^src/', pathNot: ['\\.d\\.ts$', '^src/engine/main\\.ts$', '^src/extension/extension\\.ts$', '^src/engine/backend/cpu/worker\\.ts$'] }, to: {} },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    enhancedResolveOptions: { exportsFields: ['exports'], conditionNames: ['import', 'require', 'node', 'default'] },
  },
};
