// Why a Hessian-statistics pass costs ~300 ms more per batch than a full block forward on WebGPU
// (bench/ep_profile.ts, H100: stats:attn_in 400 ms vs none 93 ms): the pass's graph and pieces of it,
// at ORT's optimisation levels 'all' and 'basic', timed with x and outputs on the device; plus ORT's
// profiler on the 'all' session, listing every node ORT placed on the CPU EP and the slowest nodes.
//
//   node --import tsx bench/stats_probe.ts [--ep webgpu] [--hidden 4096] [--batch 8] [--out DIR]

import { fillUniform } from './fill';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as ort from 'onnxruntime-node';
import { ComputeRuntime, type Tensor } from '../src/engine/compute/runtime';
import { GraphBuilder } from '../src/engine/compute/graph';
import { parseLlamaConfig } from '../src/engine/model/config';
import { blockTensorSuffixes, buildBlockGraph } from '../src/engine/model/llama_graph';
import { LlamaForward } from '../src/engine/model/llama_forward';
import { expectedShapes } from '../src/engine/model/config';

const args = process.argv.slice(2);
const arg = (k: string, d: string) => {
  const i = args.indexOf(`--${k}`);
  return i >= 0 ? args[i + 1] : d;
};
const H = Number(arg('hidden', '4096')),
  B = Number(arg('batch', '8')),
  T = 512;
const outDir = arg('out', process.env.OUT ?? '.');
const ep = arg('ep', 'webgpu');
const loc = (l: 'gpu-buffer' | 'cpu') => (ep === 'webgpu' ? { preferredOutputLocation: l } : {});

function piece(kind: string): Uint8Array {
  const g = new GraphBuilder(kind);
  const x = g.input('x', 'float32', ['B', T, H]);
  const w = g.input('input_layernorm.weight', 'float32', [H]);
  const x2 = g.op('Reshape', [x, g.constI64([-1, H])]);
  const norm = () => {
    const ms = g.op('ReduceMean', [g.op('Mul', [x2, x2])], { axes: [-1], keepdims: 1 });
    return g.op('Mul', [g.op('Div', [x2, g.op('Sqrt', [g.op('Add', [ms, g.constF32(1e-5)])])]), w]);
  };
  if (kind === 'norm+gemmTA') {
    const v = norm();
    g.output(g.op('Gemm', [v, v], { transA: 1 }), 'y');
  }
  if (kind === 'gemmTA') g.output(g.op('Gemm', [x2, x2], { transA: 1 }), 'y');
  if (kind === 'norm+matmulT') {
    const v = norm();
    g.output(g.op('MatMul', [g.op('Transpose', [v], { perm: [1, 0] }), v]), 'y');
  }
  if (kind === 'norm') g.output(norm(), 'y');
  return g.toModel();
}

