// The blocks × modules heatmap: one clickable cell per linear layer (a real <button>, so it is
// keyboard- and test-reachable), colour = log of the value between the min and max shown.
// Used for relative proxy loss (results) and for the log ratio of two runs (compare).

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
}

export function drawHeatmap(container: HTMLElement, layers: LinearLayerInfo[], o: HeatmapOptions): void {
  clear(container);
  const modules = [...new Set(layers.map((l) => l.module))].sort((a, b) => rank(a) - rank(b));
  const blocks = [...new Set(layers.map((l) => l.block))].sort((a, b) => a - b);
  const byKey = new Map(layers.map((l) => [`${l.block}/${l.module}`, l]));
  const grid = h('div', { class: 'heatmap', role: 'grid' });
  grid.style.gridTemplateColumns = `auto repeat(${modules.length}, minmax(56px, 1fr))`;
  grid.append(h('div', { class: 'hm-corner' }, 'block'), ...modules.map((m) => h('div', { class: 'hm-col' }, m.replace('_proj', ''))));
  for (const b of blocks) {
    grid.append(h('div', { class: 'hm-row' }, String(b)));
    for (const m of modules) {
      const l = byKey.get(`${b}/${m}`);
      if (!l) {
        grid.append(h('div', { class: 'hm-empty' }));
        continue;
      }
      const v = o.values.get(l.name);
      const done = v !== undefined;
      const cell = h(
        'button',
        {
          class: `hm-cell${done ? ' done' : ' pending'}${o.selected === l.name ? ' selected' : ''}`,
          'data-layer': l.name,
          title: `${l.name} (${l.rows}×${l.cols})${done ? `: ${o.format(v)}` : ': pending'}`,
          disabled: !done || !o.onClick,
        },
        done ? o.format(v) : '…',
      );
      if (done) {
        const t = o.scale(v);
        cell.style.backgroundColor = (o.color ?? heatColor)(t);
        cell.style.color = o.color ? '#f5f5f5' : heatTextColor(t);
        if (o.onClick) cell.addEventListener('click', () => o.onClick!(l));
      }
      grid.append(cell);
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

const rank = (m: string) => {
  const i = MODULE_ORDER.indexOf(m);
  return i < 0 ? 100 : i;
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
