// A 32-block LLaMA-2-7B-shaped synthetic checkpoint, generated as one F16 safetensors file (streamed
// with SafetensorsWriter), then quantized end to end block by block with lazy per-tensor reads, the
// block's outputs written as they are done (LoPRo native tensors, or codes + F16 scales for gptq/rtn).
// Reports total time, the split (generate / read / Hessians / quantize / write) and the peak RSS.
//
//   node --import tsx bench/model7b.ts [--blocks 32] [--hidden 4096] [--mlp 11008] [--method lopro]
//        [--bits 2] [--ep cpu|webgpu|cuda] [--engine hybrid] [--threads N] [--dir DIR] [--keep]
//        [--time-limit S] [--out DIR]
//
// Hessians: the synthetic pipeline has no tokenizer/embeddings to calibrate with, so each linear input
// (attention in → q,k,v; o_proj in; MLP in → gate, up; down_proj in) gets its own synthetic Hessian:
// H = D·H₀·D with H₀ = (2/T)·XᵀX of correlated heavy-tailed activations (built once per width on the
// EP, as in gpu_layers.ts) and D = diag(s) a fresh log-normal channel scale per block and input, with
// fresh ×20 outlier channels. Weights: one seeded F16 base per shape; each layer is the base with its
// rows rotated by a layer-specific offset and row signs flipped by a layer-specific hash (a memcpy-speed
// variation: the timing does not depend on the values, the statistics stay LLaMA-like).
// gptq: q/k/v and gate/up share their input's Hinv (one Cholesky per H; exact, same damped H).
// --time-limit stops starting new blocks after S seconds and reports the projected 32-block total.

import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { DEFAULT_LAYER_CONFIG, type LayerConfig } from '../src/protocol/config';
import { ComputeRuntime, type EpName } from '../src/engine/compute/runtime';
import { GraphBuilder } from '../src/engine/compute/graph';
import { SafetensorsFile } from '../src/engine/io/safetensors';
import { SafetensorsWriter, writeSafetensorsAtomic, type TensorData } from '../src/engine/io/safetensors_writer';
import { f32ToF16Bits } from '../src/engine/io/dtypes';
import { loproLayerTensors } from '../src/engine/io/lopro_format';
import { encodeF16 } from '../src/engine/quant/fp8';
import { gptqQuantize } from '../src/engine/quant/gptq';
import { GptqPool, gptqQuantizeParallel } from '../src/engine/quant/gptq_parallel';
import { choleskyOn, createSlabUpdater, gptqQuantizeDevice } from '../src/engine/quant/gptq_device';
import { quantizeLayerLoPRoWith, type GptqEngine } from '../src/engine/quant/gptq_device_lopro';
import { quantizeLayerLoPRoParallel } from '../src/engine/quant/gptq_parallel_lopro';
import { rtnQuantize } from '../src/engine/quant/rtn';
import { mulberry32 } from '../src/engine/util/random';

const args = process.argv.slice(2);
const arg = (k: string, d: string) => { const i = args.indexOf(`--${k}`); return i >= 0 ? args[i + 1] : d; };
const nBlocks = Number(arg('blocks', '32')), hidden = Number(arg('hidden', '4096')), mlp = Number(arg('mlp', '11008'));
const method = arg('method', 'lopro') as 'lopro' | 'gptq' | 'rtn';
const bits = Number(arg('bits', '2'));
const ep = arg('ep', 'cpu') as EpName;
const engineName = arg('engine', 'hybrid');
const threads = Number(arg('threads', String(os.availableParallelism())));
const timeLimit = Number(arg('time-limit', 'Infinity'));
const tokens = Number(arg('tokens', '2048'));
const outDir = arg('out', process.env.OUT ?? path.join(process.cwd(), 'bench', 'out'));
const dir = arg('dir', path.join(os.tmpdir(), `lopro-model7b-${hidden}-${mlp}-${nBlocks}`));
const now = () => performance.now() / 1000;
const log = (s: string) => process.stdout.write(`${s}\n`);

const LINEARS: { name: string; rows: number; cols: number; input: 'attn' | 'o' | 'mlp' | 'down' }[] = [
  { name: 'self_attn.q_proj', rows: hidden, cols: hidden, input: 'attn' },
  { name: 'self_attn.k_proj', rows: hidden, cols: hidden, input: 'attn' },
  { name: 'self_attn.v_proj', rows: hidden, cols: hidden, input: 'attn' },
  { name: 'self_attn.o_proj', rows: hidden, cols: hidden, input: 'o' },
  { name: 'mlp.gate_proj', rows: mlp, cols: hidden, input: 'mlp' },
  { name: 'mlp.up_proj', rows: mlp, cols: hidden, input: 'mlp' },
  { name: 'mlp.down_proj', rows: hidden, cols: mlp, input: 'down' },
];
const tensorName = (b: number, l: string) => `model.layers.${b}.${l}.weight`;