async function main(): Promise<void> {
  const rt = await ComputeRuntime.create({ ep: ep as 'webgpu' | 'cpu' });
  const cfg = parseLlamaConfig({ model_type: 'llama', hidden_size: H, intermediate_size: 11008, num_hidden_layers: 1, num_attention_heads: 32, vocab_size: 32000 }, 'probe');
  const x = await rt.upload(rt.host(fillUniform(B * T * H, 1, 1), [B, T, H]));
  const nw = await rt.upload(rt.host(new Float32Array(H).fill(1), [H]));
  const ones = await rt.upload(rt.host(new Float32Array(B * T).fill(1), [1, B * T]));
  // The engine graph declares every block weight as an input (the pass reads only the norm): all fed, once uploaded.
  const fwd = new LlamaForward(cfg, T, rt, ep === 'webgpu' ? 'in_out' : 'out_in');
  const shapes = expectedShapes(cfg, 0),
    w: Record<string, Float32Array> = {};
  for (const sfx of blockTensorSuffixes(cfg)) w[sfx] = new Float32Array(shapes.get(`model.layers.0.${sfx}`)!.reduce((a, b) => a * b, 1)).fill(0.01);
  const wT = await fwd.weightTensors(w);
  const graphs: [string, Uint8Array, Record<string, Tensor>][] = [
    ['engine stats:attn_in', buildBlockGraph(cfg, T, 'stats:attn_in', fwd.layout), { ...wT, x, 'input_layernorm.weight': nw, ones }],
    ...['norm+gemmTA', 'gemmTA', 'norm+matmulT', 'norm'].map((k) => [k, piece(k), { x, 'input_layernorm.weight': nw }] as [string, Uint8Array, Record<string, Tensor>]),
  ];
  const syncModel = () => {
    const g = new GraphBuilder('sync');
    const v = g.input('v', 'float32', ['a', 'b']);
    g.output(g.op('Slice', [g.op('Reshape', [v, g.constI64([-1])]), g.constI64([0]), g.constI64([1])]), 'y');
    return g.toModel();
  };
  const sync = await ort.InferenceSession.create(syncModel(), { executionProviders: [ep], ...loc('cpu') });
  for (const [name, model, feeds] of graphs)
    for (const level of ['all', 'basic'] as const) {
      const prof = level === 'all' && name.startsWith('engine');
      const s = await ort.InferenceSession.create(model, {
        executionProviders: [ep],
        ...loc('gpu-buffer'),
        graphOptimizationLevel: level,
        logSeverityLevel: 3,
        ...(prof ? { enableProfiling: true, profileFilePrefix: path.join(outDir, 'stats_attn_in') } : {}),
      });
      const f: Record<string, Tensor> = {};
      for (const n of s.inputNames) f[n] = feeds[n];
      const out0 = (await s.run(f))[s.outputNames[0]];
      await sync.run({ v: out0 });
      out0.dispose();
      const t0 = performance.now();
      let last: Tensor | undefined;
      for (let i = 0; i < 3; i++) {
        const o = await s.run(f);
        for (const k of s.outputNames.slice(1)) o[k].dispose();
        if (last) last.dispose();
        last = o[s.outputNames[0]];
      }
      await sync.run({ v: last! });
      console.log(`${name.padEnd(24)} level ${level.padEnd(5)} ${((performance.now() - t0) / 3).toFixed(1).padStart(8)} ms per run`);
      last!.dispose();
      if (prof) s.endProfiling();
      await s.release();
    }
  // The profile: nodes per provider, the CPU-placed ones by name, the slowest ten.
  const file = fs
    .readdirSync(outDir)
    .filter((f) => f.startsWith('stats_attn_in') && f.endsWith('.json'))
    .map((f) => path.join(outDir, f))[0];
  if (file) {
    await new Promise((r) => setTimeout(r, 500));
    let text = fs.readFileSync(file, 'utf8').trim();
    if (!text.endsWith(']')) text = text.replace(/,\s*$/, '') + ']'; // the profiler may not have closed the array yet
    const ev = JSON.parse(text) as { cat: string; name: string; dur: number; args?: { op_name?: string; provider?: string } }[];
    const nodes = ev.filter((e) => e.cat === 'Node' && e.name.endsWith('_kernel_time'));
    const byProv = new Map<string, number>();
    for (const e of nodes) byProv.set(e.args?.provider ?? '?', (byProv.get(e.args?.provider ?? '?') ?? 0) + 1);
    console.log(`profile ${file}: ${nodes.length} kernel events; by provider ${JSON.stringify(Object.fromEntries(byProv))}`);
    const cpu = new Set(nodes.filter((e) => e.args?.provider === 'CPUExecutionProvider').map((e) => `${e.args?.op_name}:${e.name.replace(/_kernel_time$/, '')}`));
    console.log(`on the CPU EP: ${[...cpu].join(', ') || 'none'}`);
    const agg = new Map<string, number>();
    for (const e of nodes)
      agg.set(
        `${e.args?.op_name} ${e.name.replace(/_kernel_time$/, '')} [${e.args?.provider}]`,
        (agg.get(`${e.args?.op_name} ${e.name.replace(/_kernel_time$/, '')} [${e.args?.provider}]`) ?? 0) + e.dur,
      );
    for (const [k, d] of [...agg].sort((a, b) => b[1] - a[1]).slice(0, 12)) console.log(`  ${(d / 1000).toFixed(2).padStart(9)} ms  ${k}`);
    const mem = ev.filter((e) => e.cat === 'Session').map((e) => `${e.name} ${(e.dur / 1000).toFixed(1)} ms`);
    console.log(`session events: ${mem.slice(0, 12).join('; ')}`);
  }
  await rt.dispose();
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
