// Try it: a prompt box, and the float and the quantized model answering it side by side as their text
// streams in, each with its speed and how it stopped underneath. Stop cancels both (the host shares one
// AbortController between the two requests). Everything shown comes from the host's messages.

import { GENERATE_BOUNDS, generateBoundProblem, type GenerateResultData } from '../src/protocol/messages';
import { MAX_PROMPT_CHARS, type TrySide, type ToWebview } from '../src/protocol/webview';
import { post, setState } from './api';
import { clear, fmt, h } from './dom';

type ValueEl = HTMLElement & { value: string };

/** The engine's bounds (GENERATE_BOUNDS), so that a bad value is explained here. */
const FIELDS = [
  { id: 'maxTokens', label: 'Max tokens', value: '48', ...GENERATE_BOUNDS.maxTokens },
  { id: 'temperature', label: 'Temperature (0 = greedy)', value: '0', ...GENERATE_BOUNDS.temperature },
  { id: 'topP', label: 'Top-p', value: '1', ...GENERATE_BOUNDS.topP },
] as const;

class Column {
  readonly head = h('h2', { class: 'try-head' });
  readonly out = h('span', { class: 'try-out' });
  readonly promptEcho = h('span', { class: 'try-prompt muted' });
  readonly text = h('div', { class: 'try-text' }, this.promptEcho, this.out);
  readonly stats = h('p', { class: 'try-stats muted' }, ' ');
  readonly el: HTMLElement;
  private t0 = 0;
  private tokens = 0;

  constructor(readonly side: TrySide) {
    this.head.id = `head-${side}`;
    this.text.id = `text-${side}`;
    this.stats.id = `stats-${side}`;
    this.el = h('section', { class: 'try-col', id: `col-${side}` }, this.head, this.text, this.stats);
  }

  start(prompt: string): void {
    this.promptEcho.textContent = prompt;
    clear(this.out);
    this.stats.textContent = 'generating…';
    this.stats.className = 'try-stats muted';
    this.el.dataset.state = 'running';
    this.t0 = performance.now();
    this.tokens = 0;
  }

  append(delta: string, tokens: number): void {
    this.tokens = tokens;
    // Follow the end of the text while the reader is at the bottom; leave a scrolled-up reader alone.
    const atEnd = this.text.scrollTop + this.text.clientHeight >= this.text.scrollHeight - 4;
    this.out.append(delta);
    if (atEnd) this.text.scrollTop = this.text.scrollHeight;
  }

  done(r: GenerateResultData): void {
    this.el.dataset.state = 'done';
    this.stats.textContent = [
      `prompt ${r.promptTokens} tokens`,
      `prefill ${fmt(r.prefillTokensPerSecond, 1)} tok/s`,
      `decode ${fmt(r.decodeTokensPerSecond, 1)} tok/s`,
      `${r.tokens.length} tokens`,
      `stopped at ${r.stop === 'eos' ? 'end of sequence' : 'token limit'}`,
      `EP ${r.ep}`,
    ].join(' · ');
  }

  failed(code: string, message: string, cancelled: boolean): void {
    this.el.dataset.state = cancelled ? 'cancelled' : 'failed';
    const seconds = (performance.now() - this.t0) / 1000;
    // Cancelled: what had streamed, and its pace over the whole time (the prompt's prefill included).
    const pace = this.tokens > 0 ? ` · ${fmt(this.tokens / seconds, 1)} tok/s with prefill` : '';
    this.stats.textContent = cancelled ? `cancelled after ${fmt(seconds, 1)} s · ${this.tokens} tokens${pace}` : `failed [${code}]: ${message}`;
    this.stats.className = cancelled ? 'try-stats muted' : 'try-stats error';
  }
}

