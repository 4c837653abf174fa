// ONNX export (issue 4.5): the exported single-file model, run by plain ONNX Runtime, gives the
// engine's perplexity within 0.1 % on a few tiny windows. Block 0 carries every linear pattern:
// RTN 4-, 3- and 2-bit (MatMulNBits bits = 4 / 4 / 2), RTN 3-bit with a group index (in-graph dequant), LoPRo
// 2-bit and 4-bit (GatherElements perm + block FWHT + low-rank MatMul/Gemm, k and v sharing them; MatMulNBits residual), LoPRo_v
// (codebook Gather); the other blocks stay float.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DEFAULT_LAYER_CONFIG, type LayerConfig } from '../../../src/protocol/config';
import { ComputeRuntime } from '../../../src/engine/compute/runtime';
import { openModel, cachedWeights } from '../../../src/engine/model/loader';
import { perplexity, type PerplexityResult } from '../../../src/engine/model/perplexity';
import { tokenizeFile } from '../../../src/engine/model/tokenizer';
import { quantizeLayer } from '../../../src/engine/run/quantize_layer';
import type { LoproStoredLayer } from '../../../src/engine/quant/lopro_dequant';
import { loproLayerTensors } from '../../../src/engine/io/lopro_format';
import { writeSafetensorsAtomic, type TensorData } from '../../../src/engine/io/safetensors_writer';
import { openNativeModel } from '../../../src/engine/run/native';
import { baselineAsStored } from '../../../src/engine/run/stored';
import { exportOnnxFromNative } from '../../../src/engine/run/export_onnx';
import { perplexityOnnx } from '../../../src/engine/run/export_onnx_eval';
import { cpuBackend, rtnOn } from '../backend/backends';

