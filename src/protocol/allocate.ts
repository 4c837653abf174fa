// The allocation of a bit budget over layers: choose one measured candidate per layer so that the summed
// error (each weighted by weightOf) is smallest while Σ bpw·size ≤ target·Σ size (a multiple-choice knapsack). Two solvers:
//   exact  — dynamic programming over the budget in fixed units; each candidate's cost is rounded UP to whole
//            units, so a plan feasible in units is feasible in exact bits (the real bpw never exceeds the target)
//            and optimal up to that rounding;
//   greedy — from every layer's cheapest candidate, repeatedly take the upgrade on the layer's lower convex hull
//            with the largest error drop per bit that still fits (ExLlamaV3/AutoRound-style).
// Pure functions over the measurement; allocate_ref in the tests enumerates every plan of small cases.

import type { Allocator, LayerMeasurement, Plan, PlanChoice } from './plan';

/**
 * Units of the exact solver's spare budget: rounding a cost up wastes less than one per layer. As many as a
 * bounded amount of work allows (WORK candidate·unit steps), at least UNITS.
 */
const UNITS = 20000;
const MAX_UNITS = 400000;
const WORK = 4e8;

export class InfeasibleTarget extends Error {
  constructor(readonly minBpw: number) {
    super(`target below the smallest measured configuration (${minBpw.toFixed(4)} bits per weight)`);
  }
}

const size = (l: LayerMeasurement) => l.rows * l.cols;

function summarize(layers: readonly LayerMeasurement[], pick: readonly number[], targetBpw: number, allocator: Allocator): Plan {
  let bits = 0,
    n = 0,
    loss = 0;
  const choices: PlanChoice[] = layers.map((l, i) => {
    const c = l.candidates[pick[i]];
    bits += c.bpw * size(l);
    n += size(l);
    loss += c.loss;
    return { name: l.name, candidate: pick[i] };
  });
  return { targetBpw, bpw: n ? bits / n : 0, loss, allocator, choices };
}

/** The smallest bits per weight any plan reaches (every layer at its cheapest candidate). */
export function minPlanBpw(layers: readonly LayerMeasurement[]): number {
  let bits = 0,
    n = 0;
  for (const l of layers) {
    bits += Math.min(...l.candidates.map((c) => c.bpw)) * size(l);
    n += size(l);
  }
  return n ? bits / n : 0;
}

/**
 * What a layer's error counts for: its output error tr(ΔW·H·ΔWᵀ), times the share of it that reaches its block's
 * output (gain), over the energy of the residual stream it lands in (streamEnergy; with pre-norm blocks an error
 * matters relative to the stream it is added to). Chosen over the layer error alone and over the gain alone by the
 * perplexity of their plans (bench/RESULTS.md, issue 17).
 */
export function weightOf(l: LayerMeasurement): number {
  return l.gain / l.streamEnergy;
}

function weighted(layers: readonly LayerMeasurement[]): LayerMeasurement[] {
  return layers.map((l) => {
    const w = weightOf(l);
    return { ...l, candidates: l.candidates.map((c) => ({ ...c, loss: c.loss * w })) };
  });
}

export function allocate(measured: readonly LayerMeasurement[], targetBpw: number, allocator: Allocator = 'exact'): Plan {
  const layers = weighted(measured);
  if (!layers.length) return summarize([], [], targetBpw, allocator);
  for (const l of layers) if (!l.candidates.length) throw new Error(`${l.name}: no candidate measured`);
  const min = minPlanBpw(layers);
  if (min > targetBpw) throw new InfeasibleTarget(min);
  const g = summarize(layers, greedy(layers, targetBpw), targetBpw, allocator);
  if (allocator === 'greedy') return g;
  // Rounding costs up can leave the DP just short of a plan the greedy walk finds in exact bits: keep the better.
  const e = summarize(layers, exact(layers, targetBpw), targetBpw, allocator);
  return g.loss < e.loss ? g : e;
}

