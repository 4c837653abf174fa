// Layer view: everything comes from `layer/details` (downsampled by the engine):
// column-importance curve (salient part highlighted), the permutation drawn as blocks (salient
// identity block vs Hadamard blocks) plus where each permuted column came from, the singular-value
// spectrum with the kept rank marked, residual histograms before/after rotation, the error
// histogram and error tile. Below: re-quantize this layer with other bits/rank/method, before and
// after side by side, and "Apply to run".

import type { Chart } from 'chart.js';
import { BITS, DEFAULT_LAYER_CONFIG, METHODS, pickLayerConfig, validateLayerConfig, type LayerConfig, type QuantizeConfig } from '../src/protocol/config';
import type { LayerDetails, LayerReport } from '../src/protocol/messages';
import type { RequantizedMessage } from '../src/protocol/webview';
import { post } from './api';
import { heatColor, makeChart, palette } from './charts';
import { clear, fmt, h } from './dom';
import { pct } from './heatmap';

type ValueEl = HTMLElement & { value: string; checked?: boolean; disabled?: boolean };

export class LayerView {
  private charts: Chart[] = [];
  private layer = '';
  private candidate: RequantizedMessage | undefined;
  private rqBox = h('div', { id: 'rq-result' });

  constructor(
    private readonly root: HTMLElement,
    private readonly reports: () => Map<string, LayerReport>,
  ) {}

  loading(name: string): void {
    this.destroyCharts();
    clear(this.root);
    this.root.append(h('h2', { id: 'layer-title' }, name), h('p', { class: 'muted' }, 'Loading layer details…'));
    this.root.scrollIntoView({ block: 'start' });
  }

  error(action: string, message: string): void {
    const box = this.root.querySelector('#rq-result') ?? this.root;
    box.append(h('p', { class: 'error' }, `${action} failed: ${message}`));
  }

  show(d: LayerDetails, report: LayerReport | undefined, runConfig: QuantizeConfig | undefined): void {
    this.destroyCharts();
    this.layer = d.name;
    this.candidate = undefined;
    clear(this.root);
    const p = palette();
    const cfg = report?.config;
    const chartBox = (id: string, heading: string) => {
      const canvas = h('canvas', { id });
      return { canvas, el: h('div', { class: 'chart-card' }, h('h3', {}, heading), h('div', { class: 'chart' }, canvas)) };
    };
    const imp = chartBox('chart-importance', 'Column importance (permuted order)');
    const perm = chartBox('chart-perm', 'Permutation: original column of each position');
    const sv = chartBox('chart-sv', `Singular values of W·diag(α) — rank ${d.rank} kept`);
    const rot = chartBox('chart-hist-rot', 'Residual distribution before / after rotation');
    const err = chartBox('chart-hist-err', 'Quantization error distribution');

    const blocksBar = h('div', { class: 'perm-blocks', id: 'perm-blocks' });
    for (const b of d.blocks) {
      const seg = h(
        'div',
        { class: `perm-block ${b.rotated ? 'hadamard' : 'salient'}`, title: `[${b.start}, ${b.end}) ${b.rotated ? 'Hadamard-rotated' : 'identity (salient, not rotated)'}` },
        b.rotated ? `H${b.end - b.start}` : `I ${b.end - b.start}`,
      );
      seg.style.flexGrow = String(b.end - b.start);
      blocksBar.append(seg);
    }
    const tile = h('div', { class: 'error-tile', id: 'error-tile' });
    tile.style.gridTemplateColumns = `repeat(${d.errorTile.cols}, 1fr)`;
    const tmax = Math.max(1e-30, ...d.errorTile.values);
    for (const v of d.errorTile.values) {
      const c = h('span', { title: fmt(v, 4) });
      c.style.backgroundColor = heatColor(v / tmax);
      tile.append(c);
    }

    this.root.append(
      h('div', { class: 'layer-head' }, h('h2', { id: 'layer-title' }, d.name), h('span', { class: 'muted' }, `${d.rows} × ${d.cols}`)),
      report ? reportTable(report) : h('p', { class: 'muted' }, 'No report for this layer.'),
      h(
        'div',
        { class: 'chart-grid' },
        imp.el,
        h('div', { class: 'chart-card' }, h('h3', {}, 'Permutation blocks (salient identity block, then Hadamard blocks)'), blocksBar, h('div', { class: 'chart' }, perm.canvas)),
        sv.el,
        rot.el,
        err.el,
        h('div', { class: 'chart-card' }, h('h3', {}, 'Mean |error| (row blocks × column blocks)'), tile),
      ),
      this.requantizeForm(cfg ?? runConfig),
      this.rqBox,
    );
    clear(this.rqBox);

    const salientEnd = d.blocks.find((b) => !b.rotated)?.end ?? 0;
    this.charts.push(
      makeChart(imp.canvas, {
        type: 'line',
        data: {
          datasets: [
            {
              label: 'importance',
              data: d.importance.x.map((x, i) => ({ x, y: d.importance.y[i] })),
              borderColor: p.blue,
              pointRadius: 0,
              segment: { borderColor: (c) => ((c.p0.parsed.x ?? 0) < salientEnd ? p.orange : p.blue) },
            },
          ],
        },
        options: {
          plugins: { legend: { display: false } },
          scales: { x: { type: 'linear', title: { display: true, text: `column (salient block [0, ${salientEnd}) in orange)` } }, y: { type: 'logarithmic' } },
        },
      }),
      makeChart(perm.canvas, {
        type: 'scatter',
        data: {
          datasets: [
            {
              label: 'original column',
              data: d.permSample.map((orig, i) => ({ x: Math.round((i * d.cols) / Math.max(1, d.permSample.length)), y: orig })),
              pointRadius: 1.5,
              backgroundColor: p.purple,
            },
          ],
        },
        options: {
          plugins: { legend: { display: false } },
          scales: { x: { title: { display: true, text: 'permuted position' } }, y: { title: { display: true, text: 'original column' } } },
        },
      }),
      makeChart(sv.canvas, {
        type: 'bar',
        data: {
          labels: d.singularValues.map((_, k) => String(k + 1)),
          datasets: [{ label: 'σ', data: d.singularValues, backgroundColor: d.singularValues.map((_, k) => (k < d.rank ? p.orange : p.blue)) }],
        },
        options: {
          plugins: { legend: { display: false } },
          scales: { y: { type: 'logarithmic' }, x: { title: { display: true, text: `k (first ${d.rank} = low-rank part, orange)` } } },
        },
      }),
      makeChart(
        rot.canvas,
        histConfig(d, [
          ['before rotation', d.histograms.residualBefore, p.orange],
          ['after rotation', d.histograms.residualAfter, p.blue],
        ]),
      ),
      makeChart(err.canvas, histConfig(d, [['error W − Ŵ', d.histograms.error, p.red]])),
    );
  }

