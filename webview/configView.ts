// Config panel: one form over QuantizeConfig (vscode-elements), live estimates (bits per weight,
// output size, peak memory) from the model/inspect summary, and validateConfig's messages shown
// inline under the field they are about. Start is disabled while there is any issue.

import { CLIP_MODES, DEFAULT_CONFIG, EXECUTION_PROVIDERS, METHODS, validateConfig, type QuantizeConfig } from '../src/protocol/config';
import type { ModelSummary } from '../src/protocol/messages';
import type { ConfigInitMessage, ToWebview } from '../src/protocol/webview';
import { post } from './api';
import { bytes, clear, fmt, h } from './dom';
import { estimate } from './estimate';

type NumKey = 'bits' | 'groupSize' | 'rank' | 'salientBlock' | 'hadamardBlock' | 'powerIters' | 'calibSamples' | 'ctx';
type ValueEl = HTMLElement & { value: string; checked?: boolean };

const NUMERIC: { key: NumKey; label: string; help: string }[] = [
  { key: 'groupSize', label: 'Group size', help: 'Columns per scale/zero group; -1 = one group per row.' },
  { key: 'rank', label: 'Rank r', help: 'Low-rank part (stage A); 0 disables it.' },
  { key: 'salientBlock', label: 'b_I (salient block)', help: 'Most important columns, left unrotated.' },
  { key: 'hadamardBlock', label: 'b_H (Hadamard block)', help: 'Walsh–Hadamard block width, a power of two.' },
  { key: 'powerIters', label: 'Power iterations', help: 'Per R1SVD round.' },
  { key: 'calibSamples', label: 'Calibration samples', help: 'Windows of ctx tokens (protocol: 128).' },
  { key: 'ctx', label: 'Context (tokens)', help: "0 = the model's protocol context." },
];