test("ONNX export of a native mixed-quantized tiny folder: perplexity equals the engine's (on the same folder) within 0.1 %", async (tc) => {
  const m = openModel('fixtures/tiny');
  const w = cachedWeights(m.weights);
  const lc = (o: Partial<LayerConfig>): LayerConfig => ({ ...DEFAULT_LAYER_CONFIG, ...o });
  const stored = new Map<string, LoproStoredLayer>();
  const lins = m.linears.filter((l) => l.block === 0);
  // The layers as a data-free run quantizes them (run/quantize_layer.ts on the CPU backend); the 3-bit RTN
  // layer is stored with a group index (the exporter's group-index dequant path), which no run writes for RTN.
  const lopro = (o: Partial<LayerConfig>, seed: number) => async (W: Float32Array, rows: number, cols: number) =>
    (await quantizeLayer(cpuBackend(1), { name: `layer${seed}`, block: 0, module: 'm', rows, cols, W }, lc(o), { seed })).stored;
  const rtn = (bits: number, groupSize: number, gIdx: boolean) => async (W: Float32Array, r: number, c: number) =>
    baselineAsStored(await rtnOn(cpuBackend(1), W, r, c, { bits, groupSize, sym: false }), r, c, lc({ bits, groupSize }), gIdx);
  // LoPRo on the small layers only (GPTQ on 768 columns is slow on 2 cores).
  const plan: Record<string, (W: Float32Array, rows: number, cols: number) => Promise<LoproStoredLayer>> = {
    q_proj: rtn(4, 128, false), // MatMulNBits
    k_proj: lopro({ method: 'lopro', bits: 2, rank: 8, salientBlock: 64, hadamardBlock: 64 }, 1), // perm + partial FWHT + MatMulNBits bits = 2
    v_proj: lopro({ method: 'lopro', bits: 4, rank: 4, salientBlock: 128, hadamardBlock: 64 }, 2), // MatMulNBits residual; shares k_proj's permutation, rotation and low-rank product
    o_proj: lopro({ method: 'lopro_v', bits: 2, vqDim: 2, rank: 4, hadamardBlock: 128, rotation: 'full' }, 3), // codebook
    gate_proj: rtn(3, 64, true), // group-index dequant
    down_proj: rtn(2, 128, false), // MatMulNBits bits = 2
    up_proj: rtn(3, 128, false), // MatMulNBits, 3-bit codes in the 4-bit container
  };
  const t0 = performance.now();
  for (const l of lins) {
    const f = plan[l.module];
    if (f) stored.set(l.name, await f(await w(l.weight), l.rows, l.cols));
  }
  tc.diagnostic(`quantized block 0 in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  // A native LoPRo folder on disk, as the pipeline writes it: quantized layers in the LoPRo format,
  // the rest as stored (float32 here). Engine and ONNX both read it back from disk.
  const dir = mkdtempSync(join(tmpdir(), 'lopro-onnx-'));
  let eng: PerplexityResult, float: PerplexityResult, onnxPpl: number, int8Ppl: number;
  const T = 256,
    windows = [0, 7, 100];
  const { ids } = tokenizeFile(m.tokenizer(), 'fixtures/text/persuasion.txt', m.cfg.vocabSize, null);
  try {
    const nativeDir = join(dir, 'native'),
      outDir = join(dir, 'onnx');
    mkdirSync(nativeDir);
    const tensors: TensorData[] = [];
    for (const e of m.checkpoint.entries) {
      const layer = e.name.replace(/\.weight$/, '');
      const st = stored.get(layer);
      if (st) tensors.push(...loproLayerTensors(layer, st));
      else tensors.push({ name: e.name, dtype: 'F32', shape: e.shape, data: await w(e.name) });
    }
    writeSafetensorsAtomic(join(nativeDir, 'model.safetensors'), tensors);
    for (const f of ['config.json', 'tokenizer.json', 'tokenizer_config.json']) copyFileSync(join('fixtures/tiny', f), join(nativeDir, f));

    const res = await exportOnnxFromNative(nativeDir, outDir, { maxPositions: 256, floatActivations: true });
    assert.deepEqual(res.kinds, { dense: 7 * 3, matmulnbits: 5, dequant: 1, codebook: 1 });
    assert.ok(existsSync(join(outDir, 'tokenizer.json')) && existsSync(join(outDir, 'config.json')));

    const rt = await ComputeRuntime.create({ ep: 'cpu' });
    const native = openNativeModel(nativeDir);
    eng = await perplexity(m.cfg, ids, (n) => native.readFloat32(n), { ctx: T, rt, windows });
    native.close();
    float = await perplexity(m.cfg, ids, w, { ctx: T, rt, windows });
    onnxPpl = (await perplexityOnnx(res.path, ids, { ctx: T, rt, windows })).ppl;
    // The weights in model.onnx.data (what models past 2 GiB need): the same numbers from a small model file.
    const ext = await exportOnnxFromNative(nativeDir, join(dir, 'onnx_ext'), { maxPositions: 256, floatActivations: true, externalDataAbove: 0 });
    const extFile = statSync(ext.path).size,
      dataFile = statSync(`${ext.path}.data`).size;
    tc.diagnostic(`external data: model.onnx ${extFile} B + model.onnx.data ${dataFile} B (single file ${statSync(res.path).size} B)`);
    assert.ok(extFile < 0.05 * dataFile, `model.onnx ${extFile} B holds the weights (data ${dataFile} B)`);
    assert.equal((await perplexityOnnx(ext.path, ids, { ctx: T, rt, windows })).ppl, (await perplexityOnnx(res.path, ids, { ctx: T, rt, windows })).ppl);
    // 2-bit codes in the 4-bit container (for EPs whose 2-bit kernel fails): the same numbers, more bytes.
    const c4 = await exportOnnxFromNative(nativeDir, join(dir, 'onnx_c4'), { maxPositions: 256, floatActivations: true, fourBitContainer: true });
    assert.ok(c4.bytes > res.bytes, `4-bit container ${c4.bytes} B vs ${res.bytes} B`);
    const c4Ppl = (await perplexityOnnx(c4.path, ids, { ctx: T, rt, windows })).ppl;
    assert.ok(Math.abs(c4Ppl / onnxPpl - 1) < 1e-6, `4-bit container ${c4Ppl} vs ${onnxPpl} (other kernels: summation order only)`);
    // The default export: int8 activation blocks into MatMulNBits (accuracy_level 4), close but not equal.
    const int8 = await exportOnnxFromNative(nativeDir, join(dir, 'onnx_int8'), { maxPositions: 256 });
    int8Ppl = (await perplexityOnnx(int8.path, ids, { ctx: T, rt, windows })).ppl;
    await rt.dispose();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  const diff = Math.abs(onnxPpl - eng.ppl) / eng.ppl;
  tc.diagnostic(`onnx ppl ${onnxPpl.toFixed(4)}, engine ${eng.ppl.toFixed(4)}, float ${float.ppl.toFixed(4)}, diff ${(100 * diff).toExponential(2)} %`);
  assert.ok(diff < 0.001, `onnx ${onnxPpl} vs engine ${eng.ppl} (${(100 * diff).toFixed(4)} %)`);
  const int8Diff = Math.abs(int8Ppl - eng.ppl) / eng.ppl;
  tc.diagnostic(`int8 activations: onnx ppl ${int8Ppl.toFixed(4)}, ${(100 * int8Diff).toFixed(3)} % from the engine's`);
  assert.ok(int8Diff < 0.01 && int8Ppl !== onnxPpl, `int8 activations: ${int8Ppl} vs engine ${eng.ppl}`);
  // The quantization is real: the quantized model is measurably worse than float.
  assert.ok(eng.ppl > float.ppl * 1.001, `quantized ${eng.ppl} vs float ${float.ppl}`);
  m.close();
});