export function tryView(root: HTMLElement): (m: ToWebview) => void {
  const title = h('h1', { id: 'title' }, 'LoPRo: Try it');
  const runLine = h('p', { class: 'muted', id: 'try-run' }, 'Loading the run…');
  // Not resizable: the resize grip of vscode-textarea is a data: image, which our CSP (img-src without data:) refuses.
  const prompt = h('vscode-textarea', { id: 'prompt', rows: 4, placeholder: 'Type a prompt; both models continue it (Ctrl+Enter generates).' }) as ValueEl;
  const fields = new Map<string, ValueEl>();
  const fieldRow = h(
    'div',
    { class: 'try-fields' },
    ...FIELDS.map((f) => {
      // Decimals go in a text field: a number input counts its step from min and vscode-textfield has no step
      // "any", so 1 was a step mismatch (drawn red) for top-p's min of 1e-6. generate() checks every value.
      const el = h('vscode-textfield', 'integer' in f ? { id: f.id, type: 'number', min: f.min, max: f.max, step: 1 } : { id: f.id, type: 'text' }) as ValueEl;
      fields.set(f.id, el);
      return h('label', { class: 'try-field' }, h('span', { class: 'muted' }, f.label), el);
    }),
  );
  const generateBtn = h('vscode-button', { id: 'generate', disabled: true, onclick: () => generate() }, 'Generate') as ValueEl;
  const stopBtn = h('vscode-button', { id: 'stop', secondary: true, disabled: true, onclick: () => post({ type: 'cancel' }) }, 'Stop');
  const status = h('p', { class: 'status', id: 'try-status' });
  const columns = { float: new Column('float'), quantized: new Column('quantized') };
  let ended = 0;

  clear(root);
  root.append(
    title,
    runLine,
    prompt,
    h('div', { class: 'try-controls' }, fieldRow, h('div', { class: 'actions' }, generateBtn, stopBtn)),
    status,
    h('div', { class: 'try-columns' }, columns.float.el, columns.quantized.el),
  );
  void customElements.whenDefined('vscode-textfield').then(() => {
    for (const f of FIELDS) fields.get(f.id)!.value = f.value;
  });
  prompt.addEventListener('keydown', (e: KeyboardEvent) => {
    if (e.key === 'Enter' && (e.ctrlKey || e.metaKey) && !generateBtn.hasAttribute('disabled')) generate();
  });

  function setRunning(running: boolean): void {
    generateBtn.toggleAttribute('disabled', running);
    stopBtn.toggleAttribute('disabled', !running);
    root.dataset.state = running ? 'running' : 'idle';
  }

  /** The form's values, or the first problem with them (said in the status line, nothing sent). */
  function generate(): void {
    const text = prompt.value;
    const values: Record<string, number> = {};
    const problems: string[] = [];
    if (!text.trim()) problems.push('type a prompt');
    if (text.length > MAX_PROMPT_CHARS) problems.push(`the prompt is longer than ${MAX_PROMPT_CHARS} characters`);
    for (const f of FIELDS) {
      const v = Number(fields.get(f.id)!.value);
      const problem = generateBoundProblem(f.id, v);
      if (problem) problems.push(`${f.label} must be ${problem}`);
      values[f.id] = v;
    }
    status.textContent = problems.join('; ');
    status.className = problems.length ? 'status error' : 'status';
    if (problems.length) return;
    ended = 0;
    for (const c of Object.values(columns)) c.start(text);
    setRunning(true);
    post({ type: 'generate', prompt: text, maxTokens: values.maxTokens, temperature: values.temperature, topP: values.topP });
  }

  const sideEnded = () => {
    if (++ended === 2) setRunning(false);
  };

  return (m: ToWebview) => {
    switch (m.type) {
      case 'try/init': {
        setState({ runDir: m.runDir }); // for the host's panel serializer after a window reload
        const run = m.runDir.split(/[\\/]/).pop() ?? m.runDir;
        title.textContent = `LoPRo: Try it — ${run}`;
        runLine.textContent = `${m.runDir} · the float model and the quantized run answer the same prompt (the run's EP setting: ${m.ep})`;
        columns.float.head.textContent = `float — ${m.modelPath.split(/[\\/]/).pop()}`;
        columns.quantized.head.textContent = `quantized — ${run} (${fmt(m.bpw, 2)} bpw)`;
        generateBtn.removeAttribute('disabled');
        return;
      }
      case 'try/text':
        columns[m.side].append(m.delta, m.tokens);
        return;
      case 'try/done':
        columns[m.side].done(m.result);
        sideEnded();
        return;
      case 'try/failed':
        columns[m.side].failed(m.error.code, m.error.message, m.cancelled);
        sideEnded();
        return;
      case 'error':
        // A refused request (no side started), or the run that could not be loaded.
        status.textContent = `${m.action === 'try/init' ? 'Could not load the run' : 'Failed'} [${m.error.code}]: ${m.error.message}`;
        status.className = 'status error';
        if (m.action === 'generate') setRunning(false);
        return;
      default:
        return;
    }
  };
}