export function configView(root: HTMLElement): (m: ToWebview) => void {
  let config: QuantizeConfig = { ...DEFAULT_CONFIG, layerOverrides: {} };
  let summary: ModelSummary | null = null;
  let running = false;
  const fields = new Map<string, ValueEl>();
  const helpers = new Map<string, HTMLElement>();

  const title = h('h1', { id: 'title' }, 'LoPRo: Quantize');
  const modelLine = h('p', { class: 'muted', id: 'model' });
  const estBox = h('div', { class: 'estimates', id: 'estimates' });
  const issuesBox = h('div', { class: 'issues', id: 'issues', role: 'alert' });
  const status = h('p', { class: 'status', id: 'status' });
  const startBtn = h('vscode-button', { id: 'start' }, 'Start quantization') as HTMLElement & { disabled: boolean };
  const cancelBtn = h('vscode-button', { id: 'cancel', secondary: true, onclick: () => post({ type: 'cancel' }) }, 'Cancel');

  const group = (key: string, label: string, control: HTMLElement, help: string) => {
    const helper = h('vscode-form-helper', { id: `help-${key}` }, help);
    helper.dataset.help = help;
    helpers.set(key, helper);
    return h('vscode-form-group', { variant: 'vertical' }, h('vscode-label', { for: key }, label), control, helper);
  };
  const textfield = (key: string, type = 'number') => {
    const el = h('vscode-textfield', { id: key, name: key, type }) as ValueEl;
    fields.set(key, el);
    el.addEventListener('input', update);
    el.addEventListener('change', update);
    return el;
  };
  const select = (key: string, options: readonly string[]) => {
    const el = h('vscode-single-select', { id: key, name: key }, ...options.map((o) => h('vscode-option', { value: o }, o))) as ValueEl;
    fields.set(key, el);
    el.addEventListener('change', update);
    return el;
  };
  const bitsGroup = h('vscode-radio-group', { id: 'bits' }, ...[2, 3, 4, 8].map((b) => h('vscode-radio', { name: 'bits', value: String(b), id: `bits-${b}`, label: `${b}` }, `${b}`)));
  bitsGroup.addEventListener('change', update);
  const pickBtn = (field: 'calibText' | 'outputFolder') => h('vscode-button', { id: `pick-${field}`, secondary: true, onclick: () => post({ type: 'pick', field }) }, 'Browse…');

  const form = h(
    'div',
    { class: 'form' },
    h(
      'section',
      {},
      h('h2', {}, 'Method'),
      group('method', 'Method', select('method', METHODS), 'lopro = low rank + permuted partial Hadamard + GPTQ.'),
      group('bits', 'Bits', bitsGroup, 'Bits per code of the residual quantizer.'),
      group('clip', 'Group range', select('clip', CLIP_MODES), 'minmax = the protocol; mse = shrink each group range to the lowest error (better at 2–3 bits).'),
      ...NUMERIC.slice(0, 5).map((f) => group(f.key, f.label, textfield(f.key), f.help)),
    ),
    h(
      'section',
      {},
      h('h2', {}, 'Calibration & output'),
      group('calibText', 'Calibration text', h('div', { class: 'row' }, textfield('calibText', 'text'), pickBtn('calibText')), 'UTF-8 text file; empty = data-free (H = I).'),
      ...NUMERIC.slice(5).map((f) => group(f.key, f.label, textfield(f.key), f.help)),
      group('ep', 'Execution provider', select('ep', EXECUTION_PROVIDERS), 'ONNX Runtime EP for the forward passes.'),
      group('outputFolder', 'Output folder', h('div', { class: 'row' }, textfield('outputFolder', 'text'), pickBtn('outputFolder')), 'The run (checkpoint, report) is written here.'),
    ),
  );
  clear(root);
  root.append(title, modelLine, h('div', { class: 'columns' }, form, h('aside', {}, h('h2', {}, 'Estimate'), estBox, issuesBox, h('div', { class: 'actions' }, startBtn, cancelBtn), status)));

  startBtn.addEventListener('click', () => {
    if (startBtn.disabled) return;
    const outputFolder = fields.get('outputFolder')!.value;
    status.textContent = 'Starting…';
    running = true;
    update();
    post({ type: 'start', config, outputFolder });
  });

  function readForm(): QuantizeConfig {
    const c: QuantizeConfig = { ...config };
    const num = (k: string) => Number(fields.get(k)!.value.trim() === '' ? NaN : fields.get(k)!.value);
    for (const f of NUMERIC) (c as unknown as Record<string, number>)[f.key] = num(f.key);
    const checked = [...bitsGroup.querySelectorAll('vscode-radio')].find((r) => (r as ValueEl).checked) as ValueEl | undefined;
    c.bits = checked ? Number(checked.value) : c.bits;
    c.method = fields.get('method')!.value as QuantizeConfig['method'];
    c.clip = fields.get('clip')!.value as QuantizeConfig['clip'];
    c.ep = fields.get('ep')!.value as QuantizeConfig['ep'];
    c.calibText = fields.get('calibText')!.value;
    return c;
  }

  function writeForm(c: QuantizeConfig, outputFolder: string): void {
    for (const f of NUMERIC) fields.get(f.key)!.value = String(c[f.key]);
    fields.get('method')!.value = c.method;
    fields.get('clip')!.value = c.clip ?? 'minmax';
    fields.get('ep')!.value = c.ep;
    fields.get('calibText')!.value = c.calibText;
    fields.get('outputFolder')!.value = outputFolder;
    for (const r of bitsGroup.querySelectorAll('vscode-radio')) (r as ValueEl).checked = (r as ValueEl).value === String(c.bits);
  }

  function update(): void {
    config = readForm();
    const issues = validateConfig(config);
    if (!fields.get('outputFolder')!.value.trim()) issues.push({ field: 'outputFolder', message: 'choose an output folder' });
    for (const [key, helper] of helpers) {
      const mine = issues.filter((i) => i.field === key);
      helper.classList.toggle('invalid', mine.length > 0);
      if (mine.length) helper.textContent = mine.map((i) => i.message).join('; ');
      else helper.textContent = helper.dataset.help ?? helper.textContent;
    }
    clear(issuesBox);
    if (issues.length) issuesBox.append(h('p', { class: 'error' }, `${issues.length} problem${issues.length > 1 ? 's' : ''}: `), h('ul', {}, ...issues.map((i) => h('li', {}, h('b', {}, i.field), ': ', i.message))));
    startBtn.disabled = issues.length > 0 || running;
    cancelBtn.hidden = !running;
    drawEstimate();
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
      row('est-bpw', 'Bits per weight', fmt(e.bpw, 3)),
      row('est-size', 'Output size', `${bytes(e.outputBytes)} (from ${bytes(e.inputBytes)}, ×${fmt(e.inputBytes / Math.max(1, e.outputBytes), 2)} smaller)`),
      row('est-peak', 'Peak memory (rough)', bytes(e.peakBytes)),
      row('est-layers', 'Quantized layers', `${summary.linears.length} linears in ${summary.numBlocks} blocks, ${(100 * e.quantizedParams).toFixed(1)}% of ${fmt(summary.params / 1e6, 2)} M params`),
    );
  }

  return (m: ToWebview) => {
    switch (m.type) {
      case 'config/init':
        init(m);
        return;
      case 'picked':
        fields.get(m.field)!.value = m.path;
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
    modelLine.textContent = m.summary
      ? `${m.modelPath} · ${m.summary.kind} · ${m.summary.numBlocks} blocks · ${m.summary.dtypes.join('/')} · ${bytes(m.summary.totalBytes)}`
      : `${m.modelPath} · could not inspect: ${m.inspectError?.message ?? 'unknown error'}`;
    // The elements render asynchronously: set values once they are defined.
    void customElements.whenDefined('vscode-textfield').then(() => {
      writeForm(m.config, m.outputFolder);
      update();
    });
  }
}
