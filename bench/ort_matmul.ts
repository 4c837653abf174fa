// ONNX Runtime's own n³ fp32 MatMul throughput on the chosen EP, plus the blocked Cholesky
// (choleskyInverseUpper, GPTQ's Hinv) at the same n. The measuring functions are exported so other
// benches (GPTQ) can report "how close to the hardware" in the same run.
//
//   node --import tsx bench/ort_matmul.ts [--ep auto|cpu|webgpu|cuda] [--n 4096] [--runs 5] [--chol-runs 2] [--threads T] [--append]
//
// --append adds a dated entry (machine, CPU, cores, EP) to bench/RESULTS.md under flock.

import { execFileSync } from 'node:child_process';
import { cpus, totalmem } from 'node:os';
import { readFileSync } from 'node:fs';
import { ComputeRuntime, type EpChoice } from '../src/engine/compute/runtime';
import { GraphBuilder } from '../src/engine/compute/graph';
import { choleskyInverseUpper } from '../src/engine/linalg/cholesky';
import { accumulateXtX } from '../src/engine/linalg/matmul';

export interface MatmulMeasure {
  ep: string;
  n: number;
  /** Median wall time of one run with host inputs and outputs (copies included on GPU EPs). */
  medianMs: number;
  gflops: number;
  samplesMs: number[];
  /** WebGPU only: marginal time per MatMul in a chain that stays on the device. */
  deviceMarginalMs?: number;
  deviceGflops?: number;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

/** Deterministic U(−1, 1)/√n data (keeps chained products bounded). */
function data(len: number, n: number, seed: number): Float32Array {
  const out = new Float32Array(len);
  let s = seed >>> 0;
  const k = 2 / Math.sqrt(n) / 4294967296;
  for (let i = 0; i < len; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = s * k - 1 / Math.sqrt(n);
  }
  return out;
}

function matmulModel(): Uint8Array {
  const g = new GraphBuilder('bench_matmul');
  g.output(g.op('MatMul', [g.input('a', 'float32', ['M', 'K']), g.input('b', 'float32', ['K', 'N'])]), 'c');
  return g.toModel();
}

/** n×n×n fp32 MatMul on `rt`: median of `runs` after `warmup` runs. */
export async function measureOrtMatmul(rt: ComputeRuntime, n = 4096, runs = 5, warmup = 1): Promise<MatmulMeasure> {
  const a = data(n * n, n, 1);
  const b = data(n * n, n, 2);
  const s = await rt.session('bench/matmul', matmulModel, 'host');
  const feeds = { a: rt.host(a, [n, n]), b: rt.host(b, [n, n]) };
  const samplesMs: number[] = [];
  for (let i = 0; i < warmup + runs; i++) {
    const t0 = performance.now();
    await rt.run(s, feeds);
    if (i >= warmup) samplesMs.push(performance.now() - t0);
  }
  const medianMs = median(samplesMs);
  const flop = 2 * n * n * n;
  const res: MatmulMeasure = { ep: rt.ep, n, medianMs, gflops: flop / medianMs / 1e6, samplesMs };
  if (rt.keepsDataOnDevice) {
    // Chain k MatMuls on the device (c ← c·b), read back once: the marginal cost per product.
    const sd = await rt.session('bench/matmul', matmulModel, 'device');
    const bd = await rt.upload(rt.host(b, [n, n]));
    const chain = async (k: number) => {
      let c = await rt.upload(rt.host(a, [n, n]));
      const t0 = performance.now();
      for (let i = 0; i < k; i++) {
        const next = (await rt.run(sd, { a: c, b: bd })).c;
        rt.release(c);
        c = next;
      }
      await rt.download(c);
      rt.release(c);
      return performance.now() - t0;
    };
    await chain(2);
    const marg: number[] = [];
    for (let r = 0; r < 3; r++) marg.push(((await chain(11)) - (await chain(1))) / 10);
    rt.release(bd);
    res.deviceMarginalMs = median(marg);
    res.deviceGflops = flop / res.deviceMarginalMs / 1e6;
  }
  return res;
}

export interface CholeskyMeasure {
  n: number;
  medianS: number;
  samplesS: number[];
  /** max |(UᵀU·H − I)[r, :]| over a few rows: the result is right, not only fast. */
  residual: number;
}

/** choleskyInverseUpper on a synthetic GPTQ-like Hessian H = XᵀX/t + 0.01·mean(diag)·I. */
export async function measureCholeskyInverseUpper(rt: ComputeRuntime, n = 4096, runs = 2): Promise<CholeskyMeasure> {
  const tokens = n + 256;
  const h32 = new Float32Array(n * n);
  const x = data(tokens * n, 1, 3);
  for (let t = 0; t < tokens; t++) for (let j = 1; j < n; j++) x[t * n + j] += 0.5 * x[t * n + j - 1]; // correlated columns
  await accumulateXtX(h32, x, tokens, n, { alpha: 1 / tokens, rt });
  let mean = 0;
  for (let i = 0; i < n; i++) mean += h32[i * n + i] / n;
  for (let i = 0; i < n; i++) h32[i * n + i] += 0.01 * mean;
  const h = Float64Array.from(h32);
  const samplesS: number[] = [];
  let u: Float64Array = new Float64Array(0);
  for (let r = 0; r < runs; r++) {
    const t0 = performance.now();
    u = await choleskyInverseUpper(h, n, { rt });
    samplesS.push((performance.now() - t0) / 1000);
  }
  let residual = 0;
  const v = new Float64Array(n);
  const w = new Float64Array(n);
  for (const row of [0, Math.floor(n / 3), n - 1]) {
    for (let i = 0; i < n; i++) v[i] = h[i * n + row]; // H e_row
    for (let i = 0; i < n; i++) {
      let s = 0;
      for (let j = i; j < n; j++) s += u[i * n + j] * v[j];
      w[i] = s; // U·(H e_row)
    }
    for (let j = 0; j < n; j++) {
      let s = 0;
      for (let i = 0; i <= j; i++) s += u[i * n + j] * w[i];
      residual = Math.max(residual, Math.abs(s - (j === row ? 1 : 0))); // Uᵀ·U·H e_row − e_row
    }
  }
  return { n, medianS: median(samplesS), samplesS, residual };
}

function machine(): string {
  const arch = execFileSync('uname', ['-m']).toString().trim();
  let model = cpus()[0]?.model ?? 'unknown CPU';
  try {
    model = /model name\s*:\s*(.*)/.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? model;
  } catch {
    /* not Linux */
  }
  return `${arch}, ${model}, ${cpus().length} cores, ${Math.round(totalmem() / 2 ** 30)} GiB`;
}

function appendResults(text: string): void {
  execFileSync('flock', ['/tmp/lopro-results.lock', 'sh', '-c', 'cat >> bench/RESULTS.md'], { input: text });
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const opt = (name: string, dflt: string) => {
    const i = args.indexOf(`--${name}`);
    return i >= 0 && i + 1 < args.length ? args[i + 1] : dflt;
  };
  const ep = opt('ep', 'auto') as EpChoice;
  const n = Number(opt('n', '4096'));
  const threads = Number(opt('threads', '0')) || undefined;
  const rt = await ComputeRuntime.create({ ep, intraOpNumThreads: threads });
  const mm = await measureOrtMatmul(rt, n, Number(opt('runs', '5')));
  const ch = await measureCholeskyInverseUpper(rt, n, Number(opt('chol-runs', '2')));
  const fallbacks = rt.attempts.filter((a) => !a.ok).map((a) => `${a.ep}: ${a.reason}`);
  const load = readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');
  const rows = [
    `| ${rt.ep} | MatMul ${n}³ fp32, host in/out | ${mm.medianMs.toFixed(1)} ms | ${mm.gflops.toFixed(1)} GFLOP/s | runs ${mm.samplesMs.map((t) => t.toFixed(0)).join(', ')} ms |`,
    ...(mm.deviceMarginalMs !== undefined ? [`| ${rt.ep} | MatMul ${n}³ fp32, on device (chain marginal) | ${mm.deviceMarginalMs.toFixed(2)} ms | ${mm.deviceGflops!.toFixed(1)} GFLOP/s | |`] : []),
    `| ${rt.ep} | choleskyInverseUpper n=${n} (GPTQ Hinv) | ${ch.medianS.toFixed(2)} s | | runs ${ch.samplesS.map((t) => t.toFixed(2)).join(', ')} s; residual ${ch.residual.toExponential(1)} |`,
  ];
  const table = ['| EP | what | time | throughput | notes |', '|---|---|---:|---:|---|', ...rows].join('\n');
  console.log(table);
  console.log(`copies: h2d ${rt.counters.h2dCopies} (${(rt.counters.h2dBytes / 2 ** 20).toFixed(0)} MiB), d2h ${rt.counters.d2hCopies} (${(rt.counters.d2hBytes / 2 ** 20).toFixed(0)} MiB); sessions ${rt.counters.sessionsCreated} (${(rt.counters.sessionCreateMs / 1000).toFixed(2)} s)`);
  if (args.includes('--append')) {
    const entry = [
      '',
      `## ort_matmul — ${new Date().toISOString()}`,
      '',
      `Machine: ${machine()}. EP: ${rt.ep}${threads ? `, ${threads} threads` : ''}${fallbacks.length ? ` (fell back from ${fallbacks.join('; ')})` : ''}. Node ${process.version}, onnxruntime-node 1.30.0. Load average at the end of the run (2 cores; other engineers share the machine): ${load}.`,
      `Command: \`node --import tsx bench/ort_matmul.ts ${args.join(' ')}\``,
      '',
      table,
      '',
    ].join('\n');
    appendResults(entry);
  }
  await rt.dispose();
}

if (require.main === module) {
  main().catch((e) => {
    console.error(e);
    process.exit(1);
  });
}
