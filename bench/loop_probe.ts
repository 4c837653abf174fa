// What one batch of the device GPTQ column loop costs on an EP, and why (issue 5, session 4): the
// dispatch floor (a chain of elementwise ops on a [R, 128] block), the column update alone
// (x −= col·row, broadcast Mul + Sub), and the product's batch graph (quant/gptq_device_loop.ts) in its
// two forms — 'direct' (11 nodes per column) and 'shifted' (7) — with Hinv's rows fed from the host, already
// on the device, and sliced in the graph from U kept on the device (the product's default since session 4). The WebGPU context options come from LOPRO_WEBGPU_OPTIONS
// and are fixed per process, so an A/B of e.g. validationMode runs this script once per setting.
//
//   node --import tsx bench/loop_probe.ts [--ep webgpu] [--rows 4096,11008] [--cols 4096] [--reps 5] [--json FILE]

import { fillUniform } from './fill';
import { writeFileSync } from 'node:fs';
import { ComputeRuntime, webgpuOptions, type EpName, type Tensor } from '../src/engine/compute/runtime';
import { GraphBuilder } from '../src/engine/compute/graph';
import { batchModel, type BatchShape, type LoopForm } from '../src/engine/quant/gptq_device_loop';
import { chunkRows } from '../src/engine/quant/r1svd_device';

const args = process.argv.slice(2);
const arg = (k: string, d: string) => { const i = args.indexOf(`--${k}`); return i >= 0 ? args[i + 1] : d; };
const ep = arg('ep', 'webgpu') as EpName;
const rowsList = arg('rows', '4096,11008').split(',').map(Number);
const C = Number(arg('cols', '4096')), reps = Number(arg('reps', '5')), B = 128;


/** An upper-triangular [B, C] block with a unit-ish diagonal, like Hinv's batch rows. */
function hinvRows(count: number, width: number): Float32Array {
  const h = fillUniform(count * width, 0.02, 9);
  for (let i = 0; i < count; i++) {
    for (let j = 0; j < i; j++) h[i * width + j] = 0;
    h[i * width + i] = 0.5 + (i % 7) * 0.01;
  }
  return h;
}

const results: { what: string; rows: number; ms: number; note: string }[] = [];
const row = (what: string, rows: number, ms: number, note = '') => {
  results.push({ what, rows, ms, note });
  console.log(`${what.padEnd(64)} R=${String(rows).padEnd(6)} ${ms.toFixed(2).padStart(9)} ms  ${note}`);
};

