// Compare two runs: config diff (only keys that differ), heatmap diff (log ratio of relative
// proxy loss, B over A: blue = B better, red = B worse), and perplexity side by side (runs whose
// weights changed after their evaluation are re-evaluated by the host before this view opens).

import { DEFAULT_CONFIG } from '../src/protocol/config';
import type { RunSummary } from '../src/protocol/messages';
import type { ToWebview } from '../src/protocol/webview';
import { clear, fmt, h } from './dom';
import { drawHeatmap, pct } from './heatmap';
import { divergingColor } from './charts';

export function compareView(root: HTMLElement): (m: ToWebview) => void {
  clear(root);
  root.append(h('h1', { id: 'title' }, 'LoPRo: compare runs'), h('p', { class: 'muted' }, 'Loading both runs…'));
  return (m: ToWebview) => {
    if (m.type !== 'compare') return;
    draw(root, m.a, m.b);
  };
}

const name = (s: RunSummary) => s.runDir.split(/[\\/]/).pop() ?? s.runDir;

function draw(root: HTMLElement, a: RunSummary, b: RunSummary): void {
  clear(root);
  // A run made before a setting existed ran with its default: compare it as such, not as "undefined".
  const ca = { ...DEFAULT_CONFIG, ...a.config } as unknown as Record<string, unknown>;
  const cb = { ...DEFAULT_CONFIG, ...b.config } as unknown as Record<string, unknown>;
  const keys = [...new Set([...Object.keys(ca), ...Object.keys(cb)])];
  const show = (v: unknown) => (typeof v === 'object' ? JSON.stringify(v) : String(v));
  const diff = keys.filter((k) => show(ca[k]) !== show(cb[k]));
  const cfgTable = h(
    'table',
    { class: 'grid-table', id: 'config-diff' },
    h('tr', {}, h('th', {}, 'setting'), h('th', {}, `A: ${name(a)}`), h('th', {}, `B: ${name(b)}`)),
    ...diff.map((k) => h('tr', {}, h('td', {}, k), h('td', {}, show(ca[k])), h('td', {}, show(cb[k])))),
    h('tr', {}, h('td', {}, 'bits / weight'), h('td', {}, fmt(a.bpw, 3)), h('td', {}, fmt(b.bpw, 3))),
  );
  const texts = [...new Set([...Object.keys(a.perplexity ?? {}), ...Object.keys(b.perplexity ?? {})])];
  const pplTable = h(
    'table',
    { class: 'grid-table', id: 'ppl-diff' },
    h('tr', {}, h('th', {}, 'perplexity'), h('th', {}, 'A'), h('th', {}, 'B'), h('th', {}, 'B − A')),
    ...texts.map((t) => {
      const pa = a.perplexity?.[t],
        pb = b.perplexity?.[t];
      return h(
        'tr',
        {},
        h('td', {}, t),
        h('td', {}, pa === undefined ? '—' : fmt(pa, 3)),
        h('td', {}, pb === undefined ? '—' : fmt(pb, 3)),
        h('td', {}, pa === undefined || pb === undefined ? '—' : fmt(pb - pa, 3)),
      );
    }),
  );
  const aBy = new Map(a.layers.map((l) => [l.name, l]));
  const values = new Map<string, number>();
  for (const l of b.layers) {
    const la = aBy.get(l.name);
    if (la && la.relProxyLoss > 0 && l.relProxyLoss > 0) values.set(l.name, Math.log2(l.relProxyLoss / la.relProxyLoss));
  }
  const m = Math.max(1e-9, ...[...values.values()].map(Math.abs));
  const heat = h('div', { id: 'heatmap-diff' });
  drawHeatmap(heat, b.layers, {
    values,
    // Diverging around 0.5 = equal: blue = B has the lower loss, red = higher.
    scale: (v) => 0.5 + v / (2 * m),
    color: divergingColor,
    format: (v) => `×${fmt(2 ** v, 2)}`,
    legend: [`B ${fmt(2 ** m, 2)}× better`, `B ${fmt(2 ** m, 2)}× worse`],
  });
  root.append(
    h('h1', { id: 'title' }, `Compare: ${name(a)} vs ${name(b)}`),
    h('h2', {}, 'Config differences'),
    diff.length ? cfgTable : h('p', {}, 'Same config.'),
    h('h2', {}, 'Perplexity'),
    texts.length ? pplTable : h('p', { class: 'muted' }, 'Neither run was evaluated.'),
    h('h2', {}, 'Relative proxy loss, B / A per layer'),
    heat,
    h('p', { class: 'muted' }, `A: ${a.layers.length} layers (${pct(mean(a))} mean), B: ${b.layers.length} layers (${pct(mean(b))} mean).`),
  );
}

const mean = (s: RunSummary) => s.layers.reduce((x, l) => x + l.relProxyLoss, 0) / Math.max(1, s.layers.length);
