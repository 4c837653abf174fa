// Summarises ORT profiler JSONs (LOPRO_ORT_PROFILE=<prefix> on any engine command): per session file,
// the runs (count, mean wall of model_run), kernel events per run, kernel time by op type and by EP.
// On WebGPU the kernel times are the host-side dispatch times (the GPU runs asynchronously), so
// model_run − Σ kernel time ≈ ORT's own per-run overhead, and Σ kernel time / nodes ≈ the cost per node.
//
//   node --import tsx bench/ort_profile_summary.ts FILE.json [...] [--top 8]

import * as fs from 'node:fs';

interface Ev {
  cat: string;
  name: string;
  dur: number;
  args?: { op_name?: string; provider?: string };
}

const args = process.argv.slice(2);
const ti = args.indexOf('--top');
const top = ti >= 0 ? Number(args[ti + 1]) : 8;
const files = args.filter((a, i) => !a.startsWith('--') && (ti < 0 || i !== ti + 1));
for (const f of files) {
  let text = fs.readFileSync(f, 'utf8').trim();
  if (!text.endsWith(']')) text = text.replace(/,\s*$/, '') + ']';
  const ev = JSON.parse(text) as Ev[];
  const runs = ev.filter((e) => e.cat === 'Session' && e.name === 'model_run');
  if (runs.length === 0) continue;
  const kernels = ev.filter((e) => e.cat === 'Node' && e.name.endsWith('_kernel_time'));
  const byOp = new Map<string, [number, number]>(),
    byEp = new Map<string, number>();
  for (const k of kernels) {
    const op = k.args?.op_name ?? '?',
      e = byOp.get(op) ?? [0, 0];
    byOp.set(op, [e[0] + 1, e[1] + k.dur]);
    byEp.set(k.args?.provider ?? '?', (byEp.get(k.args?.provider ?? '?') ?? 0) + 1);
  }
  const runUs = runs.reduce((a, r) => a + r.dur, 0),
    kUs = kernels.reduce((a, k) => a + k.dur, 0);
  console.log(
    `${f}: ${runs.length} runs, mean ${(runUs / runs.length / 1000).toFixed(2)} ms/run; ${(kernels.length / runs.length).toFixed(0)} kernels/run, ` +
      `Σ kernel ${(kUs / runs.length / 1000).toFixed(2)} ms/run (${(kUs / Math.max(1, kernels.length)).toFixed(1)} µs/kernel); EPs ${JSON.stringify(Object.fromEntries(byEp))}`,
  );
  for (const [op, [n, us]] of [...byOp].sort((a, b) => b[1][1] - a[1][1]).slice(0, top))
    console.log(`    ${op.padEnd(14)} ${String(n).padStart(7)} × ${(us / n).toFixed(1).padStart(7)} µs = ${(us / 1000).toFixed(1).padStart(8)} ms`);
}
