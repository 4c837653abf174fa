// Bounded memory on a model larger than RAM (issue 4.7 / 7.4). Generates a Llama-shaped checkpoint
// of `--factor` × this machine's RAM (default 1.5×) as ONE bare model.safetensors (BF16, Llama
// tensor names, hidden 8192, GQA kv 1024, MLP 28672, vocab 32000 — a 70B-class layer shape with as
// many blocks as the size needs), then quantizes it with RTN in data-free mode (H = I; this mode
// is what a bare file gets: no calibration forward, so the measurement is of the streaming reader,
// the per-tensor quantize + checkpoint, and the streamed native output) and reports peak RSS.
//
// The data is real, not a sparse file: every tensor is filled from a 64 MiB pool of seeded
// Gaussian BF16 values (σ 0.02), read at a different offset per tensor, so all of the file
// exists on disk and every weight is quantized. Disk needed: the model + ~2 × its 2-bit output
// (checkpoints + native); the run refuses to start without that much free space.
//
//   node --import tsx bench/memory_large.ts [--factor 1.5] [--bits 2] [--dir /tmp/lopro-memlarge]
//        [--keep] [--no-append]
// Peak RSS = process.resourceUsage().maxRSS of this one process (generation + quantization).
// Inside a memory cgroup (e.g. a child cgroup with memory.limit_in_bytes = 4 GiB), the limit is
// taken as the machine's RAM: a 1.5× model then takes minutes instead of the hours a 1.5× of a
// 24 GB machine would take on 2 cores, and the kernel enforces the bound.

import * as os from 'node:os';
import * as path from 'node:path';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync, statfsSync, statSync } from 'node:fs';
import { DEFAULT_CONFIG } from '../src/protocol/config';
import { SafetensorsWriter, type TensorSpec } from '../src/engine/io/safetensors_writer';
import { f32ToBf16Bits } from '../src/engine/io/dtypes';
import { quantizeRun } from '../src/engine/run/pipeline';

const args = process.argv.slice(2);
const arg = (name: string, def: string) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : def;
};
const factor = Number(arg('factor', '1.5'));
const bits = Number(arg('bits', '2'));
const dir = arg('dir', '/tmp/lopro-memlarge');
const keep = args.includes('--keep'),
  append = !args.includes('--no-append');

const H = 8192,
  KV = 1024,
  I = 28672,
  V = 32000,
  B2 = 2; // BF16 bytes
const layerSpecs = (b: number): TensorSpec[] => {
  const p = `model.layers.${b}.`;
  return [
    { name: `${p}input_layernorm.weight`, dtype: 'BF16', shape: [H] },
    { name: `${p}self_attn.q_proj.weight`, dtype: 'BF16', shape: [H, H] },
    { name: `${p}self_attn.k_proj.weight`, dtype: 'BF16', shape: [KV, H] },
    { name: `${p}self_attn.v_proj.weight`, dtype: 'BF16', shape: [KV, H] },
    { name: `${p}self_attn.o_proj.weight`, dtype: 'BF16', shape: [H, H] },
    { name: `${p}post_attention_layernorm.weight`, dtype: 'BF16', shape: [H] },
    { name: `${p}mlp.gate_proj.weight`, dtype: 'BF16', shape: [I, H] },
    { name: `${p}mlp.up_proj.weight`, dtype: 'BF16', shape: [I, H] },
    { name: `${p}mlp.down_proj.weight`, dtype: 'BF16', shape: [H, I] },
  ];
};
const bytesOf = (s: TensorSpec) => s.shape.reduce((a, b) => a * b, 1) * B2;

function gaussianPool(bytes: number, seed: number): Uint16Array {
  const out = new Uint16Array(bytes / 2);
  let a = seed >>> 0;
  const u = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = Math.imul(a ^ (a >>> 15), a | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (((t ^ (t >>> 14)) >>> 0) + 0.5) / 4294967296;
  };
  for (let i = 0; i < out.length; i += 2) {
    const r = Math.sqrt(-2 * Math.log(u())),
      th = 2 * Math.PI * u();
    out[i] = f32ToBf16Bits(0.02 * r * Math.cos(th));
    if (i + 1 < out.length) out[i + 1] = f32ToBf16Bits(0.02 * r * Math.sin(th));
  }
  return out;
}

/**
 * The memory this process may use: physical RAM, or a smaller cgroup (v1 or v2) limit when the
 * benchmark runs inside one — then that limit plays the machine's RAM (the process is OOM-killed
 * if it goes above it, so finishing is itself the proof of bounded memory).
 */
function memoryLimit(): { bytes: number; source: string } {
  const total = os.totalmem();
  try {
    for (const line of readFileSync('/proc/self/cgroup', 'utf8').split('\n')) {
      const [, ctrl, p] = line.split(':');
      const file = ctrl === 'memory' ? `/sys/fs/cgroup/memory${p}/memory.limit_in_bytes` : ctrl === '' ? `/sys/fs/cgroup${p}/memory.max` : '';
      if (!file || !existsSync(file)) continue;
      const v = Number(readFileSync(file, 'utf8').trim());
      if (Number.isFinite(v) && v > 0 && v < total) return { bytes: v, source: `cgroup memory limit (${file})` };
    }
  } catch {
    // no cgroup information: physical RAM
  }
  return { bytes: total, source: 'physical RAM' };
}

