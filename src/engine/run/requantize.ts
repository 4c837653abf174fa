// The layer view's "re-quantize this layer in seconds": layer/requantize re-runs one layer with
// overrides on its cached Hessian (hessians/, float32, written with every block) and returns the before and
// after reports; layer/apply swaps the candidate into the run (block checkpoint, report, native
// output). Blocks after it keep the calibration inputs they were quantized on (as any per-layer
// edit after the fact must): a full re-run with the override gives the strictly sequential result.

import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { validateLayerConfig, type LayerConfig } from '../../protocol/config';
import { ErrorCode, type LayerDetails, type LayerReport, type RunSummary } from '../../protocol/messages';
import { ProtocolError } from '../../protocol/rpc';
import { atomicWriteFile } from '../io/atomic';
import { SafetensorsFile } from '../io/safetensors';
import { writeSafetensorsAtomic, type TensorData } from '../io/safetensors_writer';
import { openModel } from './inspect';
import { measuredStatKey, type StatKey } from '../model/config';
import { quantizeLayer } from './quantize_layer';
import { openBackend } from '../backend/open';
import { RunDir, summaryOf, type RunManifest } from './rundir';
import { loproLayerTensors, readLoproLayer } from '../io/lopro_format';
import { loproLayersIn, writeNativeOutput } from './native';

function findLayer(m: RunManifest, dir: RunDir, layer: string): LayerReport {
  const r = m.layers.find((l) => l.name === layer);
  if (!r) throw new ProtocolError(ErrorCode.InvalidParams, `layer ${layer} is not part of the run in ${dir.dir}`, layer, 'use a name from the run summary');
  return r;
}

function readHessian(dir: RunDir, block: number, input: string): { H: Float64Array; absMean: Float64Array } {
  if (!existsSync(dir.hessianFile(block)))
    throw new ProtocolError(
      ErrorCode.InvalidParams,
      `${dir.dir} kept no Hessians (keepHessians was off): a layer cannot be re-quantized from the run`,
      dir.hessianFile(block),
      'quantize again with keepHessians on, or use a layer override (--override) in a new run',
    );
  const f = SafetensorsFile.open(dir.hessianFile(block));
  try {
    const asF64 = (name: string) => Float64Array.from(f.readFloat32(name));
    return { H: asF64(`${input}::H`), absMean: asF64(`${input}::abs_mean`) };
  } finally {
    f.close();
  }
}

export async function requantizeLayer(runDir: string, layer: string, overrides: Partial<LayerConfig>): Promise<{ before: LayerReport; after: LayerReport; candidateId: string }> {
  const dir = new RunDir(resolve(runDir));
  return dir.withLock(() => requantizeLocked(dir, layer, overrides));
}

async function requantizeLocked(dir: RunDir, layer: string, overrides: Partial<LayerConfig>): Promise<{ before: LayerReport; after: LayerReport; candidateId: string }> {
  const m = dir.readManifest();
  const before = findLayer(m, dir, layer);
  const lc: LayerConfig = { ...before.config, ...overrides };
  const issues = validateLayerConfig(lc);
  if (issues.length) throw new ProtocolError(ErrorCode.BadConfig, issues[0].message, String(issues[0].field));
  const model = openModel(m.modelPath, m.ctx);
  try {
    const lin = model.linears.find((l) => l.name === layer);
    if (!lin) throw new ProtocolError(ErrorCode.IncompatibleCheckpoint, `${m.modelPath} no longer has layer ${layer}`, layer);
    // The statistic the run quantized it with (an expert's routed tokens, or all of them).
    const stats = m.kind === 'llama' ? readHessian(dir, before.block, measuredStatKey((before.statistic as StatKey | undefined) ?? lin.input)) : undefined;
    // The run's backend; the layer view compares the candidate with RTN and GPTQ on the same H.
    const { backend } = await openBackend(m.config.backend ?? 'auto', m.config.threads ?? 0);
    let out: Awaited<ReturnType<typeof quantizeLayer>>;
    try {
      out = await quantizeLayer(
        backend,
        { name: layer, block: before.block, module: before.module, rows: lin.rows, cols: lin.cols, W: model.ckpt.readFloat32(lin.weight), H: stats?.H, absMean: stats?.absMean },
        lc,
        {
          seed: m.config.seed,
          compare: true,
        },
      );
    } finally {
      await backend.close();
    }
    const candidateId = `c-${createHash('sha256')
      .update(layer + JSON.stringify(lc))
      .digest('hex')
      .slice(0, 12)}`;
    writeSafetensorsAtomic(dir.candidateFile(candidateId, 'safetensors'), loproLayerTensors(layer, out.stored), { layers: JSON.stringify([layer]) });
    atomicWriteFile(dir.candidateFile(candidateId, 'json'), JSON.stringify({ layer, report: out.report, details: out.details ?? null }));
    return { before, after: out.report, candidateId };
  } finally {
    model.ckpt.close();
  }
}

