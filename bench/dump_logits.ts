// The engine's own logits for a run's quantized model (its block graphs on the dequantized native weights, as
// `lopro eval` measures perplexity), for checking an ONNX export in another runtime (bench/device/onnx_check.py):
// writes DIR/ids.bin (int64 [W, T]) and DIR/logits.bin (float32 [W, T, V]) for W windows of T tokens of a text.
//   node --import tsx bench/dump_logits.ts RUN_OR_NATIVE_DIR OUT_DIR [--text FILE] [--windows 2] [--ctx 128]
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ComputeRuntime } from '../src/engine/compute/runtime';
import { loadModelConfig } from '../src/engine/model/config';
import { LlamaForward, loadBlockWeights } from '../src/engine/model/llama_forward';
import { loadTokenizer, tokenizeFile } from '../src/engine/model/tokenizer';
import { openNativeModel } from '../src/engine/run/native';
import { takeOption } from './cli_args';

const args = process.argv.slice(2);
const opt = (name: string, dflt: string) => takeOption(args, name, dflt);
const text = opt('text', 'fixtures/text/persuasion.txt');
const W = Number(opt('windows', '2'));
const T = Number(opt('ctx', '128'));
const [src, out] = args;
const dir = src.endsWith('native') ? src : join(src, 'native');

async function main() {
  const cfg = loadModelConfig(dir);
  const nat = openNativeModel(dir);
  const rt = await ComputeRuntime.create({ ep: 'cpu' });
  const ids = tokenizeFile(loadTokenizer(dir), text, cfg.vocabSize, null).ids.slice(0, W * T);
  const fwd = new LlamaForward(cfg, T, rt);
  const provider = (n: string) => nat.readFloat32(n);
  let x = await fwd.embed(ids, W, nat.readFloat32('model.embed_tokens.weight'));
  for (let b = 0; b < cfg.numLayers; b++) x = (await fwd.block(x, W, await loadBlockWeights(cfg, b, provider), b)).y;
  const { norm, head } = await fwd.headWeights(provider);
  const logits = await fwd.headLogits(x, W, T, norm, head);
  mkdirSync(out, { recursive: true });
  writeFileSync(
    join(out, 'ids.bin'),
    BigInt64Array.from(ids, (v) => BigInt(v)),
  );
  writeFileSync(join(out, 'logits.bin'), logits);
  writeFileSync(
    join(out, 'meta.json'),
    JSON.stringify({ windows: W, ctx: T, vocab: cfg.vocabSize, layers: cfg.numLayers, kvHeads: cfg.numKvHeads, headDim: cfg.headDim, source: dir, text }),
  );
  console.log(`wrote ${W}×${T} ids and logits [${W}, ${T}, ${cfg.vocabSize}] of ${dir} to ${out}`);
  nat.close();
  await rt.dispose();
}
main().catch((e) => {
  console.error(e);
  process.exit(1);
});