async function main(): Promise<void> {
  const limit = memoryLimit();
  const ram = limit.bytes;
  const target = factor * ram;
  const fixed: TensorSpec[] = [{ name: 'model.embed_tokens.weight', dtype: 'BF16', shape: [V, H] }];
  const tail: TensorSpec[] = [
    { name: 'model.norm.weight', dtype: 'BF16', shape: [H] },
    { name: 'lm_head.weight', dtype: 'BF16', shape: [V, H] },
  ];
  const perLayer = layerSpecs(0).reduce((s, t) => s + bytesOf(t), 0);
  const fixedBytes = [...fixed, ...tail].reduce((s, t) => s + bytesOf(t), 0);
  const layers = Math.max(1, Math.ceil((target - fixedBytes) / perLayer));
  const specs = [...fixed, ...Array.from({ length: layers }, (_, b) => layerSpecs(b)).flat(), ...tail];
  const modelBytes = specs.reduce((s, t) => s + bytesOf(t), 0);
  const outBytes = (modelBytes / 2) * (bits / 16) * 1.1;
  mkdirSync(dir, { recursive: true });
  const fsInfo = statfsSync(dir);
  const free = fsInfo.bavail * fsInfo.bsize;
  if (free < modelBytes + 2 * outBytes + 2 ** 30) throw new Error(`needs ${((modelBytes + 2 * outBytes) / 1e9).toFixed(1)} GB free in ${dir}, has ${(free / 1e9).toFixed(1)} GB`);
  const file = path.join(dir, 'model.safetensors');
  console.error(`generating ${file}: ${layers} blocks, ${(modelBytes / 1e9).toFixed(2)} GB (${(modelBytes / ram).toFixed(2)}× RAM ${(ram / 1e9).toFixed(1)} GB)`);
  const t0 = performance.now();
  const pool = gaussianPool(64 * 2 ** 20, 7);
  const poolBytes = new Uint8Array(pool.buffer);
  const w = SafetensorsWriter.create(file, specs);
  let k = 0;
  for (const s of specs) {
    let left = bytesOf(s);
    let off = ((k++ * 7919 * 4096) % (poolBytes.length / 2)) & ~1; // a different window of the pool per tensor
    while (left > 0) {
      const n = Math.min(left, poolBytes.length - off);
      w.writeChunk(s.name, poolBytes.subarray(off, off + n));
      left -= n;
      off = 0;
    }
  }
  w.finish();
  const genSeconds = (performance.now() - t0) / 1000;
  console.error(`generated in ${genSeconds.toFixed(0)} s; quantizing (RTN W${bits}, data-free)…`);
  const t1 = performance.now();
  const summary = await quantizeRun(
    { modelPath: file, config: { ...DEFAULT_CONFIG, method: 'rtn', bits, layerOverrides: {} }, runDir: path.join(dir, 'run'), resume: false },
    { onProgress: (v) => v.kind === 'report' && v.message && console.error(v.message), onLayerDone: () => {}, log: (_l, m) => console.error(m) },
  );
  const qSeconds = (performance.now() - t1) / 1000;
  const peak = process.resourceUsage().maxRSS * 1024;
  const native = statSync(path.join(dir, 'run', 'native', 'model.safetensors')).size;
  const rows = [
    ['model (BF16, Llama-shaped)', `${(modelBytes / 1e9).toFixed(2)} GB, ${layers} blocks, ${summary.layers.length} matrices`],
    ['memory available', `${(ram / 1e9).toFixed(1)} GB, ${limit.source} (model = ${(modelBytes / ram).toFixed(2)}×; physical RAM ${(os.totalmem() / 1e9).toFixed(1)} GB)`],
    ['quantization', `RTN W${bits} g128 data-free, ${qSeconds.toFixed(0)} s (generation ${genSeconds.toFixed(0)} s)`],
    ['native output', `${(native / 1e9).toFixed(2)} GB, ${summary.bpw.toFixed(3)} bpw`],
    ['peak RSS', `${(peak / 1e9).toFixed(2)} GB (${((100 * peak) / ram).toFixed(1)}% of RAM, ${((100 * peak) / modelBytes).toFixed(1)}% of the model)`],
  ];
  const md = [
    `### memory_large — ${new Date().toISOString()} — ${os.cpus()[0]?.model ?? 'cpu'} × ${os.cpus().length}, CPU`,
    '',
    '| what | value |',
    '|---|---|',
    ...rows.map((r) => `| ${r[0]} | ${r[1]} |`),
    '',
  ].join('\n');
  console.log(md);
  if (append) execFileSync('flock', ['/tmp/lopro-results.lock', 'sh', '-c', 'cat >> "$1"', 'sh', path.join(__dirname, 'RESULTS.md')], { input: md + '\n' });
  if (!keep) rmSync(dir, { recursive: true, force: true });
}

main().catch((e) => {
  console.error(e);
  if (!keep) rmSync(dir, { recursive: true, force: true });
  process.exit(1);
});
