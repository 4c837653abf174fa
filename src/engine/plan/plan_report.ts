// `lopro plan`: a measurement file and a target → the plan, as a table or JSON (no model, no measuring).

import { readFileSync } from 'node:fs';
import { ErrorCode } from '../../protocol/messages';
import type { Allocator, Measurements, Plan } from '../../protocol/plan';
import { ProtocolError } from '../../protocol/rpc';
import { allocate, InfeasibleTarget, planCurve, type CurvePoint } from '../../protocol/allocate';
import { describePlan } from './plan_run';

export interface PlannedLayer {
  name: string;
  rows: number;
  cols: number;
  method: string;
  bits: number;
  rank: number;
  bpw: number;
  loss: number;
}

export interface PlanReport {
  file: string;
  plan: Plan;
  summary: string;
  layers: PlannedLayer[];
  /** The measured trade-off (allocate.ts planCurve). */
  curve: CurvePoint[];
}

export function planFromFile(file: string, targetBpw: number, allocator: Allocator): PlanReport {
  let meas: Measurements;
  try {
    meas = JSON.parse(readFileSync(file, 'utf8')) as Measurements;
  } catch (e) {
    throw new ProtocolError(ErrorCode.InvalidParams, `cannot read ${file}: ${(e as Error).message}`, file, 'pass the measurements.json of a run made with --target-bpw');
  }
  if (meas?.format !== 2 || !Array.isArray(meas.layers))
    throw new ProtocolError(ErrorCode.InvalidParams, `${file} is not a LoPRo measurements file (format 2)`, file, 'pass the measurements.json of a run made with --target-bpw');
  let plan: Plan;
  try {
    plan = allocate(meas.layers, targetBpw, allocator);
  } catch (e) {
    if (e instanceof InfeasibleTarget) throw new ProtocolError(ErrorCode.BadConfig, `targetBpw ${targetBpw}: ${e.message}`, 'targetBpw', `ask for at least ${e.minBpw.toFixed(3)}`);
    throw e;
  }
  const layers = plan.choices.map((ch, i) => {
    const l = meas.layers[i];
    const c = l.candidates[ch.candidate];
    return { name: l.name, rows: l.rows, cols: l.cols, method: c.config.method, bits: c.config.bits, rank: c.config.rank, bpw: c.bpw, loss: c.loss };
  });
  const curve = planCurve(meas.layers);
  return { file, plan, summary: describePlan(meas.layers, plan), layers, curve };
}

export function formatPlan(r: PlanReport): string {
  const w = Math.max(5, ...r.layers.map((l) => l.name.length));
  const lines = [
    `${'layer'.padEnd(w)}  shape        method   bits  rank  bpw     loss`,
    ...r.layers.map(
      (l) =>
        `${l.name.padEnd(w)}  ${`${l.rows}×${l.cols}`.padEnd(11)}  ${l.method.padEnd(7)}  ${String(l.bits).padStart(4)}  ${String(l.rank).padStart(4)}  ${l.bpw.toFixed(3)}  ${l.loss.toExponential(3)}`,
    ),
    `target ${r.plan.targetBpw} bpw (${r.plan.allocator}): ${r.plan.bpw.toFixed(4)} bpw, summed weighted error ${r.plan.loss.toExponential(4)}`,
    r.summary,
    'error vs bits per weight (the same measurement): ' + r.curve.map((c) => `${c.targetBpw.toFixed(2)} → ${c.loss.toExponential(3)}`).join(', '),
  ];
  return lines.join('\n');
}
