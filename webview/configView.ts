// Config panel: one form over QuantizeConfig (vscode-elements) built from FORM_FIELDS (choices and
// number bounds from config.ts), live estimates (bits per weight, output size, peak memory) from the
// model/inspect summary, and validateConfig's messages shown inline under the field they are about.
// Start is disabled while there is any issue; the host checks the config again when a run starts.

import { DEFAULT_CONFIG, validateConfig, type ConfigIssue, type QuantizeConfig } from '../src/protocol/config';
import type { ModelSummary } from '../src/protocol/messages';
import type { ConfigInitMessage, ToWebview } from '../src/protocol/webview';
import { post } from './api';
import { FORM_FIELDS, configFromForm, formValues, numberAttrs, type FormField, type FormValues } from './configForm';
import { bytes, clear, fmt, h } from './dom';
import { estimate } from './estimate';

type ValueEl = HTMLElement & { value: string; checked?: boolean };

export function configView(root: HTMLElement): (m: ToWebview) => void {
  let config: QuantizeConfig = { ...DEFAULT_CONFIG, layerOverrides: {} };
  let issues: ConfigIssue[] = [];
  let summary: ModelSummary | null = null;
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
  const fieldsOf = (section: FormField['section']) =>
    FORM_FIELDS.filter((f) => f.section === section).map((f) => group(f.key, f.control === 'toggle' ? null : f.label, control(f), f.help, f.moe));

  const form = h(
    'div',
    { class: 'form' },
    h('section', {}, h('h2', {}, 'Method'), ...fieldsOf('method')),
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
    h('div', { class: 'columns' }, form, h('aside', {}, h('h2', {}, 'Estimate'), estBox, issuesBox, h('div', { class: 'actions' }, startBtn, cancelBtn), status)),
  );

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
      else helper.textContent = helper.dataset.help ?? helper.textContent;
    }
    clear(issuesBox);
    if (issues.length)
      issuesBox.append(h('p', { class: 'error' }, `${issues.length} problem${issues.length > 1 ? 's' : ''}: `), h('ul', {}, ...issues.map((i) => h('li', {}, i.message))));
    drawButtons();
    drawEstimate();
  }

  function drawButtons(): void {
    startBtn.disabled = issues.length > 0 || running;
    cancelBtn.hidden = !running;
  }

  function drawEstimate(): void {
    clear(estBox);
    if (!summary) {
      estBox.append(h('p', { class: 'muted' }, 'No model summary yet.'));
      return;
    }
    const e = estimate(summary, config);
    const row = (id: string, label: string, value: string) => h('div', { class: 'est' }, h('span', { class: 'label' }, label), h('span', { class: 'value', id }, value));
    estBox.append(
      row('est-bpw', config.targetBpw > 0 ? 'Bits per weight (at most: the target)' : 'Bits per weight', fmt(e.bpw, 3)),
      row('est-size', 'Output size', `${bytes(e.outputBytes)} (from ${bytes(e.inputBytes)}, ×${fmt(e.inputBytes / Math.max(1, e.outputBytes), 2)} smaller)`),
      row('est-peak', 'Peak memory (rough)', bytes(e.peakBytes)),
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
        }
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
