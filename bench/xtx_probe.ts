// Probe: the statistics graph's XᵀX of a wide input (a 70B down_proj's, n = 28672) on an ORT GPU EP, one way per
// process, with the GPU's memory sampled by nvidia-smi. It ran the H100 out of memory (81 GB) inside the pipeline;
// this isolates which graph does it.
//   node .gpu/bench/xtx_probe.js --way gemm|matmul [--n 28672] [--rows 4096] [--part-mb 1024] [--batches 3] [--ep webgpu]
import { execFileSync } from 'node:child_process';
import { ComputeRuntime } from '../src/engine/compute/runtime';
import { GraphBuilder } from '../src/engine/compute/graph';
import type { Tensor } from 'onnxruntime-common';

const arg = (k: string, d: string) => {
  const i = process.argv.indexOf(`--${k}`);
  return i > 0 ? process.argv[i + 1] : d;
};
const way = arg('way', 'gemm'),
  n = Number(arg('n', '28672')),
  rows = Number(arg('rows', '4096')),
  partBytes = Number(arg('part-mb', '1024')) * 2 ** 20,
  batches = Number(arg('batches', '3')),
  deviceInput = process.argv.includes('--device-input'),
  hostTick = process.argv.includes('--host-tick');

const gpuMiB = () => {
  try {
    return Number(execFileSync('nvidia-smi', ['--query-gpu=memory.used', '--format=csv,noheader,nounits']).toString().trim());
  } catch {
    return -1;
  }
};

const per = Math.max(1, Math.floor(partBytes / (4 * n)));
const parts: [number, number][] = [];
for (let r = 0; r < n; r += per) parts.push([r, Math.min(n, r + per)]);

function model(acc: boolean): Uint8Array {
  const g = new GraphBuilder(`xtx_${way}`);
  const v = g.input('v', 'float32', ['BT', n]);
  const vt = way === 'matmul' ? g.op('Transpose', [v], { perm: [1, 0] }) : undefined;
  parts.forEach(([r0, r1], p) => {
    const c = acc ? [g.input(`acc.${p}`, 'float32', [r1 - r0, n])] : [];
    let y: ReturnType<GraphBuilder['op']>;
    if (way === 'matmul') {
      const a = parts.length === 1 ? vt! : g.op('Slice', [vt!, g.constI64([r0]), g.constI64([r1]), g.constI64([0])]);
      y = g.op('MatMul', [a, v]);
      if (acc) y = g.op('Add', [y, c[0]]);
    } else {
      const xp = parts.length === 1 ? v : g.op('Slice', [v, g.constI64([r0]), g.constI64([r1]), g.constI64([1])]);
      y = g.op('Gemm', [xp, v, ...c], { transA: 1 });
    }
    g.output(y, `xtx.${p}`);
  });
  // A small output read on the host at every run: ORT then waits for the GPU (and Dawn may free what it deferred).
  if (hostTick) g.output(g.op('ReduceSum', [v], { keepdims: 0 }), 'tick');
  return g.toModel();
}

async function main(): Promise<void> {
  const rt = await ComputeRuntime.create({ ep: (arg('ep', 'webgpu') as 'webgpu') ?? 'webgpu' });
  const names = parts.map((_, p) => `xtx.${p}`);
  const place = { ...Object.fromEntries(names.map((k) => [k, 'device' as const])), ...(hostTick ? { tick: 'host' as const } : {}) };
  const first = await rt.session('first', () => model(false), place);
  const next = await rt.session('next', () => model(true), place);
  const v = new Float32Array(rows * n);
  for (let i = 0; i < v.length; i++) v[i] = Math.sin(i * 0.618);
  const vDev = deviceInput ? await rt.upload(rt.host(v, [rows, n])) : undefined;
  console.log(`way ${way}, n ${n}, rows ${rows}, ${parts.length} parts of ≤ ${per} rows; GPU ${gpuMiB()} MiB before`);
  let acc: Record<string, Tensor> | undefined;
  const tAll = performance.now();
  for (let b = 0; b < batches; b++) {
    const t0 = performance.now();
    const feeds: Record<string, Tensor> = { v: vDev ?? rt.host(v, [rows, n]) };
    if (acc) names.forEach((k, p) => (feeds[`acc.${p}`] = acc![k]));
    if (acc) delete acc.tick;
    try {
      const out = await rt.run(acc ? next : first, feeds);
      if (acc) rt.release(...Object.values(acc));
      acc = out;
    } catch (e) {
      console.log(`batch ${b}: FAILED ${String(e).split('\n')[0].slice(0, 200)}; GPU ${gpuMiB()} MiB`);
      process.exit(1);
    }
    console.log(`batch ${b}: ${(performance.now() - t0).toFixed(0)} ms, GPU ${gpuMiB()} MiB, RSS ${(process.memoryUsage().rss / 2 ** 20).toFixed(0)} MiB`);
  }
  const h = await rt.download(acc![names[0]]);
  // Device outputs may return before the GPU is done: the total runs to the first download, which waits for it.
  const sec = (performance.now() - tAll) / 1e3;
  console.log(`total ${batches} batches + download: ${sec.toFixed(3)} s, ${((2 * rows * n * n * batches) / sec / 1e12).toFixed(1)} TFLOP/s`);
  console.log(`xtx[0][0] = ${h[0]} (expected ${batches * v.filter((_, i) => i % n === 0).reduce((s, x) => s + x * x, 0)}); GPU ${gpuMiB()} MiB`);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
