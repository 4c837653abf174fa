// Seconds per LLaMA-2-7B-shaped layer on a backend, method by method, next to the PyTorch GPTQ peer
// (bench/torch_gptq.py run on the same machine: --peer its JSON).
//
//   node --import tsx bench/gpu_layers.ts [--backend gpu|cpu] [--shapes 4096x4096,11008x4096,4096x11008]
//        [--methods rtn,gptq,lopro,lopro-mse,lopro-act,lopro_v] [--bits 2] [--threads N] [--tokens 2048]
//        [--reps 1] [--peer torch.json] [--out DIR]
//
// Methods: rtn, gptq, lopro, lopro_v with the spec defaults (group 128 asym, damp 0.01, B 128; LoPRo rank 16,
// b_I = b_H = 128); a suffix changes one setting: -mse (clip mse), -act (act-order), -static (act-order +
// static groups), -g1 (groupSize −1).
// Columns: quantize s = upload of W and H + the driver + Ŵ back on the host (what a layer costs the pipeline
// before its report; the ratio to PyTorch's fasterquant is on this); layer s = the whole quantizeLayer of
// run/quantize_layer.ts (+ the proxy losses on the backend, the report and the layer view's details);
// loss/RTN = the layer's proxy loss tr(ΔHΔᵀ) over RTN's on the same layer (quality sanity check).
// Layers: W ~ N(0,1)/√cols with log-normal row/column scales; H = (2/T)·XᵀX from correlated, heavy-tailed
// activations X = (0.8·F·B + 0.6·E)·s (F·B rank cols/8, E Laplace, s log-normal, cols/256 channels ×20),
// seeded; built on ONNX Runtime's CPU EP so every backend sees the same H.

import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { DEFAULT_LAYER_CONFIG, type LayerConfig } from '../src/protocol/config';
import { ComputeRuntime } from '../src/engine/compute/runtime';
import { GraphBuilder } from '../src/engine/compute/graph';
import { openBackend } from '../src/engine/backend/open';
import type { Backend } from '../src/engine/quant/backend';
import { gptq } from '../src/engine/quant/gptq';
import { lopro } from '../src/engine/quant/lopro';
import { rtn } from '../src/engine/quant/rtn';
import { layerSeed, quantizeLayer } from '../src/engine/run/quantize_layer';
import { baselineAsStored } from '../src/engine/run/stored';
import { peekDawnGpu } from '../src/engine/backend/gpu/dawn';
import { mulberry32 as rng } from '../src/engine/util/random';

const args = process.argv.slice(2);
const arg = (k: string, d: string) => {
  const i = args.indexOf(`--${k}`);
  return i >= 0 ? args[i + 1] : d;
};
const shapes = arg('shapes', '4096x4096,11008x4096,4096x11008')
  .split(',')
  .map((s) => s.split('x').map(Number) as [number, number]);
const methods = arg('methods', 'rtn,gptq,lopro,lopro-mse,lopro-act').split(',');
const backendChoice = arg('backend', 'gpu') as 'gpu' | 'cpu';
const bits = Number(arg('bits', '2'));
const threads = Number(arg('threads', '0'));
const tokens = Number(arg('tokens', '2048'));
const reps = Number(arg('reps', '1'));
const outDir = arg('out', process.env.OUT ?? path.join(process.cwd(), 'bench', 'out'));
const peerFile = arg('peer', '');
const now = () => performance.now() / 1000;
const log = (s: string) => process.stdout.write(`${s}\n`);

function normals(n: number, u: () => number, scale = 1): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i += 2) {
    const r = Math.sqrt(-2 * Math.log(u() || 1e-12)) * scale,
      th = 2 * Math.PI * u();
    out[i] = r * Math.cos(th);
    if (i + 1 < n) out[i + 1] = r * Math.sin(th);
  }
  return out;
}

function synthWeight(rows: number, cols: number, seed: number): Float32Array {
  const u = rng(seed);
  const W = normals(rows * cols, u, 1 / Math.sqrt(cols));
  const rs = normals(rows, u, 0.3).map(Math.exp),
    cs = normals(cols, u, 0.3).map(Math.exp);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) W[r * cols + c] *= rs[r] * cs[c];
  return W;
}

