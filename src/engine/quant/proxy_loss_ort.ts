// tr(ΔHΔᵀ) and tr(WHWᵀ) (the layer report's proxy loss and its Ŵ = 0 reference) as one ORT graph:
// two [rows, cols]·[cols, cols] MatMuls on the run's EP. The float64 TypeScript kernel
// (gptq_kernels.ts proxyLoss, the `_ref` here) is O(rows·cols²) on one thread: 2 × 69 G multiply-adds
// for a 4096×4096 layer, about 90 s, longer than quantizing the layer. Float32 products, per-row sums
// in the graph, the final sum over rows in float64 here: relative error ~1e-6 (tested), plenty for a
// report. The pipeline uses it for large layers only (run/layer_engines.ts).

import { GraphBuilder } from '../compute/graph';
import type { ComputeRuntime, Tensor } from '../compute/runtime';
export { proxyLoss as proxyLoss_ref } from './gptq_kernels';

/**
 * Per-row sums of Δ∘(ΔH) and W∘(WH). 'out_in': w, q are [rows, cols] (the checkpoint layout);
 * 'in_out': they are [cols, rows] (the forward's pre-transposed device weights), so Σ over axis 0 of
 * Δᵀ∘(HΔᵀ) (H is symmetric).
 */
function buildProxyLossGraph(layout: 'out_in' | 'in_out'): () => Uint8Array {
  return () => {
    const g = new GraphBuilder('proxy_loss');
    const dims = layout === 'out_in' ? ['rows', 'cols'] : ['cols', 'rows'];
    const w = g.input('w', 'float32', dims);
    const q = g.input('q', 'float32', dims);
    const h = g.input('h', 'float32', ['cols', 'cols']);
    const quad = (x: typeof w) => {
      const xh = layout === 'out_in' ? g.op('MatMul', [x, h]) : g.op('MatMul', [h, x]);
      return g.op('ReduceSum', [g.op('Mul', [x, xh]), g.constI64([layout === 'out_in' ? 1 : 0])], { keepdims: 0 });
    };
    g.output(quad(g.op('Sub', [w, q])), 'loss_rows');
    g.output(quad(w), 'ref_rows');
    return g.toModel();
  };
}

function sumRows(r: Record<string, Float32Array>, rows: number): [number, number] {
  let loss = 0, ref = 0;
  for (let i = 0; i < rows; i++) {
    loss += r.loss_rows[i];
    ref += r.ref_rows[i];
  }
  return [loss, ref];
}

/** [tr(ΔHΔᵀ), tr(WHWᵀ)] with Δ = W − Ŵ, on `rt`'s EP. */
export async function proxyLossesOrt(rt: ComputeRuntime, W: Float32Array, wHat: Float32Array, H: Float64Array, rows: number, cols: number): Promise<[number, number]> {
  const r = await rt.runF32('quant/proxy_loss', buildProxyLossGraph('out_in'), { w: [W, [rows, cols]], q: [wHat, [rows, cols]], h: [Float32Array.from(H), [cols, cols]] });
  return sumRows(r, rows);
}

/**
 * The same from tensors already on the device (the pipeline's block weights before and after the layer
 * was quantized, and its Hessian as the device finished it), in the forward's weight layout: nothing
 * uploaded (proxyLossesOrt sends W, Ŵ and H up per layer: 5 GB per two 7B-shaped blocks, measured).
 */
export async function proxyLossesOnDevice(
  rt: ComputeRuntime, W: Tensor, wHat: Tensor, H: Tensor, rows: number, layout: 'out_in' | 'in_out',
): Promise<[number, number]> {
  const s = await rt.session(`quant/proxy_loss|${layout}`, buildProxyLossGraph(layout), 'host');
  const out = await rt.run(s, { w: W, q: wHat, h: H });
  return sumRows({ loss_rows: out.loss_rows.data as Float32Array, ref_rows: out.ref_rows.data as Float32Array }, rows);
}