const rng = mulberry32;
function normals(n: number, u: () => number, scale = 1): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i += 2) {
    const r = Math.sqrt(-2 * Math.log(u() || 1e-12)) * scale, th = 2 * Math.PI * u();
    out[i] = r * Math.cos(th);
    if (i + 1 < n) out[i + 1] = r * Math.sin(th);
  }
  return out;
}

/** F16 bits of a rows×cols base weight: N(0, 0.02²)-ish with log-normal row/column scales. */
function baseF16(rows: number, cols: number, seed: number): Uint16Array {
  const u = rng(seed);
  const rs = normals(rows, u, 0.3).map(Math.exp), cs = normals(cols, u, 0.3).map(Math.exp);
  const out = new Uint16Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    const z = normals(cols, u);
    for (let c = 0; c < cols; c++) out[r * cols + c] = f32ToF16Bits(0.02 * z[c] * rs[r] * cs[c]);
  }
  return out;
}

/** Layer (b, l): the base's rows rotated by a layer offset, with row signs flipped by a hash. */
function layerRows(base: Uint16Array, rows: number, cols: number, b: number, l: number, r0: number, r1: number): Uint16Array {
  const out = new Uint16Array((r1 - r0) * cols);
  const off = (b * 7919 + l * 104729) % rows;
  for (let r = r0; r < r1; r++) {
    const src = ((r + off) % rows) * cols;
    out.set(base.subarray(src, src + cols), (r - r0) * cols);
    if ((Math.imul(r + 1, 0x9e3779b1) ^ (b * 31 + l)) & 4) {
      const o = (r - r0) * cols;
      for (let c = 0; c < cols; c++) out[o + c] ^= 0x8000;
    }
  }
  return out;
}

function generate(file: string): number {
  const t = now();
  const bases = new Map<string, Uint16Array>();
  const baseFor = (rows: number, cols: number) => {
    const k = `${rows}x${cols}`;
    if (!bases.has(k)) bases.set(k, baseF16(rows, cols, 11 + bases.size));
    return bases.get(k)!;
  };
  const specs = [];
  for (let b = 0; b < nBlocks; b++) for (const l of LINEARS) specs.push({ name: tensorName(b, l.name), dtype: 'F16' as const, shape: [l.rows, l.cols] });
  const w = SafetensorsWriter.create(file, specs, { format: 'pt', generator: 'lopro bench/model7b.ts (synthetic)' });
  for (let b = 0; b < nBlocks; b++)
    LINEARS.forEach((l, li) => {
      const base = baseFor(l.rows, l.cols);
      const step = Math.max(1, Math.floor((64 << 20) / (2 * l.cols))); // ≤ 64 MiB per chunk
      for (let r0 = 0; r0 < l.rows; r0 += step) w.writeChunk(tensorName(b, l.name), layerRows(base, l.rows, l.cols, b, li, r0, Math.min(l.rows, r0 + step)));
    });
  w.finish();
  return now() - t;
}

/** H₀ = (2/T)·XᵀX and mean|x| for one input width (on the EP; X = (0.8·F·B + 0.6·E)·s₀). */
async function baseHessian(rt: ComputeRuntime, cols: number, seed: number): Promise<{ H: Float32Array; absMean: Float32Array }> {
  const u = rng(seed), T = tokens, k = Math.max(8, Math.floor(cols / 8));
  const F = normals(T * k, u), B = normals(k * cols, u, 1 / Math.sqrt(k));
  const E = new Float32Array(T * cols);
  for (let i = 0; i < E.length; i++) { const v = -Math.log(u() || 1e-12) / Math.SQRT2; E[i] = u() < 0.5 ? -v : v; }
  const build = () => {
    const g = new GraphBuilder('model7b_hessian');
    const f = g.input('f', 'float32', ['T', 'K']), b = g.input('b', 'float32', ['K', 'C']), e = g.input('e', 'float32', ['T', 'C']);
    const x = g.op('Add', [g.op('Mul', [g.op('MatMul', [f, b]), g.constF32([0.8])]), g.op('Mul', [e, g.constF32([0.6])])]);
    g.output(g.op('Mul', [g.op('MatMul', [g.op('Transpose', [x], { perm: [1, 0] }), x]), g.constF32([2 / T])]), 'h');
    g.output(g.op('ReduceMean', [g.op('Abs', [x])], { axes: [0], keepdims: 0 }), 'absmean');
    return g.toModel();
  };
  const r = await rt.runF32('bench/model7b_hessian', build, { f: [F, [T, k]], b: [B, [k, cols]], e: [E, [T, cols]] });
  return { H: r.h, absMean: r.absmean };
}