/** H = (2/T)·XᵀX (float32 and float64) and mean|x| per column, X built and reduced on the CPU EP. */
async function synthHessian(cpu: ComputeRuntime, cols: number, T: number, seed: number): Promise<{ H: Float64Array; H32: Float32Array; absMean: Float64Array }> {
  const u = rng(seed);
  const k = Math.max(8, Math.floor(cols / 8));
  const F = normals(T * k, u),
    B = normals(k * cols, u, 1 / Math.sqrt(k));
  const E = new Float32Array(T * cols);
  for (let i = 0; i < E.length; i++) {
    const v = -Math.log(u() || 1e-12) / Math.SQRT2;
    E[i] = u() < 0.5 ? -v : v; // Laplace, unit variance
  }
  const s = normals(cols, u, 0.5).map(Math.exp);
  for (let h = 0; h < Math.max(1, cols >> 8); h++) s[Math.floor(u() * cols)] *= 20;
  const build = () => {
    const g = new GraphBuilder('synth_hessian');
    const f = g.input('f', 'float32', ['T', 'K']),
      b = g.input('b', 'float32', ['K', 'C']),
      e = g.input('e', 'float32', ['T', 'C']),
      sc = g.input('s', 'float32', ['C']);
    const x = g.op('Mul', [g.op('Add', [g.op('Mul', [g.op('MatMul', [f, b]), g.constF32([0.8])]), g.op('Mul', [e, g.constF32([0.6])])]), sc]);
    g.output(g.op('Mul', [g.op('MatMul', [g.op('Transpose', [x], { perm: [1, 0] }), x]), g.constF32([2 / T])]), 'h');
    g.output(g.op('ReduceMean', [g.op('Abs', [x])], { axes: [0], keepdims: 0 }), 'absmean');
    return g.toModel();
  };
  const r = await cpu.runF32('bench/synth_hessian', build, { f: [F, [T, k]], b: [B, [k, cols]], e: [E, [T, cols]], s: [s, [cols]] });
  const H = Float64Array.from(r.h);
  for (let i = 0; i < cols; i++) for (let j = i + 1; j < cols; j++) H[j * cols + i] = H[i * cols + j]; // exact symmetry
  return { H, H32: Float32Array.from(H), absMean: Float64Array.from(r.absmean) };
}

/** A method name with its suffixes → the layer config. */
function configOf(method: string): LayerConfig {
  const [base, ...mods] = method.split('-');
  const c: LayerConfig = { ...DEFAULT_LAYER_CONFIG, method: base as LayerConfig['method'], bits };
  for (const m of mods) {
    if (m === 'mse') c.clip = 'mse';
    else if (m === 'act') c.actOrder = true;
    else if (m === 'static') Object.assign(c, { actOrder: true, staticGroups: true });
    else if (m === 'g1') c.groupSize = -1;
    else throw new Error(`unknown method suffix -${m} in ${method}`);
  }
  return c;
}

/** Upload + driver + Ŵ on the host: what a layer costs before its report. */
async function quantizeOnly(
  backend: Backend,
  W: Float32Array,
  rows: number,
  cols: number,
  H: Float64Array,
  H32: Float32Array,
  absMean: Float64Array,
  lc: LayerConfig,
  name: string,
): Promise<Record<string, number>> {
  const s = backend.session();
  try {
    const t0 = now();
    const Wm = await s.upload(W, rows, cols, 'W', name);
    // RTN reads no Hessian: its cell is W up, the codes, Ŵ back (what a round-to-nearest tool does).
    const Hm = lc.method === 'rtn' ? null : await s.upload(H, cols, cols, 'H', name, H32);
    const t1 = now();
    let stages: Record<string, number> = {};
    if (lc.method === 'rtn' || lc.method === 'gptq') {
      const q =
        lc.method === 'rtn'
          ? await rtn(s, Wm, { bits: lc.bits, groupSize: lc.groupSize, sym: lc.sym, clip: lc.clip })
          : await gptq(s, Wm, Hm!, {
              bits: lc.bits,
              groupSize: lc.groupSize,
              sym: lc.sym,
              clip: lc.clip,
              percDamp: lc.percDamp,
              blockSize: lc.blockSize,
              actOrder: lc.actOrder,
              staticGroups: lc.staticGroups,
              name,
            });
      if ('seconds' in q) stages = { ...q.seconds };
      await s.download(await s.reconstruct(baselineAsStored(q, rows, cols, lc, lc.actOrder || lc.staticGroups)));
    } else {
      const r = await lopro(s, Wm, Hm!, absMean, lc, layerSeed(0, name), name);
      await s.download(r.wHat);
      stages = { ...r.seconds, ...r.stageC.seconds };
    }
    return { upload: t1 - t0, total: now() - t0, ...stages };
  } finally {
    s.close();
  }
}

interface Row {
  shape: string;
  method: string;
  quantize: number;
  layer: number;
  stages: Record<string, number>;
  lossToRtn: number;
  peer?: number;
  ratio?: number;
}

