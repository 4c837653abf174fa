// Where the time of the 7B-shaped forward passes goes on an EP (issue 5 breakdown): per-dispatch
// overhead of a graph run, MatMul vs Gemm(transB) at the linears' shapes, XᵀX, host↔device copies,
// and each true-sequential pass of one LLaMA-2-7B-shaped block (B windows × 512 tokens) with x on the
// host vs already on the device. GPU work is timed to completion: every timed sequence ends with a
// readback of a one-value reduction of its last output (the WebGPU queue is in order).
//
//   node --import tsx bench/ep_profile.ts [--ep webgpu] [--hidden 4096] [--mlp 11008] [--heads 32] [--batch 8] [--reps 3]

import { fillUniform } from './fill';
import { ComputeRuntime, type EpName, type Tensor } from '../src/engine/compute/runtime';
import { GraphBuilder } from '../src/engine/compute/graph';
import { parseLlamaConfig, type LinearInput } from '../src/engine/model/config';
import { LlamaForward, type BlockWeights } from '../src/engine/model/llama_forward';
import { blockTensorSuffixes, buildBlockGraph, type Capture } from '../src/engine/model/llama_graph';
import { expectedShapes } from '../src/engine/model/config';
import { r1svdDevice } from '../src/engine/quant/r1svd_device';
import { choleskyInverseUpper } from '../src/engine/linalg/cholesky';

const args = process.argv.slice(2);
const arg = (k: string, d: string) => { const i = args.indexOf(`--${k}`); return i >= 0 ? args[i + 1] : d; };
const ep = arg('ep', 'webgpu') as EpName;
const hidden = Number(arg('hidden', '4096')), mlp = Number(arg('mlp', '11008')), heads = Number(arg('heads', '32'));
const B = Number(arg('batch', '8')), T = 512, reps = Number(arg('reps', '3'));

const rows: [string, string, string][] = [];
const row = (what: string, ms: number, note = '') => {
  rows.push([what, ms.toFixed(2), note]);
  console.log(`${what.padEnd(58)} ${ms.toFixed(2).padStart(10)} ms  ${note}`);
};


