// Bundles the GPU benches for the device machine (no npm, no tsx there): .gpu/bench/{gpu_layers,lopro,
// ipc_run,synth_llama,cpu_worker,…}.js. The CPU backend's worker bundle sits next to the benches because
// backend/cpu/pool.ts looks for cpu_worker.js beside the running bundle (__dirname).
// onnxruntime-node stays external and is loaded from $LOPRO_ORT_DIR/onnxruntime-node when that is set
// (e.g. /tmp/l/o130/node_modules for ORT 1.30 + WebGPU, /tmp/l/o129/node_modules for ORT 1.29 + CUDA),
// else through the normal resolution (NODE_PATH works too). Run: node bench/build-device-bundle.mjs
import * as esbuild from 'esbuild';
import { mkdirSync } from 'node:fs';

const ortShim = {
  name: 'ort-from-env',
  setup(build) {
    build.onResolve({ filter: /^onnxruntime-node$/ }, (args) =>
      args.namespace === 'ort-shim' ? { path: 'onnxruntime-node', external: true } : { path: 'ort', namespace: 'ort-shim' },
    );
    build.onLoad({ filter: /.*/, namespace: 'ort-shim' }, () => ({
      contents: 'const dir = process.env.LOPRO_ORT_DIR;\n' + "module.exports = dir ? require(require('node:path').join(dir, 'onnxruntime-node')) : require('onnxruntime-node');\n",
      loader: 'js',
    }));
  },
};

/** The worker never calls ORT (it only reaches it through imports of shared modules): don't load it 16 times. */
const ortStub = {
  name: 'ort-stub',
  setup(build) {
    build.onResolve({ filter: /^onnxruntime-node$/ }, () => ({ path: 'ort-stub', namespace: 'ort-stub' }));
    build.onLoad({ filter: /.*/, namespace: 'ort-stub' }, () => ({ contents: 'module.exports = {};', loader: 'js' }));
  },
};

const common = { outdir: '.gpu/bench', bundle: true, platform: 'node', format: 'cjs', target: 'node20', sourcemap: true, sourcesContent: false, logLevel: 'info' };
mkdirSync('.gpu/bench', { recursive: true });
await esbuild.build({ ...common, entryPoints: { cpu_worker: 'src/engine/backend/cpu/worker.ts' }, plugins: [ortStub] });
await esbuild.build({
  ...common,
  entryPoints: {
    gpu_layers: 'bench/gpu_layers.ts',
    ipc_run: 'bench/ipc_run.ts',
    model_table: 'bench/model_table.ts',
    bigtensor_probe: 'bench/bigtensor_probe.ts',
    dawn_copy_probe: 'bench/dawn_copy_probe.ts',
    ort_profile_summary: 'bench/ort_profile_summary.ts',
    synth_llama: 'bench/synth_llama.ts',
    xtx_probe: 'bench/xtx_probe.ts',
    generate_speed: 'bench/generate_speed.ts',
    export_onnx_variant: 'bench/export_onnx_variant.ts',
    // The CLI itself (`lopro quantize|eval|...`), as bin/lopro runs it from dist/engine.js.
    lopro: 'src/engine/main.ts',
  },
  plugins: [ortShim],
});
