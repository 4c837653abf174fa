// The device-summed statistics pass on ORT's WebGPU EP (SwiftShader here and in CI) with XᵀX in row parts: the
// path a 70B down_proj's 3.06 GiB XᵀX takes on a GPU (parts summed on the device, Σ|x| read on the host at every
// batch, H finalised part by part) gives the CPU EP's whole-matrix statistics; and a dense block's stage graphs chained
// through device tensors give its full block graph.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { ComputeRuntime } from '../../../src/engine/compute/runtime';
import { LlamaForward, loadBlockWeights } from '../../../src/engine/model/llama_forward';
import { xtxParts } from '../../../src/engine/model/llama_graph';
import { openModel, cachedWeights } from '../../../src/engine/model/loader';
import { passStats } from '../../../src/engine/run/stat_passes';
import { rng } from '../compute/_seeded';

const SWIFTSHADER = '/usr/lib/chromium/vk_swiftshader_icd.json';
if (!process.env.VK_ICD_FILENAMES && existsSync(SWIFTSHADER)) process.env.VK_ICD_FILENAMES = SWIFTSHADER;

function relErr(got: ArrayLike<number>, want: ArrayLike<number>): number {
  let num = 0,
    den = 0;
  for (let i = 0; i < want.length; i++) {
    num += (got[i] - want[i]) ** 2;
    den += want[i] ** 2;
  }
  return Math.sqrt(num / den);
}

/** The WebGPU EP's runtime, or null with the test skipped where there is none (a failure where one is required). */
async function webgpuRuntime(t: TestContext): Promise<ComputeRuntime | null> {
  const rt = await ComputeRuntime.create({ ep: 'webgpu', log: () => {} });
  if (rt.ep === 'webgpu') return rt;
  // npm test installs SwiftShader and sets LOPRO_REQUIRE_DAWN: there, a missing WebGPU EP is a failure.
  if (process.env.LOPRO_REQUIRE_DAWN === '1') assert.fail(`no WebGPU EP: ${rt.attempts[0]?.reason}`);
  t.skip(`no WebGPU EP here: ${rt.attempts[0]?.reason}`);
  return null;
}

test('WebGPU EP: a device-summed statistics pass with XᵀX in row parts = the CPU EP whole', async (t) => {
  const gpuRt = await webgpuRuntime(t);
  if (!gpuRt) return;
  const m = openModel('fixtures/tiny');
  const weights = cachedWeights(m.weights);
  const cfg = m.cfg;
  const T = 32,
    B = 2,
    l = 0,
    n = cfg.intermediateSize;
  const r = rng(3);
  const ids = Int32Array.from({ length: 2 * B * T }, () => Math.floor(r() * cfg.vocabSize));
  const cpuRt = await ComputeRuntime.create({ ep: 'cpu' });
  const whole = new LlamaForward(cfg, T, cpuRt);
  const partBytes = 4 * n * 100; // 768-wide mlp_act in parts of 100 rows
  assert.ok(xtxParts(n, partBytes).length >= 3);
  const parted = new LlamaForward(cfg, T, gpuRt, undefined, partBytes);
  const embed = await weights('model.embed_tokens.weight');
  const w = await loadBlockWeights(cfg, l, weights);
  const x = [await whole.embed(ids.subarray(0, B * T), B, embed), await whole.embed(ids.subarray(B * T), B, embed)];
  const keys = ['mlp_act', 'attn_in'] as const;
  const hooks = { log: () => {} } as unknown as Parameters<typeof passStats>[7];
  const run = async (fwd: LlamaForward, rt: ComputeRuntime, sums: { onDevice: boolean }) =>
    passStats(
      fwd,
      rt,
      (k) => x[k],
      [
        [0, B],
        [B, B],
      ],
      await fwd.weightTensors(w, l),
      l,
      [...keys],
      hooks,
      2 * B,
      T,
      sums,
    );
  const onGpu = { onDevice: true };
  const [a, c] = [await run(whole, cpuRt, { onDevice: true }), await run(parted, gpuRt, onGpu)];
  assert.equal(onGpu.onDevice, true, 'the sums stayed on the device');
  for (const k of keys) {
    const [ha, hc] = [a.stats.get(k)!, c.stats.get(k)!];
    assert.ok(relErr(hc.H32, ha.H32) < 1e-4, `${k} H: ${relErr(hc.H32, ha.H32)}`);
    assert.ok(relErr(hc.absMean, ha.absMean) < 1e-4, `${k} mean|x|`);
  }
  m.close();
  await cpuRt.dispose();
  await gpuRt.dispose();
});

// A dense block's passes from the values kept on the device (kept_stages.ts), WebGPU EP: the kept attention output,
// h1 and activation stay device tensors between the stage graphs, and the chain gives the CPU EP's full block graph:
// its y and statistics (the stage sums fed back in too).
test('WebGPU EP: the kept-intermediate stage graphs, device tensors chained = the CPU EP full block', async (t) => {
  const gpuRt = await webgpuRuntime(t);
  if (!gpuRt) return;
  const m = openModel('fixtures/tiny');
  const weights = cachedWeights(m.weights);
  const cfg = m.cfg;
  const T = 32,
    B = 2,
    l = 1;
  const r = rng(4);
  const ids = Int32Array.from({ length: B * T }, () => Math.floor(r() * cfg.vocabSize));
  const cpuRt = await ComputeRuntime.create({ ep: 'cpu' });
  const cpu = new LlamaForward(cfg, T, cpuRt);
  const gpu = new LlamaForward(cfg, T, gpuRt);
  assert.equal(gpu.layout, 'in_out');
  const x = await cpu.embed(ids, B, await weights('model.embed_tokens.weight'));
  const w = await loadBlockWeights(cfg, l, weights);
  const full = await cpu.block(x, B, w, l, 'stats');
  const wT = await gpu.weightTensors(w, l);
  const xT = await gpuRt.upload(gpuRt.host(x, [B, T, cfg.hiddenSize]));
  const a = await gpu.stage('attn_out', xT, {}, wT, l);
  const mi = await gpu.stage('mlp_in', xT, { attn_out: a.kept }, wT, l);
  const first = await gpu.stage('mlp_act', xT, { h1: mi.kept }, wT, l);
  const act = await gpu.stage('mlp_act', xT, { h1: mi.kept }, wT, l, first.stats); // its sums fed back in
  const y = await gpu.stage('out', xT, { h1: mi.kept, act: act.kept }, wT, l);
  for (const k of [a.kept, mi.kept, act.kept, y.kept]) assert.equal(k.location, 'gpu-buffer', 'kept values stay on the device');
  assert.ok(relErr(await gpuRt.download(y.kept), full.y) < 1e-5, 'y');
  const stat = async (s: typeof a, k: 'attn_out' | 'mlp_in' | 'mlp_act', times: number) => {
    const st = s.stats!.stats.get(k)!;
    const want = full.stats!.get(k)!;
    assert.ok(
      relErr(
        await gpuRt.download(st.xtx[0]),
        want.xtx.map((v) => times * v),
      ) < 1e-5,
      `${k} xtx`,
    );
    assert.ok(
      relErr(
        st.absSum.data as Float32Array,
        want.absSum.map((v) => times * v),
      ) < 1e-5,
      `${k} abssum`,
    );
  };
  await stat(a, 'attn_out', 1);
  await stat(mi, 'mlp_in', 1);
  await stat(act, 'mlp_act', 2); // fed the sums of a first run: twice the batch's
  m.close();
  await cpuRt.dispose();
  await gpuRt.dispose();
});