async function main() {
  fs.mkdirSync(outDir, { recursive: true });
  const peer: { shape: string; bits: number; seconds_median: number }[] = peerFile && fs.existsSync(peerFile) ? JSON.parse(fs.readFileSync(peerFile, 'utf8')) : [];
  const cpu = await ComputeRuntime.create({ ep: 'cpu' });
  const { backend, why } = await openBackend(backendChoice, threads);
  log(
    `gpu_layers: backend ${backend.label} (${why}); ${os.cpus().length}× ${os.cpus()[0]?.model}; shapes ${shapes.map((s) => s.join('x')).join(',')}; methods ${methods}; W${bits}; ${reps} rep(s)`,
  );
  // Warm-up: pipelines compile once per process (not timed).
  {
    const t = now(),
      c = 640,
      W = synthWeight(64, c, 7),
      { H, H32, absMean } = await synthHessian(cpu, c, 1024, 8);
    for (const m of new Set(methods)) await quantizeLayer(backend, { name: 'warm-up', block: 0, module: 'w', rows: 64, cols: c, W, H, H32, absMean }, configOf(m), { seed: 0 });
    log(`warm-up ${(now() - t).toFixed(2)} s`);
  }
  const rows: Row[] = [];
  for (const [si, [R, C]] of shapes.entries()) {
    const shape = `${R}x${C}`;
    const t = now();
    const W = synthWeight(R, C, 1000 + si);
    const { H, H32, absMean } = await synthHessian(cpu, C, tokens, 2000 + si);
    log(`${shape}: synthetic W and H (${tokens} tokens, CPU EP) in ${(now() - t).toFixed(1)} s`);
    const peerS = peer.find((p) => p.shape === shape && p.bits === bits)?.seconds_median;
    let rtnLoss = NaN;
    for (const method of methods) {
      const lc = configOf(method);
      let best: Record<string, number> | undefined;
      for (let k = 0; k < reps; k++) {
        const q = await quantizeOnly(backend, W, R, C, H, H32, absMean, lc, `model.layers.0.${shape}`);
        if (!best || q.total < best.total) best = q;
      }
      const tl = now();
      const out = await quantizeLayer(backend, { name: `model.layers.0.${shape}`, block: 0, module: shape, rows: R, cols: C, W, H, H32, absMean }, lc, { seed: 0 });
      const layer = now() - tl;
      if (method === 'rtn') rtnLoss = out.report.proxyLoss;
      const row: Row = {
        shape,
        method,
        quantize: best!.total,
        layer,
        stages: best!,
        lossToRtn: out.report.proxyLoss / rtnLoss,
        peer: peerS,
        ratio: peerS ? best!.total / peerS : undefined,
      };
      rows.push(row);
      log(
        `${shape} ${method}: quantize ${row.quantize.toFixed(2)} s${peerS ? ` (${row.ratio!.toFixed(2)}× PyTorch ${peerS.toFixed(2)} s)` : ''}, layer ${layer.toFixed(2)} s (proxy loss ${(out.report.seconds.proxyLoss ?? 0).toFixed(2)} s), loss/RTN ${row.lossToRtn.toFixed(3)}; ${Object.entries(
          best!,
        )
          .filter(([k]) => k !== 'total')
          .map(([k, v]) => `${k} ${v.toFixed(2)}`)
          .join(', ')}`,
      );
    }
  }
  const dawn = await peekDawnGpu();
  const table = [
    `| shape | method | quantize s | PyTorch s | ratio | layer s | loss/RTN |`,
    `|---|---|---:|---:|---:|---:|---:|`,
    ...rows.map(
      (r) =>
        `| ${r.shape} | ${r.method} | ${r.quantize.toFixed(2)} | ${r.peer?.toFixed(2) ?? '-'} | ${r.ratio?.toFixed(2) ?? '-'} | ${r.layer.toFixed(2)} | ${Number.isFinite(r.lossToRtn) ? r.lossToRtn.toFixed(3) : '-'} |`,
    ),
  ].join('\n');
  log(`\n${table}\n`);
  const meta = {
    date: new Date().toISOString(),
    host: os.hostname(),
    cpus: `${os.cpus().length}× ${os.cpus()[0]?.model}`,
    backend: backend.label,
    adapter: dawn?.label,
    node: process.version,
    tokens,
    bits,
    args,
  };
  const file = path.join(outDir, `gpu_layers_${backend.kind}_${Date.now()}.json`);
  fs.writeFileSync(file, JSON.stringify({ meta, rows }, null, 1));
  log(`wrote ${file}`);
  await backend.close();
  await cpu.dispose();
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
