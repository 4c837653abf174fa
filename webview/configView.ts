// Config panel: one form over QuantizeConfig (vscode-elements) built from FORM_FIELDS (choices and
// number bounds from config.ts), live estimates (bits per weight, output size, peak memory) from the
// model/inspect summary, and validateConfig's messages shown inline under the field they are about.
// Start is disabled while there is any issue; the host checks the config again when a run starts.

import type { AvailableMemory } from '../src/protocol/machine_memory';
import { DEFAULT_CONFIG, PRESET_NAMES, applyPreset, validateConfig, type ConfigIssue, type PresetName, type QuantizeConfig } from '../src/protocol/config';
import type { ModelSummary } from '../src/protocol/messages';
import type { ConfigInitMessage, ToWebview } from '../src/protocol/webview';
import { post } from './api';
import { FORM_FIELDS, configFromForm, formValues, numberAttrs, type FormField, type FormValues } from './configForm';
import { bytes, clear, fmt, h } from './dom';
import { estimate } from './estimate';
import { allocate, type CurvePoint, InfeasibleTarget, planCurve } from '../src/protocol/allocate';
import type { Measurements } from '../src/protocol/plan';
import { drawPlanHeatmap } from './heatmap';

type ValueEl = HTMLElement & { value: string; checked?: boolean };

/** Keys a target's plan sets per layer (method: GPTQ or the one chosen here). */
const PLANNED = new Set(['bits', 'rank']);

