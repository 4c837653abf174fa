// Results view: live heatmap (blocks × modules, colour = relative proxy loss, one cell per
// layer/done), run status and progress, the run summary with perplexity, export buttons with the
// export's perplexity check, "Try it" (the float and the quantized model side by side) once the run is done,
// and the layer view below when a cell is clicked.

import type { LayerReport, LinearLayerInfo, RunSummary } from '../src/protocol/messages';
import type { RunBeginMessage, ToWebview } from '../src/protocol/webview';
import { post, setState } from './api';
import { bytes, clear, fmt, h } from './dom';
import { drawHeatmap, drawPlanHeatmap, logScale, pct } from './heatmap';
import { LayerView } from './layerView';

export function resultsView(root: HTMLElement): (m: ToWebview) => void {
  let begin: RunBeginMessage | undefined;
  let summary: RunSummary | undefined;
  const reports = new Map<string, LayerReport>();
  let selected: string | undefined;

  const title = h('h1', { id: 'title' }, 'LoPRo results');
  const runLine = h('p', { class: 'muted', id: 'run-dir' });
  const status = h('p', { class: 'status', id: 'run-status' }, 'Waiting for the engine…');
  const progress = h('vscode-progress-bar', { id: 'progress' }) as HTMLElement & { value: number; max: number; indeterminate: boolean };
  const cancelBtn = h('vscode-button', { id: 'cancel', secondary: true, onclick: () => post({ type: 'cancel' }) }, 'Cancel');
  const tryBtn = h(
    'vscode-button',
    { id: 'try-it', hidden: true, title: 'The float and the quantized model answer the same prompt side by side', onclick: () => post({ type: 'tryIt' }) },
    'Try it',
  );
  const heat = h('div', { id: 'heatmap-container' });
  // A target-size run: the plan each layer got (method, bits, rank), filled in as the layers are quantized.
  const planHeat = h('div', { id: 'plan-heatmap' });
  const planTitle = h('h2', {}, 'Plan: bits and rank per layer');
  const planSection = h('section', { id: 'plan-section', class: 'heat-section', hidden: true }, planTitle, planHeat);
  const summaryBox = h('div', { id: 'summary', class: 'summary' });
  const exportBox = h(
    'div',
    { class: 'actions', id: 'exports' },
    ...(['native', 'f16', 'onnx'] as const).map((f) =>
      h('vscode-button', { id: `export-${f}`, secondary: true, onclick: () => exportRun(f) }, `Export ${f === 'f16' ? 'F16' : f === 'onnx' ? 'ONNX' : 'native'}`),
    ),
  );
  const exportResult = h('div', { id: 'export-result' });
  const evalBtn = h('vscode-button', { id: 'evaluate', secondary: true, onclick: () => evaluate() }, 'Evaluate perplexity');
  /** Perplexity measured after the last change (undefined = as reported by the run). */
  let stalePerplexity = false;
  const layerBox = h('div', { id: 'layer-view' });
  const layerView = new LayerView(layerBox, () => reports);

  clear(root);
  root.append(
    title,
    runLine,
    h('div', { class: 'status-row' }, status, cancelBtn, tryBtn),
    progress,
    h('section', { class: 'heat-section' }, h('h2', {}, 'Relative proxy loss per layer  tr(ΔHΔᵀ) / tr(WHWᵀ)'), heat, summaryBox),
    planSection,
    h('section', { id: 'export-section', hidden: true }, h('h2', {}, 'Export'), exportBox, exportResult),
    layerBox,
  );
  exportBox.parentElement!.hidden = true;

  function exportRun(format: 'native' | 'f16' | 'onnx'): void {
    exportResult.textContent = `Exporting ${format} and checking that it loads and reproduces the run's perplexity…`;
    exportResult.className = 'status';
    post({ type: 'export', format });
  }

  function evaluate(): void {
    evalBtn.setAttribute('disabled', '');
    post({ type: 'evaluate' });
  }

  function layers(): LinearLayerInfo[] {
    return begin?.layers ?? [];
  }

  function redraw(): void {
    const values = new Map<string, number>();
    for (const [n, r] of reports) values.set(n, r.relProxyLoss);
    const { scale, lo, hi } = logScale([...values.values()]);
    drawHeatmap(heat, layers(), {
      values,
      scale,
      format: pct,
      selected,
      onClick: (l) => openLayer(l.name),
      legend: [pct(lo), pct(hi)],
    });
    heat.dataset.done = String(values.size);
    heat.dataset.total = String(layers().length);
    drawPlan();
  }

  function drawPlan(): void {
    const target = (summary?.config ?? begin?.config)?.targetBpw ?? 0;
    planSection.hidden = !(target > 0);
    if (planSection.hidden) return;
    planTitle.textContent = `Plan for ${target} bits per weight: bits and rank per layer (gptq = no low rank, no rotation)`;
    drawPlanHeatmap(planHeat, layers(), new Map([...reports].map(([n, r]) => [n, r.config])), { selected, onClick: (l) => openLayer(l.name) });
  }

  function openLayer(name: string): void {
    selected = name;
    redraw();
    layerView.loading(name);
    post({ type: 'openLayer', layer: name });
  }

  function drawSummary(s: RunSummary, seconds: number): void {
    clear(summaryBox);
    const ppl = s.perplexity
      ? Object.entries(s.perplexity)
          .map(([k, v]) => `${k}: ${fmt(v, 2)}${s.kl?.[k] !== undefined ? ` (KL from float ${fmt(s.kl[k], 4)} nats/token)` : ''}`)
          .join(', ')
      : stalePerplexity
        ? 'changed since the last evaluation'
        : 'not evaluated';
    const worst = [...s.layers].sort((a, b) => b.relProxyLoss - a.relProxyLoss)[0];
    summaryBox.append(
      h(
        'table',
        { class: 'kv' },
        row('Bits per weight', fmt(s.bpw, 3)),
        row(
          'Method',
          s.config.targetBpw > 0
            ? `${s.config.method} and gptq, planned per layer for ${s.config.targetBpw} bits per weight, group ${s.config.groupSize}`
            : `${s.config.method}, ${s.config.bits} bits, group ${s.config.groupSize}, rank ${s.config.rank}`,
        ),
        h('tr', {}, h('th', {}, 'Perplexity'), h('td', { id: 'perplexity' }, ppl, ' ', evalBtn)),
        row('Layers', `${s.layers.length}${worst ? ` (worst: ${worst.name}, ${pct(worst.relProxyLoss)})` : ''}`),
        row('Time', `${fmt(seconds, 1)} s on EP ${s.ep}${s.backend ? `, backend ${s.backend}` : ''}${s.resumed ? ' (resumed)' : ''}`, 'run-time'),
        s.peakHostBytes
          ? row(
              'Peak host memory',
              `${bytes(s.peakHostBytes)}${s.memoryPlan ? ` (planned ${bytes(s.memoryPlan.peakBytes)} within a budget of ${bytes(s.memoryPlan.budgetMB * 2 ** 20)}${s.memoryPlan.auto ? ', automatic' : ''})` : ''}`,
              'run-peak',
            )
          : null,
      ),
    );
  }

  return (m: ToWebview) => {
    switch (m.type) {
      case 'run/begin':
        begin = m;
        setState({ runDir: m.runDir }); // for the host's panel serializer after a window reload
        reports.clear();
        summary = undefined;
        title.textContent = `LoPRo results: ${m.modelPath.split(/[\\/]/).pop()}`;
        runLine.textContent = m.runDir;
        status.textContent = `Quantizing ${m.layers.length} layers in ${m.numBlocks} blocks…`;
        progress.hidden = false;
        progress.indeterminate = true;
        cancelBtn.hidden = false;
        tryBtn.hidden = true;
        redraw();
        return;
      case 'progress':
        if (m.value.kind !== 'end') {
          if (m.value.percentage !== undefined) {
            progress.indeterminate = false;
            progress.max = 100;
            progress.value = m.value.percentage;
          }
          const eta = m.value.kind === 'report' && m.value.etaSeconds !== undefined ? ` · about ${Math.ceil(m.value.etaSeconds)} s left` : '';
          status.textContent = `${m.value.message ?? 'Working'}${m.value.percentage !== undefined ? ` (${Math.round(m.value.percentage)}%)` : ''}${eta}`;
        }
        return;
      case 'layer/done':
        reports.set(m.report.name, m.report);
        redraw();
        return;
      case 'run/done':
        summary = m.summary;
        for (const r of m.summary.layers) reports.set(r.name, r);
        status.textContent = `Done: ${m.summary.layers.length} layers, ${fmt(m.summary.bpw, 3)} bits/weight, ${fmt(m.seconds, 1)} s.`;
        root.dataset.state = 'done';
        progress.hidden = true;
        cancelBtn.hidden = true;
        tryBtn.hidden = false;
        exportBox.parentElement!.hidden = false;
        drawSummary(m.summary, m.seconds);
        redraw();
        return;
      case 'run/failed':
        status.textContent = m.cancelled ? 'Cancelled.' : `Failed [${m.error.code}]: ${m.error.message}`;
        status.classList.toggle('error', !m.cancelled);
        root.dataset.state = m.cancelled ? 'cancelled' : 'failed';
        progress.hidden = true;
        cancelBtn.hidden = true;
        return;
      case 'layer/details':
        layerView.show(m.details, reports.get(m.details.name) ?? m.report ?? undefined, summary?.config ?? begin?.config);
        return;
      case 'layer/requantized':
        layerView.showCandidate(m);
        return;
      case 'layer/applied':
        stalePerplexity = !m.summary.perplexity;
        summary = m.summary;
        for (const r of m.summary.layers) reports.set(r.name, r);
        drawSummary(m.summary, m.summary.seconds);
        redraw();
        layerView.applied(m.layer, reports.get(m.layer));
        return;
      case 'eval/done':
        evalBtn.removeAttribute('disabled');
        if (summary) {
          summary = { ...summary, perplexity: m.perplexity, kl: undefined }; // run/eval measures perplexity only
          drawSummary(summary, summary.seconds);
        }
        return;
      case 'export/done': {
        const r = m.result;
        const check =
          r.perplexity !== undefined && r.runPerplexity !== undefined
            ? `export perplexity ${fmt(r.perplexity, 3)} vs run ${fmt(r.runPerplexity, 3)} (Δ ${fmt(Math.abs(r.perplexity - r.runPerplexity), 4)})`
            : 'no perplexity check (no evaluation text)';
        exportResult.className = 'ok';
        clear(exportResult);
        exportResult.append(h('p', { id: `export-done-${m.format}` }, `Exported ${m.format}: ${r.files.length} files, ${bytes(r.bytes)} → ${r.outDir}. Loaded back: ${check}.`));
        return;
      }
      case 'error':
        evalBtn.removeAttribute('disabled');
        if (m.action === 'export') {
          exportResult.className = 'error';
          exportResult.textContent = `Export failed [${m.error.code}]: ${m.error.message}`;
        } else layerView.error(m.action, m.error.message);
        return;
      default:
        return;
    }
  };
}

function row(k: string, v: string, id?: string): HTMLElement {
  return h('tr', {}, h('th', {}, k), h('td', { id }, v));
}
