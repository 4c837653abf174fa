// Orchestrates runs for the UI: start (with progress, status bar, live heatmap), cancel, crash →
// "Resume", load, per-layer details / requantize / apply, export + its perplexity check, compare.
// The extension never does math: every number comes from the engine.

import * as fs from 'node:fs';
import * as path from 'node:path';
import * as vscode from 'vscode';
import { ProtocolError } from '../protocol/rpc';
import { ErrorCode, type EngineRequests, type ExportFormat, type LinearLayerInfo, type ModelSummary, type ProgressValue, type RunSummary } from '../protocol/messages';
import { describeIssues, validateConfig, type QuantizeConfig, type LayerConfig } from '../protocol/config';
import type { Measurements } from '../protocol/plan';
import { type EngineClient, withEngineProgress } from './engineClient';
import { ComparePanel, ConfigPanel, ResultsPanel, errorData, type PanelHost } from './panels';
import type { RunStatusBar } from './statusBar';
import { TryPanel } from './tryPanel';
import { readQuantizeConfig } from './settings';

const RECENT_KEY = 'lopro.recentRuns';
/** lopro.evalText: evaluated after each run and used to check exports. */
const evalText = (): string => vscode.workspace.getConfiguration('lopro').get<string>('evalText', '');
const MAX_POINTS = 256;

export class RunManager implements PanelHost, vscode.Disposable {
  private current: { controller: AbortController; runDir: string } | undefined;
  /** The last export and its check (what the notification showed); read by the ext-host tests. */
  lastExport: { format: ExportFormat; result: EngineRequests['run/export']['result'] } | undefined;
  /** Shows a run's failure with its actions ("Resume", "Show Log"); a seam for the ext-host tests. */
  errorPrompt = (message: string, ...actions: string[]): Thenable<string | undefined> => vscode.window.showErrorMessage(message, ...actions);
  private readonly summaries = new Map<string, ModelSummary>();
  /** Config of each run started or loaded in this session (the export check needs its texts). */
  private readonly runConfigs = new Map<string, QuantizeConfig>();

  constructor(
    private readonly context: vscode.ExtensionContext,
    readonly engine: EngineClient,
    private readonly log: vscode.OutputChannel,
    private readonly status: RunStatusBar,
  ) {}

  get isRunning(): boolean {
    return !!this.current;
  }

  async inspect(modelPath: string): Promise<ModelSummary> {
    const cached = this.summaries.get(modelPath);
    if (cached) return cached;
    const s = await this.engine.request('model/inspect', { path: modelPath }, { timeoutMs: 60_000 });
    this.summaries.set(modelPath, s);
    return s;
  }

  openConfig(modelPath: string): ConfigPanel {
    return ConfigPanel.createOrShow(modelPath, readQuantizeConfig(), this.context.extensionUri, this.log, this);
  }

  /** `<runsFolder>/<model>-<yyyymmdd-hhmmss>`; runsFolder defaults to <workspace>/lopro-runs. (Method and bits
   *  are not in the name: the user changes them in the panel after this is chosen.) */
  defaultRunDir(modelPath: string): string {
    const setting = vscode.workspace.getConfiguration('lopro').get<string>('runsFolder', '');
    const ws = vscode.workspace.getWorkspaceFolder(vscode.Uri.file(modelPath))?.uri.fsPath;
    const base = setting || path.join(ws ?? path.dirname(modelPath), 'lopro-runs');
    const model = path.basename(modelPath).replace(/\.safetensors$/, '');
    const stamp = new Date().toISOString().replace(/[-:]/g, '').replace('T', '-').slice(0, 15);
    return path.join(base, `${model}-${stamp}`);
  }

  cancel(): void {
    this.current?.controller.abort();
  }