  private requantizeForm(c: LayerConfig | undefined): HTMLElement {
    const method = h('vscode-single-select', { id: 'rq-method' }, ...METHODS.map((m) => h('vscode-option', { value: m }, m))) as ValueEl;
    const bits = h(
      'vscode-radio-group',
      { id: 'rq-bits' },
      ...BITS.map((b) => h('vscode-radio', { name: 'rq-bits', value: String(b), id: `rq-bits-${b}`, label: String(b), checked: c?.bits === b }, String(b))),
    );
    const rank = h('vscode-textfield', { id: 'rq-rank', type: 'number' }) as ValueEl;
    void customElements.whenDefined('vscode-textfield').then(() => {
      rank.value = String(c?.rank ?? 16);
      method.value = c?.method ?? 'lopro';
    });
    const go = h('vscode-button', { id: 'requantize' }, 'Re-quantize this layer') as ValueEl;
    go.addEventListener('click', () => {
      const checked = [...bits.querySelectorAll('vscode-radio')].find((r) => (r as ValueEl).checked) as ValueEl | undefined;
      const overrides: Partial<LayerConfig> = { method: method.value as LayerConfig['method'], rank: Number(rank.value) };
      if (checked) overrides.bits = Number(checked.value);
      // The same rules as everywhere (validateLayerConfig), over the layer's config with the changes.
      const issues = validateLayerConfig({ ...(c ? pickLayerConfig(c) : DEFAULT_LAYER_CONFIG), ...overrides });
      if (issues.length) {
        this.rqBox.textContent = issues.map((i) => i.message).join('; ');
        return;
      }
      clear(this.rqBox);
      this.rqBox.append(h('p', { class: 'status' }, `Re-quantizing ${this.layer} with ${JSON.stringify(overrides)} from the cached Hessian…`));
      post({ type: 'requantize', layer: this.layer, overrides });
    });
    return h(
      'section',
      { class: 'requantize' },
      h('h2', {}, 'Re-quantize this layer'),
      h('div', { class: 'row' }, h('vscode-label', {}, 'Method'), method, h('vscode-label', {}, 'Bits'), bits, h('vscode-label', {}, 'Rank'), rank, go),
    );
  }

