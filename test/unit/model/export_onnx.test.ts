// ONNX export (issue 4.5): the exported single-file model, run by plain ONNX Runtime, gives the
// engine's perplexity within 0.1 % on a few tiny windows. Block 0 carries every linear pattern:
// RTN 4-bit (MatMulNBits), RTN 3-bit with a group index and RTN 2-bit (in-graph dequant), LoPRo
// 2-bit and 4-bit (Gather perm + block FWHT + low-rank Gemms; MatMulNBits residual), LoPRo_v
// (codebook Gather), and a dense layer; the other blocks stay float.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DEFAULT_LAYER_CONFIG, type LayerConfig } from '../../../src/protocol/config';
import { ComputeRuntime } from '../../../src/engine/compute/runtime';
import { openModel, cachedWeights } from '../../../src/engine/model/loader';
import { perplexity } from '../../../src/engine/model/perplexity';
import { tokenizeFile } from '../../../src/engine/model/tokenizer';
import { quantizeLayerLoPRo } from '../../../src/engine/quant/lopro';
import { rtnQuantize } from '../../../src/engine/quant/rtn';
import { dequantizeLoPRo, type LoproStoredLayer } from '../../../src/engine/quant/lopro_dequant';
import { baselineAsStored } from '../../../src/engine/run/stored';
import { buildOnnxModel } from '../../../src/engine/run/export_onnx';
import { perplexityOnnx } from '../../../src/engine/run/export_onnx_eval';

test('ONNX export of a mixed quantized tiny model: perplexity equals the engine within 0.1 %', async (tc) => {
  const m = openModel('fixtures/tiny');
  const w = cachedWeights(m.weights);
  const lc = (o: Partial<LayerConfig>): LayerConfig => ({ ...DEFAULT_LAYER_CONFIG, ...o });
  const stored = new Map<string, LoproStoredLayer>();
  const lins = m.linears.filter((l) => l.block === 0);
  const lopro = (o: Partial<LayerConfig>, seed: number) => (W: Float32Array, r: number, c: number) =>
    quantizeLayerLoPRo(W, r, c, null, null, lc(o), seed, { baselines: false, kmeansIters: 4 }).stored;
  const rtn = (bits: number, groupSize: number, gIdx: boolean) => (W: Float32Array, r: number, c: number) =>
    baselineAsStored(rtnQuantize(W, r, c, { bits, groupSize, sym: false }), r, c, lc({ bits, groupSize }), gIdx);
  // LoPRo on the small layers only (GPTQ on 768 columns is slow on 2 cores); up_proj stays dense.
  const plan: Record<string, (W: Float32Array, rows: number, cols: number) => LoproStoredLayer> = {
    q_proj: rtn(4, 128, false), // MatMulNBits
    k_proj: lopro({ method: 'lopro', bits: 2, rank: 8, salientBlock: 64, hadamardBlock: 64 }, 1), // perm + partial FWHT + dequant
    v_proj: lopro({ method: 'lopro', bits: 4, rank: 4, salientBlock: 128, hadamardBlock: 32 }, 2), // MatMulNBits residual
    o_proj: lopro({ method: 'lopro_v', bits: 2, vqDim: 2, rank: 4, hadamardBlock: 128, rotation: 'full' }, 3), // codebook
    gate_proj: rtn(3, 64, true), // group-index dequant
    down_proj: rtn(2, 128, false),
  };
  const t0 = performance.now();
  for (const l of lins) {
    const f = plan[l.module];
    if (f) stored.set(l.name, f(await w(l.weight), l.rows, l.cols));
  }
  tc.diagnostic(`quantized block 0 in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  // The engine evaluates the same layers dequantized from the same stored parts.
  const engineWeights = async (name: string) => {
    const s = stored.get(name.replace(/\.weight$/, ''));
    return s ? dequantizeLoPRo(s) : w(name);
  };
  const { bytes, kinds } = await buildOnnxModel({ cfg: m.cfg, weights: w, layers: (n) => stored.get(n) }, { maxPositions: 256 });
  assert.deepEqual(kinds, { dense: 1 + 7 * 3, matmulnbits: 2, dequant: 3, codebook: 1 });

  const { ids } = tokenizeFile(m.tokenizer(), 'fixtures/text/persuasion.txt', m.cfg.vocabSize, null);
  const T = 256, windows = [0, 7, 100];
  const rt = await ComputeRuntime.create({ ep: 'cpu' });
  const eng = await perplexity(m.cfg, ids, engineWeights, { ctx: T, rt, windows });
  const float = await perplexity(m.cfg, ids, w, { ctx: T, rt, windows });
  await rt.dispose();

  const dir = mkdtempSync(join(tmpdir(), 'lopro-onnx-'));
  let onnxPpl: number;
  try {
    const file = join(dir, 'model.onnx');
    writeFileSync(file, bytes);
    const rt2 = await ComputeRuntime.create({ ep: 'cpu' });
    const r = await perplexityOnnx(file, ids, { ctx: T, rt: rt2, windows });
    await rt2.dispose();
    onnxPpl = r.ppl;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  const diff = Math.abs(onnxPpl - eng.ppl) / eng.ppl;
  tc.diagnostic(`onnx ppl ${onnxPpl.toFixed(4)}, engine ${eng.ppl.toFixed(4)}, float ${float.ppl.toFixed(4)}, diff ${(100 * diff).toExponential(2)} %`);
  assert.ok(diff < 0.001, `onnx ${onnxPpl} vs engine ${eng.ppl} (${(100 * diff).toFixed(4)} %)`);
  // The quantization is real: the quantized model is measurably worse than float.
  assert.ok(eng.ppl > float.ppl * 1.001, `quantized ${eng.ppl} vs float ${float.ppl}`);
  m.close();
});
