// Checks every compute kernel on a chosen EP against its float64 reference, and reports the copies.
// Meant for the GPU machine (the unit tests pin the CPU EP):
//   node --import tsx bench/compute_check.ts --ep webgpu
import { ComputeRuntime, type EpChoice } from '../src/engine/compute/runtime';
import { choleskyInverseUpper, choleskyLower } from '../src/engine/linalg/cholesky';
import { choleskyInverseUpper_ref, choleskyLower_ref } from '../src/engine/linalg/cholesky_ref';
import { accumulateXtX, accumulateXtX_ref, gemmAccumulate, gemmAccumulate_ref, HessianAccumulator, matmul, matmul_ref } from '../src/engine/linalg/matmul';
import { blockHadamardColumns_ref, blockHadamardColumnsOrt } from '../src/engine/linalg/fwht';
import { fakeQuant, fakeQuant_ref } from '../src/engine/compute/fakequant';
import { randF32, randSpd, relMaxErr } from '../test/unit/compute/_seeded';

async function main(): Promise<void> {
  const i = process.argv.indexOf('--ep');
  const ep = (i > 0 ? process.argv[i + 1] : 'auto') as EpChoice;
  const rt = await ComputeRuntime.create({ ep });
  const rows: string[] = [];
  const check = (name: string, err: number, tol: number) => rows.push(`| ${name} | ${err.toExponential(2)} | ${tol} | ${err <= tol ? 'ok' : 'FAIL'} |`);

  const [m, k, n] = [129, 127, 257];
  const a = randF32(m * k, 1);
  const b = randF32(k * n, 2);
  check('matmul 129x127x257', relMaxErr(await matmul(a, b, m, k, n, { rt }), matmul_ref(a, b, m, k, n)), 1e-5);
  const c = randF32(m * n, 3);
  const cRef = Float64Array.from(c);
  gemmAccumulate_ref({ data: cRef, offset: 1, ld: n }, { data: a, ld: k }, { data: b, offset: 1, ld: n }, m, k, n - 1);
  await gemmAccumulate({ data: c, offset: 1, ld: n }, { data: a, ld: k }, { data: b, offset: 1, ld: n }, m, k, n - 1, { rt });
  check('gemmAccumulate strided', relMaxErr(c, cRef), 1e-5);
  const h = new Float32Array(k * k);
  const hRef = new Float64Array(k * k);
  const acc = await HessianAccumulator.create(k, rt);
  for (let t = 0; t < 3; t++) {
    const x = randF32(m * k, 10 + t);
    await accumulateXtX(h, x, m, k, { rt, alpha: 0.5, beta: 0.9 });
    await acc.add(x, m, 0.5, 0.9);
    accumulateXtX_ref(hRef, x, m, k, 0.5, 0.9);
  }
  check('XᵀX in place', relMaxErr(h, hRef), 1e-5);
  check('XᵀX resident accumulator', relMaxErr(await acc.result(), hRef), 1e-5);
  for (const nn of [129, 600]) {
    const spd = randSpd(nn, nn);
    for (const engine of ['host', 'device'] as const) {
      check(`choleskyLower n=${nn} (leaf 64, ${engine})`, relMaxErr(await choleskyLower(spd, nn, { rt, leaf: 64, engine }), choleskyLower_ref(spd, nn)), 1e-4);
      check(`choleskyInverseUpper n=${nn} (leaf 64, ${engine})`, relMaxErr(await choleskyInverseUpper(spd, nn, { rt, leaf: 64, engine }), choleskyInverseUpper_ref(spd, nn)), 1e-4);
    }
  }
  const R = randF32(129 * (128 + 4 * 128), 5);
  check('blockHadamardColumns ORT', relMaxErr(await blockHadamardColumnsOrt(R, 129, 640, 128, 128, rt), blockHadamardColumns_ref(R, 129, 640, 128, 128)), 1e-5);
  for (const sym of [false, true]) {
    const w = randF32(129 * 300, 6);
    const p = { bits: 3, groupSize: 128, sym };
    const got = await fakeQuant(w, 129, 300, p, { rt });
    const ref = fakeQuant_ref(w, 129, 300, p);
    // A mismatch at an exact tie of w/scale (e.g. −(maxq+1)/2 for the most negative weight of a sym
    // group) comes from a division that is not correctly rounded (WGSL allows 2.5 ulp); others are bugs.
    let ties = 0;
    let other = 0;
    for (let j = 0; j < w.length; j++) {
      if (got.codes[j] + 0 === ref.codes[j] + 0) continue;
      const x = w[j] / ref.scale[Math.floor(j / 300) * 3 + Math.floor((j % 300) / 128)];
      if (Math.abs(Math.abs(x - Math.trunc(x)) - 0.5) < 1e-5) ties++;
      else other++;
    }
    check(`fakeQuant w3 g128 sym=${sym}: code mismatches off ties (${ties} at exact ties)`, other, 0);
    if (ties === 0) check(`fakeQuant w3 g128 sym=${sym}: deq`, relMaxErr(got.deq, ref.deq), 1e-6);
  }
  console.log(`EP used: ${rt.ep}; attempts: ${JSON.stringify(rt.attempts)}`);
  console.log(['| check | error | tolerance | |', '|---|---:|---:|---|', ...rows].join('\n'));
  console.log(`copies: ${JSON.stringify(rt.counters)}`);
  await rt.dispose();
  if (rows.some((r) => r.includes('FAIL'))) process.exit(1);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
