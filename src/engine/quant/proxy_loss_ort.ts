// tr(ΔHΔᵀ) and tr(WHWᵀ) (the layer report's proxy loss and its Ŵ = 0 reference) as one ORT graph:
// two [rows, cols]·[cols, cols] MatMuls on the run's EP. The float64 TypeScript kernel
// (gptq_kernels.ts proxyLoss, the `_ref` here) is O(rows·cols²) on one thread: 2 × 69 G multiply-adds
// for a 4096×4096 layer, about 90 s, longer than quantizing the layer. Float32 products, per-row sums
// in the graph, the final sum over rows in float64 here: relative error ~1e-6 (tested), plenty for a
// report. The pipeline uses it for large layers only (run/layer_engines.ts).

import { GraphBuilder } from '../compute/graph';
import type { ComputeRuntime } from '../compute/runtime';
export { proxyLoss as proxyLoss_ref } from './gptq_kernels';

function buildProxyLossGraph(): Uint8Array {
  const g = new GraphBuilder('proxy_loss');
  const w = g.input('w', 'float32', ['rows', 'cols']);
  const q = g.input('q', 'float32', ['rows', 'cols']);
  const h = g.input('h', 'float32', ['cols', 'cols']);
  const quad = (x: typeof w) => g.op('ReduceSum', [g.op('Mul', [x, g.op('MatMul', [x, h])]), g.constI64([1])], { keepdims: 0 });
  g.output(quad(g.op('Sub', [w, q])), 'loss_rows');
  g.output(quad(w), 'ref_rows');
  return g.toModel();
}

/** [tr(ΔHΔᵀ), tr(WHWᵀ)] with Δ = W − Ŵ, on `rt`'s EP. */
export async function proxyLossesOrt(rt: ComputeRuntime, W: Float32Array, wHat: Float32Array, H: Float64Array, rows: number, cols: number): Promise<[number, number]> {
  const r = await rt.runF32('quant/proxy_loss', buildProxyLossGraph, { w: [W, [rows, cols]], q: [wHat, [rows, cols]], h: [Float32Array.from(H), [cols, cols]] });
  let loss = 0, ref = 0;
  for (let i = 0; i < rows; i++) {
    loss += r.loss_rows[i];
    ref += r.ref_rows[i];
  }
  return [loss, ref];
}