  async startRun(modelPath: string, config: QuantizeConfig, runDir: string, resume: boolean): Promise<void> {
    if (this.current) throw new ProtocolError(ErrorCode.BadConfig, `a run is already going (${this.current.runDir})`, undefined, 'Cancel it first (LoPRo: Cancel).');
    // The host's one check of a run config (config panel, Resume, API), before a results panel opens
    // for a run the engine would refuse; the engine checks it again at its own entry for other clients.
    const issues = validateConfig(config);
    if (issues.length) throw new ProtocolError(ErrorCode.BadConfig, describeIssues(issues), String(issues[0].field));
    const summary = await this.inspect(modelPath);
    const panel = ResultsPanel.forRun(runDir, this.context.extensionUri, this.log, this);
    panel.post({ type: 'run/begin', runDir, modelPath, config, layers: summary.linears, numBlocks: summary.numBlocks });
    const controller = new AbortController();
    this.current = { controller, runDir };
    this.runConfigs.set(runDir, config);
    void vscode.commands.executeCommand('setContext', 'lopro.running', true);
    this.status.begin(path.basename(modelPath));
    this.log.appendLine(`[host] run/start ${modelPath} → ${runDir}${resume ? ' (resume)' : ''}`);
    const t0 = Date.now();
    const name = path.basename(modelPath);
    try {
      const result = await withEngineProgress(`LoPRo: quantizing ${name}`, controller, (signal, report) =>
        this.engine.request(
          'run/start',
          { modelPath, config, runDir, resume, evalTexts: evalText() ? [evalText()] : undefined },
          {
            signal,
            callbacks: {
              onProgress: (v: ProgressValue) => {
                report(v);
                this.status.update(v);
                panel.post({ type: 'progress', value: v });
              },
              onLayerDone: (report) => panel.post({ type: 'layer/done', report }),
            },
          },
        ),
      );
      const seconds = (Date.now() - t0) / 1000;
      this.log.appendLine(`[host] run finished in ${seconds.toFixed(1)} s: ${result.layers.length} layers, ${result.bpw.toFixed(3)} bpw`);
      panel.post({ type: 'run/done', summary: result, seconds });
      await this.remember(runDir);
      void vscode.window.showInformationMessage(`LoPRo: ${name} quantized to ${result.bpw.toFixed(2)} bits/weight in ${seconds.toFixed(1)} s.`);
    } catch (e) {
      const err = ProtocolError.from(e);
      const cancelled = err.code === ErrorCode.Cancelled;
      panel.post({ type: 'run/failed', error: err.toData(), cancelled });
      this.log.appendLine(`[host] run ${cancelled ? 'cancelled' : 'failed'}: ${err.code} ${err.message}`);
      if (cancelled) void vscode.window.showInformationMessage(`LoPRo: quantization of ${name} cancelled.`);
      else void this.offerResume(err, modelPath, config, runDir);
    } finally {
      this.current = undefined;
      void vscode.commands.executeCommand('setContext', 'lopro.running', false);
      this.status.end();
    }
  }

  /** The config panel's "Measure candidates": the measurement pass alone into runDir (a Start there reuses it). */
  async measure(modelPath: string, config: QuantizeConfig, runDir: string, onProgress: (v: ProgressValue) => void): Promise<Measurements> {
    if (this.current) throw new ProtocolError(ErrorCode.BadConfig, `a run is already going (${this.current.runDir})`, undefined, 'Cancel it first (LoPRo: Cancel).');
    const issues = validateConfig(config);
    if (issues.length) throw new ProtocolError(ErrorCode.BadConfig, describeIssues(issues), String(issues[0].field));
    const controller = new AbortController();
    this.current = { controller, runDir };
    void vscode.commands.executeCommand('setContext', 'lopro.running', true);
    this.log.appendLine(`[host] plan/measure ${modelPath} → ${runDir}`);
    try {
      return await withEngineProgress(`LoPRo: measuring ${path.basename(modelPath)}`, controller, (signal, report) =>
        this.engine.request(
          'plan/measure',
          { modelPath, config, runDir },
          {
            signal,
            callbacks: {
              onProgress: (v: ProgressValue) => {
                report(v);
                onProgress(v);
              },
            },
          },
        ),
      );
    } finally {
      this.current = undefined;
      void vscode.commands.executeCommand('setContext', 'lopro.running', false);
    }
  }