export async function applyCandidate(runDir: string, layer: string, candidateId: string): Promise<RunSummary> {
  const dir = new RunDir(resolve(runDir));
  return dir.withLock(() => applyLocked(dir, layer, candidateId));
}

function applyLocked(dir: RunDir, layer: string, candidateId: string): RunSummary {
  const m = dir.readManifest();
  if (!m.complete) throw new ProtocolError(ErrorCode.InvalidParams, `${dir.dir} is still running or unfinished`, dir.dir, 'apply a candidate after the run completed');
  const before = findLayer(m, dir, layer);
  const jsonFile = dir.candidateFile(candidateId, 'json');
  if (!existsSync(jsonFile)) throw new ProtocolError(ErrorCode.InvalidParams, `no candidate ${candidateId} in ${dir.dir}`, candidateId, 'call layer/requantize first');
  const cand = JSON.parse(readFileSync(jsonFile, 'utf8')) as { layer: string; report: LayerReport; details: LayerDetails | null };
  if (cand.layer !== layer) throw new ProtocolError(ErrorCode.InvalidParams, `candidate ${candidateId} is for ${cand.layer}, not ${layer}`, candidateId);
  // Rewrite the block checkpoint with this layer's parts replaced (others copied as they are).
  const b = before.block;
  const old = SafetensorsFile.open(dir.blockFile(b));
  const cf = SafetensorsFile.open(dir.candidateFile(candidateId, 'safetensors'));
  try {
    const tensors: TensorData[] = [];
    const names = loproLayersIn(old);
    for (const name of names) tensors.push(...loproLayerTensors(name, readLoproLayer(name === layer ? cf : old, name)));
    writeSafetensorsAtomic(dir.blockFile(b), tensors, { layers: JSON.stringify(names) });
  } finally {
    old.close();
    cf.close();
  }
  const detailsPath = dir.detailsFile(b);
  const details = existsSync(detailsPath) ? (JSON.parse(readFileSync(detailsPath, 'utf8')) as Record<string, LayerDetails>) : {};
  if (cand.details) details[layer] = cand.details;
  else delete details[layer];
  atomicWriteFile(detailsPath, JSON.stringify(details));
  m.layers = m.layers.map((l) => (l.name === layer ? cand.report : l));
  delete m.perplexity; // measured on the previous weights
  delete m.kl;
  const model = openModel(m.modelPath, m.ctx);
  try {
    writeNativeOutput(dir, model, m);
  } finally {
    model.ckpt.close();
  }
  dir.writeManifest(m);
  return summaryOf(m, dir.dir);
}

export function layerDetails(runDir: string, layer: string, maxPoints: number): LayerDetails {
  const dir = new RunDir(resolve(runDir));
  const m = dir.readManifest();
  const r = findLayer(m, dir, layer);
  const p = dir.detailsFile(r.block);
  const all = existsSync(p) ? (JSON.parse(readFileSync(p, 'utf8')) as Record<string, LayerDetails>) : {};
  const d = all[layer];
  if (!d) {
    // RTN/GPTQ layers have no permutation, rotation or low-rank part to show.
    return {
      name: layer,
      rows: r.rows,
      cols: r.cols,
      importance: { x: [], y: [] },
      blocks: [],
      permSample: [],
      singularValues: [],
      rank: 0,
      histograms: { edges: [], residualBefore: [], residualAfter: [], error: [] },
      errorTile: { rows: 0, cols: 0, values: [] },
    };
  }
  if (maxPoints > 0 && d.importance.x.length > maxPoints) {
    const step = d.importance.x.length / maxPoints;
    const pick = <T>(a: T[]) => Array.from({ length: maxPoints }, (_, i) => a[Math.floor(i * step)]);
    d.importance = { x: pick(d.importance.x), y: pick(d.importance.y) };
    if (d.permSample.length > maxPoints) d.permSample = pick(d.permSample);
  }
  return d;
}