async function main(): Promise<void> {
  const rt = await ComputeRuntime.create({ ep });
  const dev = rt.keepsDataOnDevice ? 'device' : 'host';
  console.log(`loop_probe: EP ${rt.ep}, WebGPU options ${JSON.stringify(webgpuOptions())}, C ${C}, B ${B}, reps ${reps}`);
  // GPU work is timed to completion: the last output of each timed sequence is read back.
  const time = async (n: number, step: () => Promise<Record<string, Tensor>>, readback: string) => {
    const warm = await step(); // session creation, shader compilation
    for (const t of Object.values(warm)) rt.release(t);
    const t0 = performance.now();
    for (let i = 0; i < n; i++) {
      const out = await step();
      if (i === n - 1 && out[readback].location !== 'cpu') await rt.download(out[readback]);
      for (const t of Object.values(out)) rt.release(t);
    }
    return (performance.now() - t0) / n;
  };

  for (const R of rowsList) {
    const x = await rt.upload(rt.host(fillUniform(R * B, 1, 1), [R, B]));
    // 1. The dispatch floor: K chained Add/Mul on [R, 128].
    for (const K of [512]) {
      const s = await rt.session(`probe/chain${K}`, () => {
        const g = new GraphBuilder('chain');
        let v = g.input('x', 'float32', ['R', B]);
        for (let k = 0; k < K; k++) v = g.op(k % 2 ? 'Mul' : 'Add', [v, g.constF32([k % 2 ? 0.999 : 0.001])]);
        g.output(v, 'y');
        return g.toModel();
      }, dev);
      const ms = await time(reps, async () => rt.run(s, { x }), 'y');
      row(`${K} chained Add/Mul on [R,128]`, R, ms, `${((ms * 1000) / K).toFixed(1)} µs/node`);
    }
    // 2. The column update alone, 128 times: x −= x[:, i]·h[i, :] (Slice, Slice, Mul, Sub).
    {
      const s = await rt.session('probe/updates', () => {
        const g = new GraphBuilder('updates');
        let v = g.input('x', 'float32', ['R', B]);
        const h = g.input('h', 'float32', [B, B]);
        const sl = (t: typeof v, a: number, axis: number) => g.op('Slice', [t, g.constI64([a]), g.constI64([a + 1]), g.constI64([axis])]);
        for (let i = 0; i < B; i++) v = g.op('Sub', [v, g.op('Mul', [sl(v, i, 1), sl(h, i, 0)])]);
        g.output(v, 'y');
        return g.toModel();
      }, dev);
      const h = await rt.upload(rt.host(hinvRows(B, B), [B, B]));
      const ms = await time(reps, async () => rt.run(s, { x, h }), 'y');
      row('128 column updates x −= x[:,i]·h[i,:] (4 nodes each)', R, ms, `${((ms * 1000) / (4 * B)).toFixed(1)} µs/node`);
      rt.release(h);
    }
    rt.release(x);
    // 3. The product's batch graph, both forms, first batch of a layer (C columns left), g128 asym W2.
    const w = await rt.upload(rt.host(fillUniform(R * C, 0.04, 3), [R, C]));
    const hHost = hinvRows(B, C), invd = new Float32Array(B);
    for (let i = 0; i < B; i++) invd[i] = 1 / hHost[i * C + i];
    const hDev = await rt.upload(rt.host(hHost, [B, C]));
    for (const form of ['direct', 'shifted'] as LoopForm[]) {
      const sh: BatchShape = { form, hFrom: 'host', rowChunks: [R], count: B, G: B, sym: false, maxq: 3, tail: true };
      const s = await rt.session(`probe/loop|${R}|${form}`, batchModel(sh), 'device');
      const fromHost = await time(reps, async () => rt.run(s, { w0: w, h: rt.host(hHost, [B, C]), invd: rt.host(invd, [1, B]) }), 'packed');
      const onDev = await time(reps, async () => rt.run(s, { w0: w, h: hDev, invd: rt.host(invd, [1, B]) }), 'packed');
      row(`loop batch '${form}', h from the host (the product)`, R, fromHost, `${((fromHost * 1000) / B).toFixed(0)} µs/column`);
      row(`loop batch '${form}', h on the device`, R, onDev, `${((onDev * 1000) / B).toFixed(0)} µs/column`);
    }
    // The product's default since session 4: 'shifted', rows sliced from U [C, C] resident on the device.
    // (A tree of Concats of 8 or 16 inputs instead of one of 128 measured the same: loop_probe_3_*.json.)
    {
      const sh: BatchShape = { form: 'shifted', hFrom: 'device', rowChunks: [R], count: B, G: B, sym: false, maxq: 3, tail: true };
      const s = await rt.session(`probe/loop|${R}|shifted|U`, batchModel(sh), 'device');
      const U = await rt.upload(rt.host(hinvRows(C, C), [C, C]));
      const ms = await time(reps, async () => rt.run(s, { w0: w, u: U, hb: rt.hostI64([0, 0]), he: rt.hostI64([B, C]) }), 'packed');
      row(`loop batch 'shifted', h sliced from U on the device`, R, ms, `${((ms * 1000) / B).toFixed(0)} µs/column`);
      // The same batch as a layer's last one (no lazy update of the C − 128 columns after it): what the
      // tail costs (Slice of W's rest, MatMul Err1·Hinv[batch, rest], Sub).
      const shLast: BatchShape = { ...sh, tail: false };
      const sLast = await rt.session(`probe/loop|${R}|shifted|U|last`, batchModel(shLast), 'device');
      const w1 = await rt.upload(rt.host(fillUniform(R * B, 0.04, 3), [R, B]));
      const msLast = await time(reps, async () => rt.run(sLast, { w0: w1, u: U, hb: rt.hostI64([0, 0]), he: rt.hostI64([B, C]) }), 'packed');
      row(`loop batch 'shifted', from U, without the lazy update (last batch)`, R, msLast, `${((msLast * 1000) / B).toFixed(0)} µs/column`);
      // The product since session 4's last change: W in row chunks of at most 64 MiB (chunkRows).
      const chunks = chunkRows(R, C);
      if (chunks.length > 1) {
        const shC: BatchShape = { ...sh, rowChunks: chunks.map(([a, b]) => b - a) };
        const sC = await rt.session(`probe/loop|${R}|shifted|U|chunks`, batchModel(shC), 'device');
        const wc: Tensor[] = [];
        for (const [a, b] of chunks) wc.push(await rt.upload(rt.host(fillUniform((b - a) * C, 0.04, 3 + a), [b - a, C])));
        const feeds = { ...Object.fromEntries(wc.map((t, k) => [`w${k}`, t])), u: U, hb: rt.hostI64([0, 0]), he: rt.hostI64([B, C]) };
        const msC = await time(reps, async () => rt.run(sC, feeds), 'packed');
        row(`loop batch 'shifted', from U, W in ${chunks.length} row chunks (the product)`, R, msC, `${((msC * 1000) / B).toFixed(0)} µs/column`);
        rt.release(...wc);
      }
      rt.release(U, w1);
    }
    // 4. The lazy update's pieces alone (first batch: C − 128 columns after it), whole vs in two row halves.
    {
      const Ct = C - B;
      // Each piece's outputs stay on the device; only one value of the first comes back (the sync: the queue is in order).
      const one = async (label: string, build: (g: GraphBuilder) => ReturnType<GraphBuilder['op']>, feeds: Record<string, Tensor>) => {
        const s = await rt.session(`probe/tail|${R}|${C}|${label}`, () => {
          const g = new GraphBuilder('tail');
          const y = build(g);
          g.output(g.op('Slice', [g.op('Reshape', [y, g.constI64([-1])]), g.constI64([0]), g.constI64([1])]), 'sum');
          return g.toModel();
        }, dev);
        row(`tail piece: ${label}`, R, await time(reps, async () => rt.run(s, feeds), 'sum'));
      };
      const sl = (g: GraphBuilder, x: ReturnType<GraphBuilder['input']>, a: number, b: number, axis: number) =>
        g.op('Slice', [x, g.constI64([a]), g.constI64([b]), g.constI64([axis])]);
      const err = await rt.upload(rt.host(fillUniform(R * B, 0.01, 5), [R, B]));
      const ht = await rt.upload(rt.host(fillUniform(B * Ct, 0.01, 6), [B, Ct]));
      await one(`Slice W[:, 128:] → [R, ${Ct}]`, (g) => sl(g, g.input('w', 'float32', ['R', C]), B, C, 1), { w });
      await one(`MatMul Err1[R,128]·h[128, ${Ct}]`, (g) => g.op('MatMul', [g.input('e', 'float32', ['R', B]), g.input('h', 'float32', [B, Ct])]), { e: err, h: ht });
      await one('Slice + MatMul + Sub (the tail)', (g) => {
        const wi = g.input('w', 'float32', ['R', C]);
        return g.op('Sub', [sl(g, wi, B, C, 1), g.op('MatMul', [g.input('e', 'float32', ['R', B]), g.input('h', 'float32', [B, Ct])])]);
      }, { w, e: err, h: ht });
      for (const k of [2, 3]) {
        const cut = (i: number) => Math.round((i * R) / k);
        const pieces: Tensor[] = [];
        for (let i = 0; i < k; i++) pieces.push(await rt.upload(rt.host(fillUniform((cut(i + 1) - cut(i)) * C, 0.04, 7 + i), [cut(i + 1) - cut(i), C])));
        await one(`the tail in ${k} row chunks (${k} inputs, ${k} outputs)`, (g) => {
          const e = g.input('e', 'float32', ['R', B]), h = g.input('h', 'float32', [B, Ct]);
          const ys = pieces.map((_, i) => {
            const wi = g.input(`w${i}`, 'float32', [cut(i + 1) - cut(i), C]);
            return g.op('Sub', [sl(g, wi, B, C, 1), g.op('MatMul', [sl(g, e, cut(i), cut(i + 1), 0), h])]);
          });
          ys.slice(1).forEach((y, i) => g.output(y, `y${i + 1}`));
          return ys[0];
        }, { e: err, h: ht, ...Object.fromEntries(pieces.map((t, i) => [`w${i}`, t])) });
        rt.release(...pieces);
      }
      rt.release(err, ht);
    }
    rt.release(w, hDev);
  }
  const json = arg('json', '');
  if (json) writeFileSync(json, JSON.stringify({ ep: rt.ep, webgpuOptions: webgpuOptions(), C, B, reps, date: new Date().toISOString(), results }, null, 1));
  await rt.dispose();
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
