// Bridge from run/exports.ts (pipeline) to run/export_onnx.ts: the pipeline's signature, with
// progress and log through its hooks. Loaded lazily so the rest of the engine starts without ORT
// graph code.
import type { RunHooks } from './run_context';
import { exportOnnxFromNative, type OnnxExportOptions } from './export_onnx';

export async function exportOnnx(nativeDir: string, outDir: string, hooks: RunHooks, opts: OnnxExportOptions = {}): Promise<void> {
  hooks.signal?.throwIfAborted();
  const r = await exportOnnxFromNative(nativeDir, outDir, opts);
  const k = r.kinds;
  hooks.log(
    'info',
    `onnx export: ${r.path} (${(r.bytes / 1e6).toFixed(2)} MB); linears: ${k.matmulnbits} MatMulNBits, ${k.dequant} in-graph dequant, ${k.codebook} codebook, ${k.dense} dense`,
  );
}
