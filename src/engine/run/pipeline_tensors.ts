// Data-free mode over a bare safetensors file: every 2-D float tensor quantized with H = I (and
// α = 1 for LoPRo), one progress line per tensor, one checkpoint per tensor (a tensor is this
// mode's "block"), so --resume skips the tensors already done.

import { layerConfigFor } from '../../protocol/config';
import { writeSafetensorsAtomic } from '../io/safetensors_writer';
import { throwIfCancelled, yieldToEventLoop } from './cancel';
import { ProgressTracker } from './progress';
import { quantizeLayer } from './quantize_layer';
import { rtnByRows } from './rtn_rows';

/** Matrices above this many weights are quantized by row slices when the method allows (RTN). */
const SLICE_ABOVE = 1 << 24;
import { loproLayerTensors } from '../io/lopro_format';
import { atomicWriteFile } from '../io/atomic';
import type { RunContext } from './run_context';

export async function runTensorBlocks(ctx: RunContext): Promise<void> {
  const { model, dir, manifest: m, hooks, params, backend } = ctx;
  const linears = model.linears;
  const units = (i: number) => linears[i].rows * linears[i].cols;
  let total = 0,
    done = 0;
  for (let i = 0; i < linears.length; i++) {
    total += units(i);
    if (i < m.completedBlocks) done += units(i);
  }
  const progress = new ProgressTracker(hooks.onProgress, total, `quantizing ${linears.length} tensors of ${model.summary.path} data-free (H = I)`, done);
  for (let i = m.completedBlocks; i < linears.length; i++) {
    throwIfCancelled(hooks.signal);
    const lin = linears[i];
    const lc = layerConfigFor(params.config, lin.name);
    // Large RTN matrices go through row slices (bounded memory); everything else whole.
    const out =
      lc.method === 'rtn' && !params.config.compare && lin.rows * lin.cols > SLICE_ABOVE
        ? await rtnByRows(backend, (r0, n) => model.ckpt.readRowsFloat32(lin.weight, r0, n), lin.name, i, lin.module, lin.rows, lin.cols, lc)
        : await quantizeLayer(backend, { name: lin.name, block: i, module: lin.module, rows: lin.rows, cols: lin.cols, W: model.ckpt.readFloat32(lin.weight) }, lc, {
            seed: params.config.seed,
            compare: params.config.compare,
            warn: (msg) => hooks.log('warn', msg),
          });
    writeSafetensorsAtomic(dir.blockFile(i), loproLayerTensors(lin.name, out.stored), { layers: JSON.stringify([lin.name]) });
    atomicWriteFile(dir.detailsFile(i), JSON.stringify('details' in out && out.details ? { [lin.name]: out.details } : {}));
    m.layers = m.layers.filter((l) => l.name !== lin.name).concat(out.report);
    m.completedBlocks = i + 1;
    ctx.commit();
    hooks.onLayerDone(out.report);
    const r = out.report;
    progress.advance(
      units(i),
      `tensor ${i + 1}/${linears.length} ${lin.name} ${lin.rows}×${lin.cols} ${lc.method} W${lc.bits} bpw ${r.bpw.toFixed(3)} rel.err ${r.relProxyLoss.toExponential(2)}`,
      { block: i, layer: lin.name },
    );
    await yieldToEventLoop(); // lets a `cancel` message in between tensors
  }
  progress.end(`quantized ${linears.length} tensors`);
}