function exact(layers: readonly LayerMeasurement[], targetBpw: number): number[] {
  // Costs are counted above each layer's cheapest candidate (paid in any plan, exactly): the units then
  // divide only the bits there is a choice about, and rounding up loses at most one unit per layer of those.
  const floor = layers.map((l) => Math.min(...l.candidates.map((c) => c.bpw)) * size(l));
  const spare = targetBpw * layers.reduce((s, l) => s + size(l), 0) - floor.reduce((a, b) => a + b, 0);
  const cands = layers.reduce((s, l) => s + l.candidates.length, 0);
  const cap = Math.max(UNITS, Math.min(MAX_UNITS, Math.floor(WORK / cands)));
  const unit = spare / cap;
  const cost = (i: number, c: number) =>
    unit > 0 ? Math.ceil((layers[i].candidates[c].bpw * size(layers[i]) - floor[i]) / unit - 1e-9) : layers[i].candidates[c].bpw * size(layers[i]) > floor[i] ? cap + 1 : 0;
  // best[u] = least loss over the layers so far within u units; choice[i][u] = the candidate taken there.
  let best = new Float64Array(cap + 1).fill(0);
  const choice: Int16Array[] = [];
  for (let i = 0; i < layers.length; i++) {
    const l = layers[i];
    const next = new Float64Array(cap + 1).fill(Number.POSITIVE_INFINITY);
    const ch = new Int16Array(cap + 1).fill(-1);
    for (let c = 0; c < l.candidates.length; c++) {
      const w = cost(i, c),
        e = l.candidates[c].loss;
      for (let u = w; u <= cap; u++) {
        const v = best[u - w] + e;
        if (v < next[u]) {
          next[u] = v;
          ch[u] = c;
        }
      }
    }
    choice.push(ch);
    best = next;
  }
  const pick = new Array<number>(layers.length);
  let u = cap;
  for (let i = layers.length - 1; i >= 0; i--) {
    const c = choice[i][u];
    pick[i] = c;
    u -= cost(i, c);
  }
  return pick;
}

/** Indices of a layer's candidates on the lower convex hull of (bits, loss), cheapest first. */
function hull(l: LayerMeasurement): number[] {
  const idx = l.candidates.map((_, i) => i).sort((a, b) => l.candidates[a].bpw - l.candidates[b].bpw || l.candidates[a].loss - l.candidates[b].loss);
  const out: number[] = [];
  for (const i of idx) {
    const c = l.candidates[i];
    if (out.length && c.loss >= l.candidates[out[out.length - 1]].loss) continue; // more bits, no less error
    while (out.length >= 2) {
      const a = l.candidates[out[out.length - 2]],
        b = l.candidates[out[out.length - 1]];
      // b lies on or above the segment a→c: drop it.
      if ((b.loss - a.loss) * (c.bpw - a.bpw) >= (c.loss - a.loss) * (b.bpw - a.bpw)) out.pop();
      else break;
    }
    out.push(i);
  }
  return out;
}

function greedy(layers: readonly LayerMeasurement[], targetBpw: number): number[] {
  const hulls = layers.map(hull);
  const at = layers.map(() => 0);
  const budget = targetBpw * layers.reduce((s, l) => s + size(l), 0);
  let used = layers.reduce((s, l, i) => s + l.candidates[hulls[i][0]].bpw * size(l), 0);
  for (;;) {
    let bestI = -1,
      bestGain = 0;
    for (let i = 0; i < layers.length; i++) {
      const h = hulls[i];
      if (at[i] + 1 >= h.length) continue;
      const a = layers[i].candidates[h[at[i]]],
        b = layers[i].candidates[h[at[i] + 1]];
      const dBits = (b.bpw - a.bpw) * size(layers[i]);
      if (used + dBits > budget) continue;
      const gain = (a.loss - b.loss) / dBits;
      if (gain > bestGain) {
        bestGain = gain;
        bestI = i;
      }
    }
    if (bestI < 0) break;
    const h = hulls[bestI];
    used += (layers[bestI].candidates[h[at[bestI] + 1]].bpw - layers[bestI].candidates[h[at[bestI]]].bpw) * size(layers[bestI]);
    at[bestI]++;
  }
  return layers.map((_, i) => hulls[i][at[i]]);
}

/** Bits per weight of the plan that takes every layer's least-error candidate (more bits buy nothing). */
export function maxPlanBpw(layers: readonly LayerMeasurement[]): number {
  let bits = 0,
    n = 0;
  for (const l of layers) {
    const best = l.candidates.reduce((a, c) => (c.loss < a.loss ? c : a));
    bits += best.bpw * size(l);
    n += size(l);
  }
  return n ? bits / n : 0;
}

export interface CurvePoint {
  targetBpw: number;
  bpw: number;
  loss: number;
}

/**
 * The measured trade-off: the plan's weighted error at targets from the smallest plan up, every 0.25 bits (≤ 16
 * points). Drawn with the greedy walk (milliseconds per point; the exact solver's bounded work is spent on the one
 * plan that runs).
 */
export function planCurve(layers: readonly LayerMeasurement[]): CurvePoint[] {
  const lo = minPlanBpw(layers),
    hi = maxPlanBpw(layers);
  const out: CurvePoint[] = [];
  for (let t = Math.ceil(lo * 4) / 4; t <= hi + 0.25 && out.length < 16; t += 0.25) {
    const p = allocate(layers, Math.max(t, lo), 'greedy');
    out.push({ targetBpw: t, bpw: p.bpw, loss: p.loss });
  }
  return out;
}