/** H = D·H₀·D (symmetrised, float64) with a fresh log-normal D and fresh ×20 channels. */
function blockHessian(base: { H: Float32Array; absMean: Float32Array }, cols: number, seed: number): { H: Float64Array; absMean: Float64Array } {
  const u = rng(seed);
  const s = normals(cols, u, 0.5).map(Math.exp);
  for (let h = 0; h < Math.max(1, cols >> 8); h++) s[Math.floor(u() * cols)] *= 20;
  const H = new Float64Array(cols * cols);
  for (let i = 0; i < cols; i++) for (let j = i; j < cols; j++) H[i * cols + j] = H[j * cols + i] = s[i] * base.H[i * cols + j] * s[j];
  return { H, absMean: Float64Array.from(base.absMean, (v, j) => v * s[j]) };
}

/**
 * Layers fed by the same input (q/k/v, gate/up) share H, hence Hinv (same damping, no act-order): the
 * Cholesky runs once per H object. LoPRo's H′ is per layer (its own permutation), so it never hits.
 */
const hinvCache = new WeakMap<Float64Array, Promise<Float64Array>>();
function sharedCholesky(rt: ComputeRuntime, H: Float64Array): (h: Float64Array, n: number) => Promise<Float64Array> {
  const chol = choleskyOn(rt);
  return (h, n) => {
    let p = hinvCache.get(H);
    if (!p) hinvCache.set(H, (p = chol(h, n)));
    return p;
  };
}

function engineFor(rt: ComputeRuntime, pool: GptqPool | undefined): GptqEngine {
  switch (engineName) {
    case 'ts': return async (W, r, c, H, o) => gptqQuantize(W, r, c, H, o);
    case 'parallel': return (W, r, c, H, o) => gptqQuantizeParallel(W, r, c, H, { ...o, pool, choleskyInverseUpperAsync: sharedCholesky(rt, H) });
    case 'device': return (W, r, c, H, o) => gptqQuantizeDevice(W, r, c, H, { ...o, rt });
    default: return (W, r, c, H, o) => gptqQuantizeParallel(W, r, c, H, { ...o, pool, choleskyInverseUpperAsync: sharedCholesky(rt, H), lazy: (rr, cc, hinv, s) => createSlabUpdater(rt, rr, cc, hinv, s) });
  }
}