  /** Crash or failure: a clear message; crashes (and resumable failures) offer "Resume". */
  private async offerResume(err: ProtocolError, modelPath: string, config: QuantizeConfig, runDir: string): Promise<void> {
    const resumable = err.code === ErrorCode.EngineCrashed || err.code === ErrorCode.OutOfMemory || err.code === ErrorCode.Timeout;
    const text = `LoPRo: quantizing ${path.basename(modelPath)} failed [${err.code}]: ${err.message}${err.where ? ` (${err.where})` : ''}${err.hint ? ` ${err.hint}` : ''}`;
    const actions = resumable ? ['Resume', 'Show Log'] : ['Show Log'];
    const pick = await this.errorPrompt(text, ...actions);
    if (pick === 'Resume') await this.startRun(modelPath, config, runDir, true).catch((e) => this.showError('resume', e));
    if (pick === 'Show Log') this.log.show(true);
  }

  showError(action: string, e: unknown): void {
    const d = errorData(e);
    void vscode.window.showErrorMessage(`LoPRo ${action} failed [${d.code}]: ${d.message}${d.where ? ` (${d.where})` : ''}${d.hint ? ` ${d.hint}` : ''}`);
  }

  /** Loads a finished run into its results panel (a new one, or one VS Code restored after a reload). */
  async openRun(runDir: string, revived?: vscode.WebviewPanel): Promise<ResultsPanel> {
    const summary = await this.engine.request('run/load', { runDir }, { timeoutMs: 60_000 });
    const panel = ResultsPanel.forRun(runDir, this.context.extensionUri, this.log, this, revived);
    const layers: LinearLayerInfo[] = summary.layers.map((l) => ({ name: l.name, block: l.block, module: l.module, rows: l.rows, cols: l.cols }));
    const numBlocks = layers.reduce((m, l) => Math.max(m, l.block + 1), 0);
    panel.post({ type: 'run/begin', runDir, modelPath: summary.model, config: summary.config, layers, numBlocks });
    panel.post({ type: 'run/done', summary, seconds: summary.seconds });
    this.runConfigs.set(runDir, summary.config);
    await this.remember(runDir);
    return panel;
  }

  async openLayer(panel: ResultsPanel, layer: string): Promise<void> {
    const details = await this.engine.request('layer/details', { runDir: panel.runDir, layer, maxPoints: MAX_POINTS }, { timeoutMs: 60_000 });
    panel.post({ type: 'layer/details', details, report: null });
  }

  async requantize(panel: ResultsPanel, layer: string, overrides: Partial<LayerConfig>): Promise<void> {
    const t0 = Date.now();
    const r = await withEngineProgress(`LoPRo: re-quantizing ${layer}`, new AbortController(), (signal) =>
      this.engine.request('layer/requantize', { runDir: panel.runDir, layer, overrides }, { signal }),
    );
    panel.post({ type: 'layer/requantized', layer, before: r.before, after: r.after, candidateId: r.candidateId, afterDetails: null, seconds: (Date.now() - t0) / 1000 });
  }

  async apply(panel: ResultsPanel, layer: string, candidateId: string): Promise<void> {
    const summary = await this.engine.request('layer/apply', { runDir: panel.runDir, layer, candidateId }, { timeoutMs: 120_000 });
    panel.post({ type: 'layer/applied', layer, summary });
    void vscode.window.showInformationMessage(`LoPRo: applied the new ${layer} to the run (now ${summary.bpw.toFixed(3)} bits/weight).`);
  }

