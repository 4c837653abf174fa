// "Try it": one panel per finished run, where the run's float model and its quantized model answer the same
// prompt side by side. Both `generate` requests start together and share one AbortController, so Stop cancels
// both; each side streams its text (generate/text, routed by request id) and ends on its own (done, failed or
// cancelled) in its column. Closing the panel lets the engine release the two models it kept open.

import * as path from 'node:path';
import type * as vscode from 'vscode';
import { ErrorCode, type RunSummary } from '../protocol/messages';
import { ProtocolError } from '../protocol/rpc';
import type { FromWebview, GenerateMessage, TrySide } from '../protocol/webview';
import type { EngineClient } from './engineClient';
import { Panel, PanelRegistry, errorData } from './panels';

/**
 * New text waits this long and goes to the webview in one message per side: a message per token, at a few
 * hundred tokens per second per side, queues up in the webview channel, and Stop's "cancelled" would show only
 * once the queued text had drained.
 */
const TEXT_FLUSH_MS = 50;

export class TryPanel extends Panel {
  private static readonly byRun = new PanelRegistry<TryPanel>();
  static readonly viewType = 'lopro.try';

  /** The run's panel, opened or revealed; `revived` = the panel VS Code restores after a window reload. */
  static forRun(runDir: string, extensionUri: vscode.Uri, log: vscode.OutputChannel, engine: EngineClient, revived?: vscode.WebviewPanel): TryPanel {
    return TryPanel.byRun.open(runDir, () => new TryPanel(runDir, extensionUri, log, engine, revived), revived);
  }

  /** The panel of `runDir`, if one is open (for the extension-host tests). */
  static of(runDir: string): TryPanel | undefined {
    return TryPanel.byRun.get(runDir);
  }

  private summary: Promise<RunSummary>;
  private running: AbortController | undefined;
  private readonly pending: Record<TrySide, string> = { float: '', quantized: '' };
  private readonly tokens: Record<TrySide, number> = { float: 0, quantized: 0 };
  private flushTimer: ReturnType<typeof setTimeout> | undefined;

  private constructor(
    readonly runDir: string,
    extensionUri: vscode.Uri,
    log: vscode.OutputChannel,
    private readonly engine: EngineClient,
    revived?: vscode.WebviewPanel,
  ) {
    super(TryPanel.viewType, `LoPRo Try it: ${path.basename(runDir)}`, 'try', extensionUri, log, revived);
    this.summary = engine.request('run/load', { runDir }, { timeoutMs: 60_000 });
    this.summary.then(
      (s) => this.post({ type: 'try/init', runDir, modelPath: s.model, bpw: s.bpw, ep: s.config.ep }),
      (e) => this.post({ type: 'error', action: 'try/init', error: errorData(e) }),
    );
  }

  /** True while a prompt is being answered. */
  get generating(): boolean {
    return !!this.running;
  }

  protected async handle(msg: FromWebview): Promise<void> {
    if (msg.type === 'generate') return this.generate(msg);
    if (msg.type === 'cancel') this.stop();
  }

  /** Stop: cancels both sides (each then reports "cancelled" in its column). */
  stop(): void {
    this.running?.abort();
  }

  /** Both models answer the prompt; resolves when both sides have ended, however they ended. */
  async generate(msg: Pick<GenerateMessage, 'prompt' | 'maxTokens' | 'temperature' | 'topP'>): Promise<void> {
    // The view disables Generate while one is going; a second one here would mix two answers in a column.
    if (this.running) throw new ProtocolError(ErrorCode.BadConfig, 'a prompt is still being answered', undefined, 'Stop it first.');
    const s = await this.summary;
    const controller = new AbortController();
    this.running = controller;
    // One seed for both sides: at a temperature above 0 the two columns draw the same random numbers.
    const base = { prompt: msg.prompt, maxTokens: msg.maxTokens, temperature: msg.temperature, topP: msg.topP, seed: s.config.seed, ep: s.config.ep };
    const side = async (side: TrySide, modelPath: string) => {
      try {
        const result = await this.engine.request(
          'generate',
          { ...base, path: modelPath },
          { signal: controller.signal, callbacks: { onText: (delta, tokens) => this.queueText(side, delta, tokens) } },
        );
        this.flushText();
        this.post({ type: 'try/done', side, result });
      } catch (e) {
        const err = ProtocolError.from(e);
        this.flushText();
        this.post({ type: 'try/failed', side, error: err.toData(), cancelled: err.code === ErrorCode.Cancelled });
        if (err.code !== ErrorCode.Cancelled) this.log.appendLine(`[host] try it (${side}) failed: ${err.code} ${err.message}`);
      }
    };
    try {
      await Promise.all([side('float', s.model), side('quantized', this.runDir)]);
    } finally {
      this.running = undefined;
    }
  }

  private queueText(side: TrySide, delta: string, tokens: number): void {
    this.pending[side] += delta;
    this.tokens[side] = tokens;
    this.flushTimer ??= setTimeout(() => this.flushText(), TEXT_FLUSH_MS);
  }

  /** Sends the text held back, in order, before anything that must follow it (a side's end). */
  private flushText(): void {
    if (this.flushTimer) clearTimeout(this.flushTimer);
    this.flushTimer = undefined;
    for (const side of ['float', 'quantized'] as const) {
      if (this.pending[side]) this.post({ type: 'try/text', side, delta: this.pending[side], tokens: this.tokens[side] });
      this.pending[side] = '';
    }
  }

  private released = false;

  override dispose(): void {
    this.stop();
    // dispose() runs twice (ours, then the webview's onDidDispose): release once. Only an engine that is up
    // holds models; asking a stopped one would start it for nothing.
    if (!this.released && this.engine.running)
      void this.summary.then((s) => this.engine.request('generate/release', { paths: [s.model, this.runDir] }, { timeoutMs: 30_000 })).catch(() => undefined);
    this.released = true;
    super.dispose();
  }
}