  showCandidate(m: RequantizedMessage): void {
    if (m.layer !== this.layer) return;
    this.candidate = m;
    this.destroyCharts('chart-rq');
    clear(this.rqBox);
    const side = (label: string, r: LayerReport, id: string) => h('div', { class: 'side', id }, h('h3', {}, label), reportTable(r));
    const canvas = h('canvas', { id: 'chart-rq' });
    const apply = h('vscode-button', { id: 'apply' }, 'Apply to run');
    apply.addEventListener('click', () => {
      if (!this.candidate) return;
      this.rqBox.append(h('p', { class: 'status', id: 'apply-status' }, 'Applying…'));
      post({ type: 'apply', layer: m.layer, candidateId: m.candidateId });
    });
    const better = m.after.relProxyLoss < m.before.relProxyLoss;
    this.rqBox.append(
      h(
        'p',
        { class: better ? 'ok' : 'status' },
        `Re-quantized in ${fmt(m.seconds, 2)} s: relative proxy loss ${pct(m.before.relProxyLoss)} → ${pct(m.after.relProxyLoss)}, ${fmt(m.before.bpw, 3)} → ${fmt(m.after.bpw, 3)} bits/weight.`,
      ),
      h(
        'div',
        { class: 'before-after' },
        side('Before (in the run)', m.before, 'rq-before'),
        side('After (candidate)', m.after, 'rq-after'),
        h('div', { class: 'chart-card' }, h('h3', {}, 'Before / after'), h('div', { class: 'chart small' }, canvas)),
      ),
      h('div', { class: 'actions' }, apply),
    );
    const p = palette();
    this.charts.push(
      makeChart(canvas, {
        type: 'bar',
        data: {
          labels: ['rel. proxy loss (%)', 'bits / weight'],
          datasets: [
            { label: 'before', data: [100 * m.before.relProxyLoss, m.before.bpw], backgroundColor: p.orange },
            { label: 'after', data: [100 * m.after.relProxyLoss, m.after.bpw], backgroundColor: p.blue },
          ],
        },
      }),
    );
  }

  applied(layer: string, report: LayerReport | undefined): void {
    if (layer !== this.layer) return;
    const s = this.root.querySelector('#apply-status');
    const text = `Applied to the run${report ? `: ${pct(report.relProxyLoss)} at ${fmt(report.bpw, 3)} bits/weight` : ''}.`;
    if (s) s.textContent = text;
    else this.rqBox.append(h('p', { id: 'apply-status' }, text));
    s?.classList.add('ok');
    void this.reports;
  }

  private destroyCharts(onlyId?: string): void {
    this.charts = this.charts.filter((c) => {
      if (onlyId && c.canvas.id !== onlyId) return true;
      c.destroy();
      return false;
    });
  }
}

function histConfig(d: LayerDetails, series: [string, number[], string][]) {
  const e = d.histograms.edges;
  const centers = e.slice(0, -1).map((x, i) => (x + e[i + 1]) / 2);
  return {
    type: 'line' as const,
    data: {
      datasets: series.map(([label, counts, color]) => ({
        label,
        data: centers.map((x, i) => ({ x, y: counts[i] ?? 0 })),
        borderColor: color,
        backgroundColor: color + '33',
        fill: true,
        pointRadius: 0,
        stepped: 'middle' as const,
      })),
    },
    options: { scales: { x: { type: 'linear' as const } } },
  };
}

/** An expert's calibration: the tokens its router sent it, and whether its Hessian used those or every token. */
export function expertCalibration(r: LayerReport): string {
  const all = r.statistic?.endsWith(':all');
  return `expert ${r.expert}: ${r.tokens ?? 0} calibration tokens routed to it; Hessian from ${all ? 'every calibration token' : 'its routed tokens'}`;
}

function reportTable(r: LayerReport): HTMLElement {
  const row = (k: string, v: string) => h('tr', {}, h('th', {}, k), h('td', {}, v));
  return h(
    'table',
    { class: 'kv' },
    row('Config', `${r.config.method}, ${r.config.bits} bits, group ${r.config.groupSize}, rank ${r.config.rank}`),
    row('Bits / weight', fmt(r.bpw, 3)),
    r.expert !== undefined ? row('Expert', expertCalibration(r)) : null,
    row('Rel. proxy loss', pct(r.relProxyLoss)),
    row('Proxy loss tr(ΔHΔᵀ)', fmt(r.proxyLoss, 4)),
    r.lowRankEnergy !== undefined ? row('Low-rank energy', pct(r.lowRankEnergy)) : null,
    r.baselines
      ? row(
          'Same layer, other methods (proxy loss)',
          Object.entries(r.baselines)
            .map(([k, v]) => `${k}: ${fmt(v as number, 4)}`)
            .join(', '),
        )
      : null,
    r.notes.length ? row('Notes', r.notes.join('; ')) : null,
  );
}