  /** run/export, then report the export's perplexity next to the run's (the engine's load-and-check). */
  async exportRun(runDir: string, format: ExportFormat, panel?: ResultsPanel): Promise<void> {
    const outDir = path.join(runDir, `export-${format}`);
    // The check's text: lopro.evalText, else the run's own calibration text (else none: no check).
    const verifyText = await this.checkText(runDir);
    const result = await withEngineProgress(`LoPRo: exporting ${path.basename(runDir)} (${format})`, new AbortController(), (signal) =>
      this.engine.request('run/export', { runDir, format, outDir, verifyText }, { signal }),
    );
    panel?.post({ type: 'export/done', format, result });
    this.lastExport = { format, result };
    const mb = (result.bytes / 2 ** 20).toFixed(2);
    const check =
      result.perplexity !== undefined && result.runPerplexity !== undefined
        ? ` Check: export perplexity ${result.perplexity.toFixed(3)} vs run ${result.runPerplexity.toFixed(3)}.`
        : ' (no perplexity check: no evaluation text)';
    this.log.appendLine(`[host] export ${format}: ${result.files.length} files, ${mb} MiB → ${result.outDir}.${check}`);
    void vscode.window.showInformationMessage(`LoPRo: exported ${format} (${result.files.length} files, ${mb} MiB) to ${result.outDir}.${check}`);
  }

  /** Perplexity of the run as it is now, on the evaluation text (else the calibration text). */
  async evaluate(panel: ResultsPanel): Promise<void> {
    const text = await this.checkText(panel.runDir);
    if (!text) throw new ProtocolError(ErrorCode.BadConfig, 'no text to evaluate on', 'lopro.evalText', 'Set lopro.evalText (or use a calibration text).');
    const perplexity = await withEngineProgress(`LoPRo: evaluating ${path.basename(panel.runDir)}`, new AbortController(), (signal) =>
      this.engine.request('run/eval', { runDir: panel.runDir, texts: [text] }, { signal }),
    );
    panel.post({ type: 'eval/done', perplexity });
  }

  async tryIt(runDir: string, revived?: vscode.WebviewPanel): Promise<void> {
    TryPanel.forRun(runDir, this.context.extensionUri, this.log, this.engine, revived);
  }

  /** The open Try it panel of a run (for the extension-host tests, which cannot click in a webview). */
  tryPanel(runDir: string): TryPanel | undefined {
    return TryPanel.of(runDir);
  }

  private async checkText(runDir: string): Promise<string | undefined> {
    let runConfig = this.runConfigs.get(runDir);
    if (!runConfig && !evalText()) runConfig = (await this.engine.request('run/load', { runDir }, { timeoutMs: 60_000 })).config;
    return evalText() || runConfig?.calibText || undefined;
  }

  async compare(runA: string, runB: string): Promise<void> {
    const [a, b] = await Promise.all([runA, runB].map((runDir) => this.engine.request('run/load', { runDir }, { timeoutMs: 60_000 })));
    // A run changed by "Apply to run" has no perplexity any more: measure both on the same text.
    const text = evalText();
    if (text && (!a.perplexity || !b.perplexity)) {
      await withEngineProgress('LoPRo: evaluating both runs for the comparison', new AbortController(), async (signal) => {
        for (const s of [a, b]) if (!s.perplexity) s.perplexity = await this.engine.request('run/eval', { runDir: s.runDir, texts: [text] }, { signal });
      });
    }
    const panel = new ComparePanel(`LoPRo: ${path.basename(runA)} vs ${path.basename(runB)}`, this.context.extensionUri, this.log);
    panel.post({ type: 'compare', a, b });
  }

  recentRuns(): string[] {
    return this.context.workspaceState.get<string[]>(RECENT_KEY, []).filter((d) => fs.existsSync(d));
  }

  private async remember(runDir: string): Promise<void> {
    const list = [runDir, ...this.recentRuns().filter((d) => d !== runDir)].slice(0, 20);
    await this.context.workspaceState.update(RECENT_KEY, list);
  }

  /** For the palette's Export commands: the focused results panel's run. */
  activeRunDir(): string | undefined {
    return ResultsPanel.active?.runDir;
  }

  dispose(): void {
    this.cancel();
  }
}

export type { RunSummary };
