// One layer's candidates, each quantized and scored by its layer-output error on the calibration tokens,
// tr(ΔW·H·ΔWᵀ) of Ŵ rebuilt from the stored parts (as the run's proxy loss). The loss is a sum over rows and GPTQ
// quantizes rows independently, so each candidate is quantized on every step-th row only and its loss scaled up:
// ~MEASURE_ROWS rows per candidate instead of all of them. Rank is the exception (the low-rank part couples the
// rows): the layer is factored once, on all rows, at the largest rank, and each rank's residual W − W_r is what
// the row sample quantizes (stages B and C of a rank-0 layer). The candidates of one method and rank share
// the residual, stage B and the factorization of H′; only the bit width's stage C runs per candidate.

import { bitsPerWeight, type LayerConfig, type Method } from '../../protocol/config';
import type { Candidate, LayerMeasurement } from '../../protocol/plan';
import type { Backend } from '../quant/backend';
import { gptq, prepareShared } from '../quant/gptq';
import { loproResidual, loproRotate } from '../quant/lopro';
import { columnScaleAlpha, leadingFactors, type LowRankFactors } from '../quant/r1svd';
import { layerSeed, type LayerInput } from '../run/quantize_layer';
import { baselineAsStored } from '../run/stored';

/** Rows each candidate is quantized on (about; every ⌊rows/MEASURE_ROWS⌋-th row). */
export const MEASURE_ROWS = 128;
/** Code widths a plan chooses from. */
export const PLAN_BITS = [2, 3, 4] as const;
/** Low-rank ranks a plan chooses from (LoPRo methods; clamped to the layer's shape). */
export const PLAN_RANKS = [0, 4, 16] as const;

/**
 * The candidate grid of a layer whose own config is `lc`: its method at every PLAN_BITS width and, for LoPRo
 * methods, every PLAN_RANKS rank — plus plain GPTQ, whose lack of α and permutation (32/m bits per weight)
 * can be the better buy on narrow layers. Every other key (group, clip, b_I, b_H, …) stays the layer's.
 */
export function candidateConfigs(lc: LayerConfig, rows: number, cols: number): Candidate['config'][] {
  const lopro = lc.method === 'lopro' || lc.method === 'lopro_v';
  const methods: Method[] = lopro ? ['gptq', lc.method] : [lc.method];
  const out: Candidate['config'][] = [];
  for (const method of methods) {
    const ranks = method === 'lopro' || method === 'lopro_v' ? [...new Set(PLAN_RANKS.map((r) => Math.min(r, rows, cols)))] : [0];
    for (const rank of ranks) for (const bits of PLAN_BITS) out.push({ method, bits, rank });
  }
  return out;
}

/** The layer's candidates; its block gain and stream energy are the caller's (sensitivity.ts). */
export async function measureLayer(backend: Backend, x: LayerInput, lc: LayerConfig, seed: number): Promise<Omit<LayerMeasurement, 'gain' | 'streamEnergy'>> {
  const { rows, cols } = x;
  const step = Math.max(1, Math.floor(rows / MEASURE_ROWS));
  const sampled = Math.ceil(rows / step);
  const configs = candidateConfigs(lc, rows, cols);
  const maxRank = Math.max(0, ...configs.map((c) => c.rank));
  const losses = new Map<Candidate['config'], number>();
  const s = backend.session();
  try {
    const W = await s.upload(x.W, rows, cols, 'W', x.name);
    const H = x.H ? await s.upload(x.H, cols, cols, 'H', x.name, x.H32) : await s.identity(cols);
    const { alpha, alphaBits } = columnScaleAlpha(x.absMean ?? null, cols, lc.beta, lc.alphaNorm);
    let factors: LowRankFactors | null = null;
    if (maxRank > 0) {
      const A = await s.scaleColumns(W, alpha);
      factors = await s.r1svd(A, { rank: maxRank, powerIters: lc.powerIters, seed: layerSeed(seed, x.name) });
      s.free(A);
    }
    // One group per method and rank: its residual's row sample, stage B and the damped Hessian's factorization
    // are shared by the group's bit widths (only stage C differs).
    const groups = new Map<string, Candidate['config'][]>();
    for (const c of configs) groups.set(`${c.method}/${c.rank}`, [...(groups.get(`${c.method}/${c.rank}`) ?? []), c]);
    for (const group of groups.values()) {
      const { method, rank } = group[0];
      const R = rank > 0 ? await s.subtractLowRank(W, leadingFactors(factors!, rank), alpha) : W;
      const Rs = await s.upload(Float32Array.from(await s.sampleRows(R, step)), sampled, cols, 'W', x.name);
      if (R !== W) s.free(R);
      const lopro = method === 'lopro' || method === 'lopro_v';
      const rotated = lopro ? await loproRotate(s, Rs, H, lc) : { Rt: Rs, Ht: H };
      const prepared = await prepareShared(s, rotated.Ht, lc.percDamp, x.name, () => {});
      try {
        for (const c of group) {
          const cfg: LayerConfig = { ...lc, ...c, rank: 0, actOrder: false, staticGroups: false };
          const wHat = lopro
            ? await s.reconstruct(
                (
                  await loproResidual(
                    s,
                    rotated as Awaited<ReturnType<typeof loproRotate>>,
                    { rows: sampled, cols, cfg, alphaBits, factors: null, seed: layerSeed(seed, x.name), name: x.name },
                    false,
                    prepared,
                  )
                ).stored,
              )
            : await s.reconstruct(
                baselineAsStored(
                  await gptq(s, Rs, H, {
                    bits: c.bits,
                    groupSize: lc.groupSize,
                    sym: lc.sym,
                    clip: lc.clip,
                    percDamp: lc.percDamp,
                    blockSize: lc.blockSize,
                    name: x.name,
                    onWarning: () => {},
                    prepared,
                  }),
                  sampled,
                  cols,
                  cfg,
                  false,
                ),
              );
          losses.set(c, (await s.proxyLosses(Rs, wHat, H))[0]);
          s.free(wHat);
        }
      } finally {
        s.free(prepared.Hinv, Rs);
        if (lopro) s.free(rotated.Rt, rotated.Ht);
      }
    }
  } finally {
    s.close();
  }
  const candidates: Candidate[] = configs.map((c) => ({ config: c, bpw: bitsPerWeight({ ...lc, ...c }, rows, cols), loss: (losses.get(c)! * rows) / sampled }));
  return { name: x.name, block: x.block, module: x.module, rows, cols, sampledRows: sampled, candidates };
}