async function main() {
  fs.mkdirSync(dir, { recursive: true });
  fs.mkdirSync(outDir, { recursive: true });
  const t0 = now();
  let peakRss = process.memoryUsage().rss;
  const sample = () => { peakRss = Math.max(peakRss, process.memoryUsage().rss); };
  const file = path.join(dir, 'model.safetensors');
  let tGen = 0;
  if (!fs.existsSync(file)) {
    tGen = generate(file);
    log(`generated ${file}: ${(fs.statSync(file).size / 1e9).toFixed(2)} GB F16, ${nBlocks} blocks (hidden ${hidden}, mlp ${mlp}) in ${tGen.toFixed(1)} s`);
  } else log(`reusing ${file}`);
  sample();
  const rt = await ComputeRuntime.create({ ep });
  if (rt.ep !== ep) log(`note: EP ${ep} unavailable, running on ${rt.ep}`);
  const pool = engineName === 'parallel' || engineName === 'hybrid' ? GptqPool.create(threads) : undefined;
  const engine = engineFor(rt, pool);
  const cfg: LayerConfig = { ...DEFAULT_LAYER_CONFIG, method: 'lopro', bits };
  const tQ0 = now();
  const bases = new Map<number, { H: Float32Array; absMean: Float32Array }>();
  let tHb = now();
  for (const c of new Set(LINEARS.map((l) => l.cols))) bases.set(c, await baseHessian(rt, c, 300 + c));
  tHb = now() - tHb;
  log(`base Hessians (${tokens} tokens, widths ${[...bases.keys()]}) on ${rt.ep}: ${tHb.toFixed(1)} s`);
  const split = { read: 0, hessian: 0, quantize: 0, write: 0 };
  const perBlock: number[] = [];
  const src = SafetensorsFile.open(file);
  const qdir = path.join(dir, `q-${method}-w${bits}`);
  fs.mkdirSync(qdir, { recursive: true });
  let done = 0;
  for (let b = 0; b < nBlocks; b++) {
    if (now() - tQ0 > timeLimit) break;
    const tb = now();
    const hs = new Map<string, { H: Float64Array; absMean: Float64Array }>();
    const out: TensorData[] = [];
    for (const l of LINEARS) {
      let t = now();
      const W = src.readFloat32(tensorName(b, l.name));
      split.read += now() - t;
      t = now();
      if (!hs.has(l.input)) hs.set(l.input, blockHessian(bases.get(l.cols)!, l.cols, b * 16 + l.input.length));
      const { H, absMean } = hs.get(l.input)!;
      split.hessian += now() - t;
      t = now();
      const name = `model.layers.${b}.${l.name}`;
      if (method === 'lopro') {
        const r = pool ? await quantizeLayerLoPRoParallel(pool, engine, W, l.rows, l.cols, H, absMean, cfg, b, name) : await quantizeLayerLoPRoWith(engine, W, l.rows, l.cols, H, absMean, cfg, b, name);
        split.quantize += now() - t;
        t = now();
        out.push(...loproLayerTensors(name, r.stored));
      } else {
        const q = method === 'rtn' ? rtnQuantize(W, l.rows, l.cols, { bits, groupSize: 128, sym: false }) : await engine(Float64Array.from(W), l.rows, l.cols, H, { bits, groupSize: 128, name });
        split.quantize += now() - t;
        t = now();
        out.push({ name: `${name}.codes`, dtype: 'U8', shape: [l.rows, l.cols], data: q.codes }, { name: `${name}.scales`, dtype: 'F16', shape: [l.rows, q.groups], data: encodeF16(q.scale) }, { name: `${name}.zeros`, dtype: 'U8', shape: [l.rows, q.groups], data: Uint8Array.from(q.zero) });
      }
      split.write += now() - t;
      sample();
    }
    const t = now();
    writeSafetensorsAtomic(path.join(qdir, `block_${String(b).padStart(2, '0')}.safetensors`), out);
    split.write += now() - t;
    sample();
    perBlock.push(now() - tb);
    done++;
    log(`block ${b}: ${perBlock[b].toFixed(1)} s (rss ${(process.memoryUsage().rss / 2 ** 30).toFixed(2)} GiB, ${rt.counters.h2dBytes / 1e9 > 0 ? `h2d ${(rt.counters.h2dBytes / 1e9).toFixed(1)} GB, d2h ${(rt.counters.d2hBytes / 1e9).toFixed(1)} GB` : 'no device copies'})`);
  }
  src.close();
  await pool?.close();
  const tQuant = now() - tQ0;
  const total = now() - t0;
  const maxRssKiB = process.resourceUsage().maxRSS;
  const projected = done ? tHb + ((tQuant - tHb) / done) * nBlocks : NaN;
  const result = {
    date: new Date().toISOString(), host: os.hostname(), cpus: `${os.cpus().length}× ${os.cpus()[0]?.model}`, node: process.version, args,
    ep: rt.ep, engine: engineName, method, bits, blocks: nBlocks, blocksDone: done, hidden, mlp, threads, tokens,
    seconds: { generate: tGen, baseHessians: tHb, quantizeEndToEnd: tQuant, total, ...split, perBlockMedian: perBlock.slice().sort((a, b) => a - b)[perBlock.length >> 1] ?? NaN, projectedAllBlocks: projected },
    peakRssGiB: Math.max(peakRss, maxRssKiB * 1024) / 2 ** 30,
    counters: rt.counters,
  };
  log(`\nmodel7b ${method} W${bits} on ${rt.ep}/${engineName}: ${done}/${nBlocks} blocks quantized in ${tQuant.toFixed(1)} s end to end (read ${split.read.toFixed(1)}, Hessians ${(split.hessian + tHb).toFixed(1)}, quantize ${split.quantize.toFixed(1)}, write ${split.write.toFixed(1)}); ` +
    `${done < nBlocks ? `projected ${projected.toFixed(0)} s for all ${nBlocks}; ` : ''}generation ${tGen.toFixed(1)} s; peak RSS ${result.peakRssGiB.toFixed(2)} GiB`);
  const jf = path.join(outDir, `model7b_${rt.ep}_${method}_${Date.now()}.json`);
  fs.writeFileSync(jf, JSON.stringify(result, null, 1));
  log(`wrote ${jf}`);
  await rt.dispose();
  if (!args.includes('--keep')) fs.rmSync(dir, { recursive: true, force: true });
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