async function main(): Promise<void> {
  const rt = await ComputeRuntime.create({ ep });
  const dev = rt.keepsDataOnDevice ? 'device' : 'host';
  // One-value readback that waits for everything queued before it.
  const syncModel = (rank: number) => {
    const g = new GraphBuilder('sync');
    const x = g.input('x', 'float32', Array.from({ length: rank }, (_, i) => `d${i}`));
    const flat = g.op('Reshape', [x, g.constI64([-1])]);
    g.output(g.op('Slice', [flat, g.constI64([0]), g.constI64([1])]), 'y');
    return g.toModel();
  };
  const sync = async (t: Tensor) => {
    if (t.location === 'cpu') return;
    const s = await rt.session(`sync${t.dims.length}`, () => syncModel(t.dims.length), 'host');
    await rt.run(s, { x: t });
  };
  const time = async (n: number, step: () => Promise<Tensor>) => {
    let last = await step(); // warm-up (session creation, shader compilation)
    await sync(last);
    rt.release(last);
    const t0 = performance.now();
    for (let i = 0; i < n; i++) {
      const o = await step();
      if (i === n - 1) last = o;
      else rt.release(o);
    }
    await sync(last);
    rt.release(last);
    return (performance.now() - t0) / n;
  };
  const up = (data: Float32Array, dims: number[]) => rt.upload(rt.host(data, dims));

  // 1. Dispatch overhead: K chained elementwise ops on a [4096, 128] tensor (a GPTQ block's size).
  const small = await up(fillUniform(4096 * 128, 1, 1), [4096, 128]);
  for (const K of [1, 64, 512]) {
    const s = await rt.session(`chain${K}`, () => {
      const g = new GraphBuilder('chain');
      let v = g.input('x', 'float32', [4096, 128]);
      for (let k = 0; k < K; k++) v = g.op(k % 2 ? 'Mul' : 'Add', [v, g.constF32([k % 2 ? 0.999 : 0.001])]);
      g.output(v, 'y');
      return g.toModel();
    }, dev);
    const ms = await time(20, async () => (await rt.run(s, { x: small })).y);
    row(`run of ${K} chained Add/Mul on [4096,128], device in/out`, ms, `${((ms * 1000) / K).toFixed(1)} µs/op`);
  }

  // 2. Copies.
  const x64 = fillUniform(B * T * hidden, 2, 2);
  let t0 = performance.now();
  for (let i = 0; i < reps; i++) rt.release(await up(x64, [B * T, hidden]));
  row(`upload x [${B}·512, ${hidden}] (${((x64.length * 4) / 2 ** 20).toFixed(0)} MiB)`, (performance.now() - t0) / reps, `${((x64.length * 4 * reps) / ((performance.now() - t0) * 1e6)).toFixed(2)} GB/s`);
  const xDev = await up(x64, [B * T, hidden]);
  t0 = performance.now();
  for (let i = 0; i < reps; i++) await rt.download(xDev);
  row(`download x [${B}·512, ${hidden}]`, (performance.now() - t0) / reps, `${((x64.length * 4 * reps) / ((performance.now() - t0) * 1e6)).toFixed(2)} GB/s`);

  // 3. Linears: Gemm(transB=1) on [out, in] (what the block graph uses) vs MatMul on a pre-transposed [in, out].
  for (const [o, i] of [[hidden, hidden], [mlp, hidden], [hidden, mlp]] as const) {
    const xin = i === hidden ? xDev : await up(fillUniform(B * T * i, 2, 3), [B * T, i]);
    const w = await up(fillUniform(o * i, 0.02, 4), [o, i]);
    const wt = await up(fillUniform(o * i, 0.02, 5), [i, o]);
    const gemm = await rt.session(`gemmT${o}x${i}`, () => {
      const g = new GraphBuilder('gemm');
      g.output(g.op('Gemm', [g.input('x', 'float32', ['n', i]), g.input('w', 'float32', [o, i])], { transB: 1 }), 'y');
      return g.toModel();
    }, dev);
    const mm = await rt.session(`mm${o}x${i}`, () => {
      const g = new GraphBuilder('mm');
      g.output(g.op('MatMul', [g.input('x', 'float32', ['n', i]), g.input('w', 'float32', [i, o])]), 'y');
      return g.toModel();
    }, dev);
    const flop = 2 * B * T * o * i;
    const a = await time(reps * 2, async () => (await rt.run(gemm, { x: xin, w })).y);
    row(`Gemm transB x[${B * T},${i}]·W[${o},${i}]ᵀ`, a, `${(flop / a / 1e9).toFixed(1)} TFLOP/s`);
    const b = await time(reps * 2, async () => (await rt.run(mm, { x: xin, w: wt })).y);
    row(`MatMul x[${B * T},${i}]·Wt[${i},${o}]`, b, `${(flop / b / 1e9).toFixed(1)} TFLOP/s`);
    // XᵀX of this input: Gemm(transA) vs MatMul(Transpose(x), x)
    const xtxG = await rt.session(`xtxG${i}`, () => {
      const g = new GraphBuilder('xtx');
      const x = g.input('x', 'float32', ['n', i]);
      g.output(g.op('Gemm', [x, x], { transA: 1 }), 'y');
      return g.toModel();
    }, dev);
    const xtxM = await rt.session(`xtxM${i}`, () => {
      const g = new GraphBuilder('xtx');
      const x = g.input('x', 'float32', ['n', i]);
      g.output(g.op('MatMul', [g.op('Transpose', [x], { perm: [1, 0] }), x]), 'y');
      return g.toModel();
    }, dev);
    const f2 = 2 * B * T * i * i;
    const c = await time(reps, async () => (await rt.run(xtxG, { x: xin })).y);
    row(`XᵀX Gemm transA x[${B * T},${i}]`, c, `${(f2 / c / 1e9).toFixed(1)} TFLOP/s`);
    const d = await time(reps, async () => (await rt.run(xtxM, { x: xin })).y);
    row(`XᵀX MatMul(Transpose) x[${B * T},${i}]`, d, `${(f2 / d / 1e9).toFixed(1)} TFLOP/s`);
    rt.release(w, wt);
    if (xin !== xDev) rt.release(xin);
  }

  // 3b. The other ops of the stats passes, alone: RMSNorm, Σ|x| over rows (three ways), Transpose, attention core.
  const one = async (name: string, build: (g: GraphBuilder) => void, feeds: Record<string, Tensor>, note = '') => {
    const s = await rt.session(`op:${name}`, () => {
      const g = new GraphBuilder(name);
      build(g);
      return g.toModel();
    }, dev);
    const outName = s.outputNames[0];
    row(name, await time(reps, async () => (await rt.run(s, feeds))[outName]), note);
  };
  const big = await up(fillUniform(B * T * mlp, 2, 7), [B * T, mlp]);
  const onesN = rt.host(new Float32Array(B * T).fill(1), [1, B * T]);
  for (const [xv, n] of [[xDev, hidden], [big, mlp]] as const) {
    await one(`RMSNorm x[${B * T},${n}]`, (g) => {
      const x = g.input('x', 'float32', ['N', n]);
      const ms = g.op('ReduceMean', [g.op('Mul', [x, x])], { axes: [-1], keepdims: 1 });
      g.output(g.op('Div', [x, g.op('Sqrt', [g.op('Add', [ms, g.constF32(1e-5)])])]), 'y');
    }, { x: xv });
    await one(`ReduceSum(Abs(x), axis 0) x[${B * T},${n}]`, (g) => {
      const x = g.input('x', 'float32', ['N', n]);
      g.output(g.op('Reshape', [g.op('ReduceSum', [g.op('Abs', [x]), g.constI64([0])], { keepdims: 1 }), g.constI64([1, -1])]), 'y');
    }, { x: xv });
    await one(`ReduceL1(x, axis 0) x[${B * T},${n}]`, (g) => {
      const x = g.input('x', 'float32', ['N', n]);
      g.output(g.op('ReduceL1', [x], { axes: [0], keepdims: 1 }), 'y');
    }, { x: xv });
    await one(`MatMul(ones[1,N], Abs(x)) x[${B * T},${n}]`, (g) => {
      const x = g.input('x', 'float32', ['N', n]);
      g.output(g.op('MatMul', [g.input('ones', 'float32', [1, 'N']), g.op('Abs', [x])]), 'y');
    }, { x: xv, ones: onesN });
    await one(`Transpose x[${B * T},${n}]`, (g) => {
      const x = g.input('x', 'float32', ['N', n]);
      g.output(g.op('Transpose', [x], { perm: [1, 0] }), 'y');
    }, { x: xv });
  }
  rt.release(big);
  const hd = hidden / heads;
  const qkv = await up(fillUniform(B * heads * T * hd, 1, 8), [B, heads, T, hd]);
  await one(`attention core q,k,v [${B},${heads},${T},${hd}] (4-D MatMul, Softmax)`, (g) => {
    const q = g.input('q', 'float32', [B, heads, T, hd]);
    const sc = g.op('MatMul', [q, g.op('Transpose', [q], { perm: [0, 1, 3, 2] })]);
    g.output(g.op('Reshape', [g.op('MatMul', [g.op('Softmax', [sc], { axis: -1 }), q]), g.constI64([-1, hd])]), 'y');
  }, { q: qkv });
  await one(`attention core, 5-D [${B},${heads},1,${T},${hd}] as the block graph`, (g) => {
    const q = g.input('q', 'float32', [B, heads, T, hd]);
    const q5 = g.op('Reshape', [q, g.constI64([B, heads, 1, T, hd])]);
    const sc = g.op('MatMul', [q5, g.op('Transpose', [q5], { perm: [0, 1, 2, 4, 3] })]);
    g.output(g.op('Reshape', [g.op('MatMul', [g.op('Softmax', [sc], { axis: -1 }), q5]), g.constI64([-1, hd])]), 'y');
  }, { q: qkv });
  rt.release(qkv);

  // 3c. R1SVD's mat-vecs (A [mlp, hidden] resident): MatMul with a vector vs Mul + ReduceSum, and r1svdDevice itself.
  {
    const m = mlp, n = hidden;
    const Ah = fillUniform(m * n, 0.02, 11);
    const A = await up(Ah, [m, n]);
    const xv = rt.host(fillUniform(n, 1, 12), [n, 1]), xr = rt.host(fillUniform(n, 1, 12), [1, n]), yr = rt.host(fillUniform(m, 1, 13), [1, m]);
    await one(`mat-vec MatMul A[${m},${n}]·x[${n},1]`, (g) => g.output(g.op('MatMul', [g.input('a', 'float32', [m, n]), g.input('x', 'float32', [n, 1])]), 'y'), { a: A, x: xv });
    await one(`mat-vec ReduceSum(A ⊙ xᵀ, axis 1) A[${m},${n}]`, (g) => g.output(g.op('ReduceSum', [g.op('Mul', [g.input('a', 'float32', [m, n]), g.input('x', 'float32', [1, n])]), g.constI64([1])], { keepdims: 1 }), 'y'), { a: A, x: xr });
    await one(`vec-mat MatMul y[1,${m}]·A[${m},${n}]`, (g) => g.output(g.op('MatMul', [g.input('y', 'float32', [1, m]), g.input('a', 'float32', [m, n])]), 'z'), { a: A, y: yr });
    rt.release(A);
    const t1 = performance.now();
    const st = { runs: 0, uploadSeconds: 0, matvecSeconds: 0 };
    await r1svdDevice(rt, Ah, m, n, { rank: 16, powerIters: 2, seed: 1 }, st);
    row(`r1svdDevice A[${m},${n}] rank 16, 2 power iterations (first call: sessions)`, performance.now() - t1, `${st.runs} runs, upload ${st.uploadSeconds.toFixed(2)} s, rounds ${st.matvecSeconds.toFixed(2)} s`);
    const t2 = performance.now();
    const st2 = { runs: 0, uploadSeconds: 0, matvecSeconds: 0 };
    await r1svdDevice(rt, Ah, m, n, { rank: 16, powerIters: 2, seed: 1 }, st2);
    row(`r1svdDevice A[${m},${n}] rank 16, 2 power iterations (again)`, performance.now() - t2, `${st2.runs} runs, upload ${st2.uploadSeconds.toFixed(2)} s, rounds ${st2.matvecSeconds.toFixed(2)} s`);
  }

  // 3d. GPTQ's Cholesky of H⁻¹ on the EP (linalg/cholesky.ts 'device' engine) at the 7B widths, two leaf sizes.
  for (const n of [hidden, mlp]) {
    const Hs = new Float64Array(n * n);
    const e = fillUniform(n * n, 1, 21);
    for (let i = 0; i < n; i++) for (let j = 0; j <= i; j++) Hs[i * n + j] = Hs[j * n + i] = i === j ? 2 + Math.abs(e[i * n + j]) : (e[i * n + j] + e[j * n + i]) / n;
    for (const leaf of [256, 512]) {
      rt.resetCounters();
      const t1 = performance.now();
      await choleskyInverseUpper(Hs, n, { rt, leaf });
      const c = rt.counters;
      row(`choleskyInverseUpper n=${n} leaf ${leaf}`, performance.now() - t1, `${c.runs} runs (${(c.runMs / 1000).toFixed(2)} s), h2d ${(c.h2dBytes / 2 ** 20).toFixed(0)} MiB, d2h ${(c.d2hBytes / 2 ** 20).toFixed(0)} MiB, sessions ${c.sessionsCreated}`);
    }
  }

  // 4. The pipeline's passes on one 7B-shaped block.
  const cfg = parseLlamaConfig({ model_type: 'llama', hidden_size: hidden, intermediate_size: mlp, num_hidden_layers: 1, num_attention_heads: heads, num_key_value_heads: heads, vocab_size: 32000, rms_norm_eps: 1e-5 }, 'ep_profile');
  const fwd = new LlamaForward(cfg, T, rt);
  const shapes = expectedShapes(cfg, 0);
  const w: BlockWeights = {};
  let seed = 10;
  for (const sfx of blockTensorSuffixes(cfg)) {
    const n = shapes.get(`model.layers.0.${sfx}`)!.reduce((a, b) => a * b, 1);
    w[sfx] = sfx.endsWith('norm.weight') ? new Float32Array(n).fill(1) : fillUniform(n, 2 / Math.sqrt(hidden), seed++);
  }
  t0 = performance.now();
  const wT = await fwd.weightTensors(w);
  const wMB = Object.values(w).reduce((a, v) => a + v.length * 4, 0) / 2 ** 20;
  row(`upload block weights (${wMB.toFixed(0)} MiB)`, performance.now() - t0, `${((wMB * 2 ** 20) / ((performance.now() - t0) * 1e6)).toFixed(2)} GB/s`);
  const xb = rt.host(x64, [B, T, hidden]);
  const xbDev = await rt.upload(xb);
  row(`weight layout of the block graphs: ${fwd.layout}`, 0);
  for (const cap of ['stats:attn_in', 'stats:attn_out', 'stats:mlp_in', 'stats:mlp_act', 'none'] as Capture[]) {
    const isStats = cap.startsWith('stats:');
    // The engine's graphs as the pipeline runs them: its weight layout (transposed on a GPU), the ones row.
    const sHost = await rt.session(`prof:${cap}:host`, () => buildBlockGraph(cfg, T, cap, fwd.layout), 'host');
    const sDev = await rt.session(`prof:${cap}:dev`, () => buildBlockGraph(cfg, T, cap, fwd.layout), dev);
    const outName = isStats ? `${cap.slice(6) as LinearInput}_xtx` : 'y';
    const extra: Record<string, Tensor> = isStats ? { ones: await rt.upload(rt.host(new Float32Array(B * T).fill(1), [1, B * T])) } : {};
    const a = await time(reps, async () => (await rt.run(sHost, { x: xb, ...wT, ...extra }))[outName]);
    const b = await time(reps, async () => (await rt.run(sDev, { x: xbDev, ...wT, ...extra }))[outName]).catch(() => NaN);
    row(`pass ${cap}: x on host, outputs to host`, a);
    if (!Number.isNaN(b)) row(`pass ${cap}: x on device, outputs on device`, b);
  }
  console.log(`\ncounters: ${JSON.stringify(rt.counters)}`);
  console.log('\n| what | ms | note |\n|---|---:|---|');
  for (const r of rows) console.log(`| ${r.join(' | ')} |`);
  await rt.dispose();
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