export function configView(root: HTMLElement): (m: ToWebview) => void {
  let config: QuantizeConfig = { ...DEFAULT_CONFIG, layerOverrides: {} };
  let issues: ConfigIssue[] = [];
  let summary: ModelSummary | null = null;
  let machine: AvailableMemory | undefined;
  let running = false;
  /** The control of each form key (a radio group for radios). */
  const controls = new Map<string, ValueEl>();
  const helpers = new Map<string, HTMLElement>();

  const title = h('h1', { id: 'title' }, 'LoPRo: Quantize');
  const modelLine = h('p', { class: 'muted', id: 'model' });
  const estBox = h('div', { class: 'estimates', id: 'estimates' });
  const issuesBox = h('div', { class: 'issues', id: 'issues', role: 'alert' });
  const status = h('p', { class: 'status', id: 'status' });
  const startBtn = h('vscode-button', { id: 'start' }, 'Start quantization') as HTMLElement & { disabled: boolean };
  const cancelBtn = h('vscode-button', { id: 'cancel', secondary: true, onclick: () => post({ type: 'cancel' }) }, 'Cancel');
  const measureBtn = h('vscode-button', { id: 'measure', secondary: true }, 'Measure candidates') as HTMLElement & { disabled: boolean };
  // A target's plan before the run: the candidates measured once (into the output folder, where Start reuses them),
  // then planned here for whatever target is in the field.
  // The curve is the measurement's (drawn once); the plan is redrawn only when the target changes.
  let measured: { m: Measurements; settings: string; curve: CurvePoint[]; drawnFor?: number } | undefined;
  const planLine = h('p', { id: 'plan-line', class: 'muted' });
  const planHeat = h('div', { id: 'plan-preview' });
  const curveBox = h('div', { id: 'plan-curve' });
  const previewSection = h('section', { id: 'plan-preview-section', hidden: true }, h('h2', {}, 'Plan for the target'), planLine, curveBox, planHeat);

  /** Mixture-of-experts fields, hidden until the model turns out to have experts. */
  const moeGroups: HTMLElement[] = [];
  const group = (key: string, label: string | null, control: HTMLElement, help: string, moe = false) => {
    const helper = h('vscode-form-helper', { id: `help-${key}` }, help);
    helper.dataset.help = help;
    helpers.set(key, helper);
    const g = h('vscode-form-group', { variant: 'vertical', id: `group-${key}` }, label ? h('vscode-label', { for: key }, label) : null, control, helper);
    if (moe) {
      g.hidden = true;
      moeGroups.push(g);
    }
    return g;
  };
  const pickBtn = (field: 'calibText' | 'outputFolder') => h('vscode-button', { id: `pick-${field}`, secondary: true, onclick: () => post({ type: 'pick', field }) }, 'Browse…');
  const textfield = (key: string, type: string, attrs: Record<string, number> = {}) => {
    const el = h('vscode-textfield', { id: key, name: key, type, ...attrs }) as ValueEl;
    el.addEventListener('input', update);
    el.addEventListener('change', update);
    return el;
  };
  const outputFolder = textfield('outputFolder', 'text');

  function control(f: FormField): HTMLElement {
    let el: ValueEl;
    if (f.control === 'radio')
      el = h(
        'vscode-radio-group',
        { id: f.key },
        ...f.options!.map((o) => h('vscode-radio', { name: f.key, value: String(o), id: `${f.key}-${o}`, label: String(o) }, String(o))),
      ) as unknown as ValueEl;
    else if (f.control === 'select')
      el = h('vscode-single-select', { id: f.key, name: f.key }, ...f.options!.map((o) => h('vscode-option', { value: String(o) }, String(o)))) as unknown as ValueEl;
    else if (f.control === 'toggle') el = h('vscode-checkbox', { id: f.key, name: f.key, toggle: true }, f.label) as unknown as ValueEl;
    else el = textfield(f.key, f.control, f.control === 'number' ? numberAttrs(f.range) : {});
    if (f.control !== 'number' && f.control !== 'text') el.addEventListener('change', update);
    controls.set(f.key, el);
    if (f.key === 'calibText') return h('div', { class: 'row' }, el, pickBtn('calibText'));
    return el;
  }
  // "Start from": a preset's settings written into the config (and the fields it has); the fields stay editable.
  const PRESET_LABELS: Record<PresetName, string> = { none: 'our defaults', authors: "the LoPRo authors' code" };
  const presetSelect = h(
    'vscode-single-select',
    { id: 'preset', name: 'preset' },
    ...PRESET_NAMES.map((p) => h('vscode-option', { value: p }, PRESET_LABELS[p])),
  ) as unknown as ValueEl;
  presetSelect.addEventListener('change', () => {
    config = applyPreset(readForm(), presetSelect.value as PresetName);
    writeForm(config, outputFolder.value);
    update();
  });
  const presetGroup = group(
    'preset',
    'Start from',
    presetSelect,
    "The authors' code: alpha = mean|x|^2.4 clamped and range-normalised, log-Hessian column order, b_I = b_H = 256, 8 power iterations, rank chosen per layer, clip mse, and at 2 bits 20 rounds of alternating refinement.",
  );
  const fieldsOf = (section: FormField['section']) =>
    FORM_FIELDS.filter((f) => f.section === section).map((f) => group(f.key, f.control === 'toggle' ? null : f.label, control(f), f.help, f.moe));

  const form = h(
    'div',
    { class: 'form' },
    h('section', {}, h('h2', {}, 'Method'), presetGroup, ...fieldsOf('method')),
    h(
      'section',
      {},
      h('h2', {}, 'Calibration & output'),
      ...fieldsOf('calibration'),
      group('outputFolder', 'Output folder', h('div', { class: 'row' }, outputFolder, pickBtn('outputFolder')), 'The run (checkpoint, report) is written here.'),
      h('h2', {}, 'Compute'),
      ...fieldsOf('compute'),
    ),
  );
  clear(root);
  root.append(
    title,
    modelLine,
    h('div', { class: 'columns' }, form, h('aside', {}, h('h2', {}, 'Estimate'), estBox, issuesBox, h('div', { class: 'actions' }, startBtn, measureBtn, cancelBtn), status)),
    previewSection,
  );

  measureBtn.addEventListener('click', () => {
    if (measureBtn.disabled) return;
    status.textContent = 'Measuring candidates…';
    running = true;
    drawButtons();
    post({ type: 'measure', config, outputFolder: outputFolder.value });
  });

  /** What a measurement depends on in the form: everything but the target, bits and rank (and the folder it is in). */
  const measuredSettings = () => JSON.stringify({ ...config, targetBpw: 0, bits: 0, rank: 0, folder: outputFolder.value.trim() });

  function drawPreview(): void {
    if (measured && measured.settings !== measuredSettings()) measured = undefined; // other settings: measure again
    previewSection.hidden = !measured || !(config.targetBpw > 0) || !summary;
    if (previewSection.hidden || !measured || !summary || measured.drawnFor === config.targetBpw) return;
    measured.drawnFor = config.targetBpw;
    const layers = measured.m.layers;
    clear(curveBox);
    try {
      const plan = allocate(layers, config.targetBpw);
      planLine.textContent = `${fmt(plan.bpw, 4)} bits per weight (target ${config.targetBpw}), weighted error ${plan.loss.toExponential(3)}; measured in ${fmt(measured.m.seconds, 1)} s — Start reuses the measurement.`;
      planLine.classList.remove('error');
      drawPlanHeatmap(planHeat, summary.linears, new Map(plan.choices.map((ch, i) => [ch.name, layers[i].candidates[ch.candidate].config])));
      curveBox.append(curveSvg(measured.curve, config.targetBpw, plan.loss));
    } catch (e) {
      clear(planHeat);
      planLine.textContent = e instanceof InfeasibleTarget ? `No plan reaches ${config.targetBpw}: at least ${fmt(e.minBpw, 3)} bits per weight.` : String(e);
      planLine.classList.add('error');
    }
  }

  /** Weighted error against bits per weight (log scale), the current target's plan marked. */
  function curveSvg(points: { targetBpw: number; loss: number }[], target: number, loss: number): SVGElement {
    const W = 360,
      H = 140,
      pad = 28;
    const xs = [...points.map((p) => p.targetBpw), target],
      ys = [...points.map((p) => Math.log(p.loss)), Math.log(loss)].filter(Number.isFinite);
    const [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
    const X = (x: number) => pad + ((x - x0) / Math.max(1e-9, x1 - x0)) * (W - 2 * pad);
    const Y = (y: number) => H - pad + ((y0 - y) / Math.max(1e-9, y1 - y0)) * (H - 2 * pad);
    const ns = 'http://www.w3.org/2000/svg';
    const el = (tag: string, attrs: Record<string, string | number>, text?: string) => {
      const e = document.createElementNS(ns, tag);
      for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
      if (text) e.textContent = text;
      return e;
    };
    const svg = el('svg', { width: W, height: H, viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': 'error against bits per weight' }) as SVGElement;
    svg.append(
      el('polyline', { points: points.map((p) => `${X(p.targetBpw)},${Y(Math.log(p.loss))}`).join(' '), fill: 'none', stroke: 'currentColor', 'stroke-width': 1.5 }),
      el('circle', { cx: X(target), cy: Y(Math.log(loss)), r: 4, fill: 'var(--vscode-charts-orange, orange)', id: 'plan-marker' }),
      el('text', { x: pad, y: H - 6, 'font-size': 10, fill: 'currentColor' }, `${fmt(x0, 2)} bpw`),
      el('text', { x: W - pad - 40, y: H - 6, 'font-size': 10, fill: 'currentColor' }, `${fmt(x1, 2)} bpw`),
      el('text', { x: 2, y: 12, 'font-size': 10, fill: 'currentColor' }, 'weighted error (log)'),
    );
    return svg;
  }

  startBtn.addEventListener('click', () => {
    if (startBtn.disabled) return;
    status.textContent = 'Starting…';
    running = true;
    drawButtons();
    // `config` and its issues are the form's as of its last change: Start is enabled only without issues.
    post({ type: 'start', config, outputFolder: outputFolder.value });
  });

  function readForm(): QuantizeConfig {
    const v = {} as Record<string, string | boolean>;
    for (const f of FORM_FIELDS) {
      const el = controls.get(f.key)!;
      if (f.control === 'radio') v[f.key] = ([...el.querySelectorAll('vscode-radio')] as ValueEl[]).find((r) => r.checked)?.value ?? String(config[f.key]);
      else if (f.control === 'toggle') v[f.key] = !!el.checked;
      else v[f.key] = el.value;
    }
    return configFromForm(v as FormValues, config);
  }

  function writeForm(c: QuantizeConfig, folder: string): void {
    const v = formValues(c) as Record<string, string | boolean>;
    for (const f of FORM_FIELDS) {
      const el = controls.get(f.key)!;
      if (f.control === 'radio') for (const r of el.querySelectorAll('vscode-radio')) (r as ValueEl).checked = (r as ValueEl).value === v[f.key];
      else if (f.control === 'toggle') el.checked = v[f.key] === true;
      else el.value = String(v[f.key]);
    }
    outputFolder.value = folder;
  }

  /** Reads the form, validates it (validateConfig, the one set of rules) and shows the result. */
  function update(): void {
    config = readForm();
    issues = validateConfig(config);
    if (!outputFolder.value.trim()) issues.push({ field: 'outputFolder', message: 'choose an output folder' });
    for (const [key, helper] of helpers) {
      const mine = issues.filter((i) => i.field === key);
      helper.classList.toggle('invalid', mine.length > 0);
      if (mine.length) helper.textContent = mine.map((i) => i.message).join('; ');
      else if (config.targetBpw > 0 && PLANNED.has(key)) helper.textContent = 'Chosen per layer by the plan while a target is set.';
      else helper.textContent = helper.dataset.help ?? helper.textContent;
    }
    clear(issuesBox);
    if (issues.length)
      issuesBox.append(h('p', { class: 'error' }, `${issues.length} problem${issues.length > 1 ? 's' : ''}: `), h('ul', {}, ...issues.map((i) => h('li', {}, i.message))));
    drawButtons();
    drawEstimate();
    drawPreview();
  }

  function drawButtons(): void {
    startBtn.disabled = issues.length > 0 || running;
    measureBtn.hidden = !(config.targetBpw > 0) || summary?.kind !== 'llama';
    measureBtn.disabled = issues.length > 0 || running || !config.calibText;
    cancelBtn.hidden = !running;
  }

  function drawEstimate(): void {
    clear(estBox);
    if (!summary) {
      estBox.append(h('p', { class: 'muted' }, 'No model summary yet.'));
      return;
    }
    const e = estimate(summary, config, machine);
    const row = (id: string, label: string, value: string) => h('div', { class: 'est' }, h('span', { class: 'label' }, label), h('span', { class: 'value', id }, value));
    estBox.append(
      row(
        'est-bpw',
        config.targetBpw > 0 ? 'Bits per weight (at most: the target)' : config.rank === -1 ? 'Bits per weight (at most: rank chosen per layer)' : 'Bits per weight',
        fmt(e.bpw, 3),
      ),
      row('est-size', 'Output size', `${bytes(e.outputBytes)} (from ${bytes(e.inputBytes)}, ×${fmt(e.inputBytes / Math.max(1, e.outputBytes), 2)} smaller)`),
      row('est-peak', 'Peak host memory', `${bytes(e.peakBytes)} (budget ${bytes(e.budgetBytes)}${e.budgetAuto ? ', automatic' : ''})`),
      row(
        'est-layers',
        'Quantized layers',
        `${summary.linears.length} linears in ${summary.numBlocks} blocks, ${(100 * e.quantizedParams).toFixed(1)}% of ${fmt(summary.params / 1e6, 2)} M params`,
      ),
    );
  }

  return (m: ToWebview) => {
    switch (m.type) {
      case 'config/init':
        init(m);
        return;
      case 'picked':
        (m.field === 'outputFolder' ? outputFolder : controls.get(m.field)!).value = m.path;
        update();
        return;
      case 'error':
        running = false;
        status.textContent = `${m.action} failed: ${m.error.message}`;
        status.classList.add('error');
        update();
        return;
      case 'progress':
        if (m.value.kind === 'end') {
          running = false;
          status.textContent = m.value.message ?? '';
          update();
        } else if (m.value.kind === 'report' && running)
          status.textContent = `${m.value.percentage !== undefined ? `${m.value.percentage.toFixed(0)}% ` : ''}${m.value.message ?? ''}`;
        return;
      case 'plan/measured':
        running = false;
        status.textContent = `Measured ${m.measurements.layers.length} layers: change the target to see its plan.`;
        measured = { m: m.measurements, settings: measuredSettings(), curve: planCurve(m.measurements.layers) };
        update();
        return;
      case 'run/failed':
      case 'run/done':
        running = false;
        status.textContent = m.type === 'run/done' ? 'Finished.' : `Stopped: ${m.error.message}`;
        update();
        return;
      default:
        return;
    }
  };

  function init(m: ConfigInitMessage): void {
    summary = m.summary;
    machine = m.machineMemory;
    config = m.config;
    title.textContent = `LoPRo: Quantize ${m.modelPath.split(/[\\/]/).pop()}`;
    const experts = new Set(m.summary?.linears.filter((l) => l.expert !== undefined).map((l) => l.expert)).size;
    for (const g of moeGroups) g.hidden = experts === 0;
    modelLine.textContent = m.summary
      ? `${m.modelPath} · ${m.summary.family ?? m.summary.kind}${experts ? ` (${experts} experts)` : ''} · ${m.summary.numBlocks} blocks · ${m.summary.dtypes.join('/')} · ${bytes(m.summary.totalBytes)}`
      : `${m.modelPath} · could not inspect: ${m.inspectError?.message ?? 'unknown error'}`;
    // The elements render asynchronously: set values once they are defined.
    void customElements.whenDefined('vscode-textfield').then(() => {
      writeForm(m.config, m.outputFolder);
      update();
    });
  }
}
