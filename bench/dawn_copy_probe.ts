// Host ↔ device copy rates through dawn.node (compute/dawn.ts), by strategy, to decide how a LoPRo layer's
// W (180 MB) and H (67–485 MB) should go up and Ŵ come down. Prints a table; no assertions (a probe).
// Run on the device: /tmp/l/node .gpu/bench/dawn_copy_probe.js [MB,MB,...]

import { getDawnGpu } from '../src/engine/backend/gpu/dawn';

const now = () => performance.now() / 1000;

async function main() {
  const sizes = (process.argv[2] ?? '180,485').split(',').map((s) => Number(s) * 1e6);
  const { gpu, reason } = await getDawnGpu();
  if (!gpu) throw new Error(`no Dawn device: ${reason}`);
  console.log(`Dawn: ${gpu.label}`);
  const dev = gpu.device;
  const { GPUBufferUsage: U, GPUMapMode: M } = gpu.usage;
  const rows: string[][] = [];
  const time = async (what: string, bytes: number, f: () => Promise<void> | void) => {
    await f(); // warm (allocation paths, first touch)
    const ts: number[] = [];
    for (let r = 0; r < 3; r++) {
      await dev.queue.onSubmittedWorkDone();
      const t = now();
      await f();
      await dev.queue.onSubmittedWorkDone();
      ts.push(now() - t);
    }
    ts.sort((a, b) => a - b);
    rows.push([what, (bytes / 1e6).toFixed(0), ts[1].toFixed(3), (bytes / ts[1] / 1e9).toFixed(2)]);
    console.log(rows[rows.length - 1].join('\t'));
  };
  for (const bytes of sizes) {
    const n = Math.floor(bytes / 4);
    const f32 = new Float32Array(n).map((_, i) => i % 977);
    const f64 = Float64Array.from(f32);
    const dst = dev.createBuffer({ size: 4 * n, usage: U.STORAGE | U.COPY_SRC | U.COPY_DST });
    await time('js memcpy (Float32Array.set)', 4 * n, () => {
      new Float32Array(n).set(f32);
    });
    await time('js f64→f32 (Float32Array.set)', 4 * n, () => {
      new Float32Array(n).set(f64);
    });
    await time('mappedAtCreation (gpu.buffer)', 4 * n, () => gpu.buffer(f32).destroy());
    await time('mappedAtCreation + f64→f32 into the map', 4 * n, () => {
      const b = dev.createBuffer({ size: 4 * n, usage: U.STORAGE | U.COPY_SRC | U.COPY_DST, mappedAtCreation: true });
      new Float32Array(b.getMappedRange()).set(f64);
      b.unmap();
      b.destroy();
    });
    await time('queue.writeBuffer whole', 4 * n, () => dev.queue.writeBuffer(dst, 0, f32.buffer, 0, 4 * n));
    for (const chunkMB of [4, 16, 64]) {
      const c = chunkMB * 2 ** 20;
      await time(`queue.writeBuffer ${chunkMB} MiB chunks`, 4 * n, () => {
        for (let o = 0; o < 4 * n; o += c) dev.queue.writeBuffer(dst, o, f32.buffer, o, Math.min(c, 4 * n - o));
      });
    }
    for (const chunkMB of [16, 64]) {
      const c = chunkMB * 2 ** 20;
      const stages = [0, 1].map(() => dev.createBuffer({ size: c, usage: U.MAP_WRITE | U.COPY_SRC }));
      await time(`MAP_WRITE staging ×2 ${chunkMB} MiB + copyBufferToBuffer`, 4 * n, async () => {
        let k = 0;
        for (let o = 0; o < 4 * n; o += c, k++) {
          const s = stages[k % 2],
            len = Math.min(c, 4 * n - o);
          await s.mapAsync(M.WRITE);
          new Uint8Array(s.getMappedRange(0, len)).set(new Uint8Array(f32.buffer, o, len));
          s.unmap();
          const enc = dev.createCommandEncoder();
          enc.copyBufferToBuffer(s, 0, dst, o, len);
          dev.queue.submit([enc.finish()]);
        }
      });
      for (const s of stages) s.destroy();
    }
    await time('read (gpu.read, one staging buffer)', 4 * n, async () => {
      await gpu.read(dst, 4 * n);
    });
    await time('read into a Float32Array view (no slice)', 4 * n, async () => {
      const s = dev.createBuffer({ size: 4 * n, usage: U.MAP_READ | U.COPY_DST });
      const enc = dev.createCommandEncoder();
      enc.copyBufferToBuffer(dst, 0, s, 0, 4 * n);
      dev.queue.submit([enc.finish()]);
      await s.mapAsync(M.READ);
      const out = new Float32Array(n);
      out.set(new Float32Array(s.getMappedRange()));
      s.unmap();
      s.destroy();
    });
    for (const chunkMB of [16, 64]) {
      const c = chunkMB * 2 ** 20;
      await time(`read ${chunkMB} MiB chunks, 4 in flight`, 4 * n, async () => {
        const out = new Uint8Array(4 * n);
        const offs: number[] = [];
        for (let o = 0; o < 4 * n; o += c) offs.push(o);
        for (let i = 0; i < offs.length; i += 4) {
          await Promise.all(
            offs.slice(i, i + 4).map(async (o) => {
              const len = Math.min(c, 4 * n - o);
              const s = dev.createBuffer({ size: len, usage: U.MAP_READ | U.COPY_DST });
              const enc = dev.createCommandEncoder();
              enc.copyBufferToBuffer(dst, o, s, 0, len);
              dev.queue.submit([enc.finish()]);
              await s.mapAsync(M.READ);
              out.set(new Uint8Array(s.getMappedRange()), o);
              s.unmap();
              s.destroy();
            }),
          );
        }
      });
    }
    dst.destroy();
  }
  console.log('\n| strategy | MB | s (median of 3) | GB/s |\n|---|---:|---:|---:|');
  for (const r of rows) console.log(`| ${r.join(' | ')} |`);
  gpu.destroy();
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
