// The blocks × modules heatmap: one clickable cell per linear layer (a real <button>, so it is
// keyboard- and test-reachable), colour = log of the value between the min and max shown.
// Used for relative proxy loss (results) and for the log ratio of two runs (compare).

import type { LayerConfig } from '../src/protocol/config';
import type { LinearLayerInfo } from '../src/protocol/messages';
import { heatColor, heatTextColor } from './charts';
import { clear, fmt, h } from './dom';

export const MODULE_ORDER = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'];

export interface HeatmapOptions {
  /** Value per layer name; missing = not done yet. */
  values: Map<string, number>;
  /** Maps a value to [0,1] colour position. */
  scale: (v: number) => number;
  format: (v: number) => string;
  onClick?: (layer: LinearLayerInfo) => void;
  selected?: string;
  legend: [string, string];
  /** Colour map (default: sequential heatColor). */
  color?: (t: number) => string;
  /** Class of the cells (default hm-cell; a second heatmap in the same view takes its own, so counts stay per map). */
  cellClass?: string;
  /** Text of a done cell (default: format(value)). */
  text?: (l: LinearLayerInfo, v: number) => string;
}

/**
 * The heatmap column of a layer: its module, or for a mixture-of-experts block one column per expert role
 * (`experts.gate_proj`, `experts.w1`) whose cell holds every expert of the block: 8 or 128 experts stay
 * one readable row per block.
 */
export function columnOf(l: LinearLayerInfo): string {
  return l.expert === undefined ? l.module : l.module.replace(/^experts\.\d+\./, 'experts.');
}

/** Header text of a column: `q`, `gate`, `experts w1`, `shared gate`. */
export function columnLabel(col: string): string {
  return col
    .replace('_proj', '')
    .replace(/^experts\./, 'experts ')
    .replace(/^shared_expert\./, 'shared ');
}

export function drawHeatmap(container: HTMLElement, layers: LinearLayerInfo[], o: HeatmapOptions): void {
  clear(container);
  const columns = [...new Set(layers.map(columnOf))].sort((a, b) => rank(a) - rank(b));
  const blocks = [...new Set(layers.map((l) => l.block))].sort((a, b) => a - b);
  const byKey = new Map<string, LinearLayerInfo[]>();
  for (const l of layers) {
    const k = `${l.block}/${columnOf(l)}`;
    byKey.set(k, [...(byKey.get(k) ?? []), l]);
  }
  const grid = h('div', { class: 'heatmap', role: 'grid' });
  grid.style.gridTemplateColumns = `auto ${columns.map((c) => (c.startsWith('experts.') ? 'minmax(120px, 2fr)' : 'minmax(56px, 1fr)')).join(' ')}`;
  grid.append(h('div', { class: 'hm-corner' }, 'block'), ...columns.map((c) => h('div', { class: 'hm-col' }, columnLabel(c))));
  for (const b of blocks) {
    grid.append(h('div', { class: 'hm-row' }, String(b)));
    for (const c of columns) {
      const ls = byKey.get(`${b}/${c}`);
      if (!ls) grid.append(h('div', { class: 'hm-empty' }));
      else if (ls[0].expert === undefined) grid.append(cellOf(ls[0], o, false));
      else {
        // One small cell per expert, in expert order; the label is the expert's number.
        const group = h('div', { class: 'hm-experts', 'data-block': String(b), 'data-column': c });
        group.style.gridTemplateColumns = `repeat(${Math.min(ls.length, 16)}, 1fr)`;
        group.append(...ls.sort((x, y) => x.expert! - y.expert!).map((l) => cellOf(l, o, true)));
        grid.append(group);
      }
    }
  }
  const legend = h('div', { class: 'hm-legend' }, h('span', {}, o.legend[0]), h('div', { class: 'hm-ramp' }), h('span', {}, o.legend[1]));
  const ramp = legend.querySelector('.hm-ramp') as HTMLElement;
  for (let i = 0; i <= 10; i++) {
    const s = h('span');
    s.style.backgroundColor = (o.color ?? heatColor)(i / 10);
    ramp.append(s);
  }
  container.append(grid, legend);
}

function cellOf(l: LinearLayerInfo, o: HeatmapOptions, expert: boolean): HTMLElement {
  const v = o.values.get(l.name);
  const done = v !== undefined;
  const text = done ? (o.text?.(l, v) ?? o.format(v)) : '…';
  const cell = h(
    'button',
    {
      class: `${o.cellClass ?? 'hm-cell'}${expert ? ' hm-expert' : ''}${done ? ' done' : ' pending'}${o.selected === l.name ? ' selected' : ''}`,
      'data-layer': l.name,
      title: `${l.name} (${l.rows}×${l.cols})${done ? `: ${text}` : ': pending'}`,
      disabled: !done || !o.onClick,
    },
    expert ? String(l.expert) : text,
  );
  if (done) {
    const t = o.scale(v);
    cell.style.backgroundColor = (o.color ?? heatColor)(t);
    cell.style.color = o.color ? '#f5f5f5' : heatTextColor(t);
    if (o.onClick) cell.addEventListener('click', () => o.onClick!(l));
  }
  return cell;
}

/**
 * A plan as a heatmap (the config panel's preview, a target run's results): colour = the layer's bits, text = its
 * width and rank, or `gptq W2` where it is plain GPTQ. Cells are pm-cell, apart from the loss heatmap's.
 */
export function drawPlanHeatmap(
  container: HTMLElement,
  layers: LinearLayerInfo[],
  chosen: ReadonlyMap<string, Pick<LayerConfig, 'method' | 'bits' | 'rank'>>,
  o: Pick<HeatmapOptions, 'onClick' | 'selected'> = {},
): void {
  drawHeatmap(container, layers, {
    ...o,
    values: new Map([...chosen].map(([n, c]) => [n, c.bits])),
    scale: (v) => Math.min(1, Math.max(0, (v - 2) / 2)),
    format: (v) => `W${v}`,
    text: (l) => {
      const c = chosen.get(l.name)!;
      return c.method === 'gptq' || c.method === 'rtn' ? `${c.method} W${c.bits}` : `W${c.bits} r${c.rank}`;
    },
    cellClass: 'pm-cell',
    legend: ['2 bits', '4 bits'],
  });
}

/** Attention first, then the dense MLP, the experts, the shared expert (each in gate, up, down order). */
const rank = (c: string) => {
  const role = (m: string) => {
    const i = MODULE_ORDER.indexOf(m);
    if (i >= 0) return i;
    const j = ['w1', 'w3', 'w2'].indexOf(m);
    return j < 0 ? 50 : 4 + j;
  };
  if (c.startsWith('experts.')) return 100 + role(c.slice(8));
  if (c.startsWith('shared_expert.')) return 200 + role(c.slice(14));
  return role(c);
};

/** A log-scale mapping over the given values (flat when all are equal). */
export function logScale(values: number[]): { scale: (v: number) => number; lo: number; hi: number } {
  const pos = values.filter((v) => v > 0 && Number.isFinite(v));
  const lo = pos.length ? Math.min(...pos) : 1;
  const hi = pos.length ? Math.max(...pos) : 1;
  const a = Math.log(lo),
    b = Math.log(hi);
  return { lo, hi, scale: (v) => (b > a && v > 0 ? (Math.log(v) - a) / (b - a) : 0.5) };
}

export const pct = (v: number): string => `${fmt(100 * v, v < 0.001 ? 3 : 2)}%`;
