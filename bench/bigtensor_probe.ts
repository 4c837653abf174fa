// Does the WebGPU EP's slow path for tensors over 128 MiB (found on the GPTQ loop's lazy update,
// bench/loop_probe.ts) also cost the Hessian of a 7B down_proj input (n = 11008: XᵀX is 485 MB)?
// Times, each enqueued `reps` times then synced by reading one value: the running sum acc + XᵀX as
// the statistics pass computes it, whole and as row blocks of ≤ 121 MB, and the finalize step
// (S + Sᵀ)·c. Issue 5, session 4: evidence for the next step, not a product path.
//
//   node --import tsx bench/bigtensor_probe.ts [--ep webgpu] [--n 11008] [--tokens 4096] [--blocks 4] [--reps 5]

import { ComputeRuntime, type EpName, type Tensor } from '../src/engine/compute/runtime';
import { GraphBuilder, type Value } from '../src/engine/compute/graph';
import { fillUniform } from './fill';

const args = process.argv.slice(2);
const arg = (k: string, d: string) => {
  const i = args.indexOf(`--${k}`);
  return i >= 0 ? args[i + 1] : d;
};
const ep = arg('ep', 'webgpu') as EpName;
const n = Number(arg('n', '11008')),
  T = Number(arg('tokens', '4096')),
  K = Number(arg('blocks', '4')),
  reps = Number(arg('reps', '5'));

async function main(): Promise<void> {
  const rt = await ComputeRuntime.create({ ep });
  const dev = rt.keepsDataOnDevice ? 'device' : 'host';
  console.log(`bigtensor_probe: EP ${rt.ep}, n ${n} (${((n * n * 4) / 2 ** 20).toFixed(0)} MiB per n×n), tokens ${T}, ${K} row blocks, reps ${reps}`);
  const cut = (i: number) => Math.round((i * n) / K);
  /** A graph whose first output is synced by one value; every output stays on the device. */
  const timed = async (label: string, build: (g: GraphBuilder) => Value[], feeds: Record<string, Tensor>) => {
    const s = await rt.session(
      `bigtensor/${label}`,
      () => {
        const g = new GraphBuilder('bigtensor');
        const outs = build(g);
        outs.forEach((v, i) => g.output(v, `y${i}`));
        g.output(g.op('Slice', [g.op('Reshape', [outs[0], g.constI64([-1])]), g.constI64([0]), g.constI64([1])]), 'one');
        return g.toModel();
      },
      dev,
    );
    const run = async () => rt.run(s, feeds);
    const warm = await run();
    await rt.download(warm.one);
    for (const t of Object.values(warm)) rt.release(t);
    const t0 = performance.now();
    let last: Record<string, Tensor> = {};
    for (let r = 0; r < reps; r++) {
      for (const t of Object.values(last)) rt.release(t);
      last = await run();
    }
    await rt.download(last.one);
    for (const t of Object.values(last)) rt.release(t);
    const ms = (performance.now() - t0) / reps;
    console.log(`${label.padEnd(70)} ${ms.toFixed(2).padStart(9)} ms`);
  };
  const x = await rt.upload(rt.host(fillUniform(T * n, 1, 1), [T, n]));
  const acc = await rt.upload(rt.host(fillUniform(n * n, 1, 2), [n, n]));
  const accs: Tensor[] = [];
  for (let i = 0; i < K; i++) accs.push(await rt.upload(rt.host(fillUniform((cut(i + 1) - cut(i)) * n, 1, 3 + i), [cut(i + 1) - cut(i), n])));
  const xt = (g: GraphBuilder) => {
    const xi = g.input('x', 'float32', [T, n]);
    return { xi, xT: g.op('Transpose', [xi], { perm: [1, 0] }) };
  };
  const rows = (g: GraphBuilder, v: Value, a: number, b: number) => g.op('Slice', [v, g.constI64([a]), g.constI64([b]), g.constI64([0])]);
  await timed(
    'XᵀX alone, one [n, n] output',
    (g) => {
      const { xi, xT } = xt(g);
      return [g.op('MatMul', [xT, xi])];
    },
    { x },
  );
  await timed(
    'acc + XᵀX, one [n, n] accumulator (the stats pass today)',
    (g) => {
      const { xi, xT } = xt(g);
      return [g.op('Add', [g.input('acc', 'float32', [n, n]), g.op('MatMul', [xT, xi])])];
    },
    { x, acc },
  );
  await timed(
    `acc_k + X[:, rows k]ᵀX, ${K} row-block accumulators`,
    (g) => {
      const { xi, xT } = xt(g);
      return accs.map((_, k) => g.op('Add', [g.input(`acc${k}`, 'float32', [cut(k + 1) - cut(k), n]), g.op('MatMul', [rows(g, xT, cut(k), cut(k + 1)), xi])]));
    },
    { x, ...Object.fromEntries(accs.map((t, k) => [`acc${k}`, t])) },
  );
  await timed(
    'finalize (S + Sᵀ)·c on one [n, n]',
    (g) => {
      const sIn = g.input('acc', 'float32', [n, n]);
      return [g.op('Mul', [g.op('Add', [sIn, g.op('Transpose', [sIn], { perm: [1, 0] })]), g.constF32(0.5)])];
    },
    { acc },
  );
  rt.release(x, acc, ...accs);
  await rt.dispose();
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
