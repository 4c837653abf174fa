// An ONNX export of a run with the library's export options that `lopro export` does not expose (issue 18's
// measurements): 2-bit codes in the 4-bit container (--four-bit-container), float activations (--float-activations).
//   node --import tsx bench/export_onnx_variant.ts RUN_DIR OUT_DIR [--four-bit-container] [--float-activations]
import { join } from 'node:path';
import { exportOnnxFromNative } from '../src/engine/run/export_onnx';

const args = process.argv.slice(2);
const [run, out] = args.filter((a) => !a.startsWith('--'));
exportOnnxFromNative(join(run, 'native'), out, { fourBitContainer: args.includes('--four-bit-container'), floatActivations: args.includes('--float-activations') })
  .then((r) => console.log(`${out}: ${(r.bytes / 1e6).toFixed(2)} MB, linears ${JSON.stringify(r.kinds)}`))
  .catch((e) => {
    console.error(e);
    process.exit(1);
  });
