// Webview panels: one base class that owns the panel, validates every incoming message
// (parseFromWebview) and queues outgoing ones until the view says `ready`.
// ConfigPanel (one per model), ResultsPanel (one per run dir), ComparePanel (one per pair);
// TryPanel (one per run dir) is in ./tryPanel.ts.

import { readFileSync } from 'node:fs';
import { totalmem } from 'node:os';
import { availableMemory, probeWith } from '../protocol/machine_memory';
import * as path from 'node:path';
import * as vscode from 'vscode';
import { ProtocolError } from '../protocol/rpc';
import { ErrorCode, type ModelSummary, type ProgressValue, type ProtocolErrorData } from '../protocol/messages';
import type { Measurements } from '../protocol/plan';
import { parseFromWebview, type FromWebview, type ToWebview, type ViewKind } from '../protocol/webview';
import type { QuantizeConfig } from '../protocol/config';
import { webviewHtml, webviewOptions } from './webviewHtml';

export const errorData = (e: unknown): ProtocolErrorData => ProtocolError.from(e).toData();

export abstract class Panel implements vscode.Disposable {
  protected readonly panel: vscode.WebviewPanel;
  private readonly disposables: vscode.Disposable[] = [];
  private ready = false;
  private queue: ToWebview[] = [];
  private disposed = false;
  readonly onDispose = new vscode.EventEmitter<void>();

  constructor(
    viewType: string,
    title: string,
    view: ViewKind,
    extensionUri: vscode.Uri,
    protected readonly log: vscode.OutputChannel,
    /** A panel VS Code restored after a reload (serializer), instead of a new one. */
    revived?: vscode.WebviewPanel,
  ) {
    this.panel = revived ?? vscode.window.createWebviewPanel(viewType, title, vscode.ViewColumn.Active, webviewOptions(extensionUri));
    if (revived) {
      this.panel.webview.options = webviewOptions(extensionUri);
      this.panel.title = title;
    }
    this.panel.iconPath = vscode.Uri.joinPath(extensionUri, 'media', 'icon.png');
    this.panel.webview.html = webviewHtml(this.panel.webview, extensionUri, view, title);
    this.disposables.push(
      this.panel.onDidDispose(() => this.dispose()),
      this.panel.webview.onDidReceiveMessage((raw: unknown) => {
        const msg = parseFromWebview(raw);
        if (!msg) {
          this.log.appendLine(`[host] rejected webview message: ${String(JSON.stringify(raw)).slice(0, 200)}`);
          return;
        }
        if (msg.type === 'ready') {
          this.ready = true;
          const q = this.queue;
          this.queue = [];
          q.forEach((m) => void this.panel.webview.postMessage(m));
        }
        this.handle(msg).catch((e) => this.post({ type: 'error', action: msg.type, error: errorData(e) }));
      }),
    );
  }

  /** Posts now if the view is ready, else after its `ready` (the first messages are never lost). */
  post(m: ToWebview): void {
    if (this.disposed) return;
    if (this.ready) void this.panel.webview.postMessage(m);
    else this.queue.push(m);
  }

  reveal(): void {
    this.panel.reveal(undefined, false);
  }

  protected abstract handle(msg: FromWebview): Promise<void>;

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    this.onDispose.fire();
    this.panel.dispose();
    this.disposables.forEach((d) => d.dispose());
  }
}

/** What the panels need from the extension (implemented by RunManager). */
export interface PanelHost {
  inspect(modelPath: string): Promise<ModelSummary>;
  startRun(modelPath: string, config: QuantizeConfig, runDir: string, resume: boolean): Promise<void>;
  measure(modelPath: string, config: QuantizeConfig, runDir: string, onProgress: (v: ProgressValue) => void): Promise<Measurements>;
  defaultRunDir(modelPath: string): string;
  cancel(): void;
  openLayer(panel: ResultsPanel, layer: string): Promise<void>;
  requantize(panel: ResultsPanel, layer: string, overrides: Record<string, unknown>): Promise<void>;
  apply(panel: ResultsPanel, layer: string, candidateId: string): Promise<void>;
  exportRun(runDir: string, format: 'native' | 'f16' | 'onnx', panel?: ResultsPanel): Promise<void>;
  evaluate(panel: ResultsPanel): Promise<void>;
  /** Opens the run's Try it panel (float and quantized model side by side). */
  tryIt(runDir: string): Promise<void>;
}

/**
 * One panel per key (a model path, a run dir): asked again, the open one is revealed — and a panel VS Code restored
 * after a reload for a key that already has one is closed.
 */
export class PanelRegistry<P extends Panel> {
  private readonly byKey = new Map<string, P>();

  get(key: string): P | undefined {
    return this.byKey.get(key);
  }

  all(): P[] {
    return [...this.byKey.values()];
  }

  open(key: string, create: () => P, revived?: vscode.WebviewPanel): P {
    const existing = this.byKey.get(key);
    if (existing) {
      revived?.dispose();
      existing.reveal();
      return existing;
    }
    const p = create();
    this.byKey.set(key, p);
    p.onDispose.event(() => this.byKey.delete(key));
    return p;
  }
}

export class ConfigPanel extends Panel {
  private static readonly byModel = new PanelRegistry<ConfigPanel>();

  static createOrShow(modelPath: string, config: QuantizeConfig, extensionUri: vscode.Uri, log: vscode.OutputChannel, host: PanelHost): ConfigPanel {
    return ConfigPanel.byModel.open(modelPath, () => new ConfigPanel(modelPath, config, extensionUri, log, host));
  }

  private constructor(
    readonly modelPath: string,
    private config: QuantizeConfig,
    extensionUri: vscode.Uri,
    log: vscode.OutputChannel,
    private readonly host: PanelHost,
  ) {
    super('lopro.config', `LoPRo: Quantize ${path.basename(modelPath)}`, 'config', extensionUri, log);
    void this.init();
  }

  private async init(): Promise<void> {
    const outputFolder = this.host.defaultRunDir(this.modelPath);
    try {
      const summary = await this.host.inspect(this.modelPath);
      // The engine runs on this machine: what it may use is what this process reads (an automatic budget's base).
      this.post({
        type: 'config/init',
        modelPath: this.modelPath,
        summary,
        config: this.config,
        outputFolder,
        machineMemory: availableMemory(probeWith(readFileSync, totalmem())),
      });
    } catch (e) {
      this.post({ type: 'config/init', modelPath: this.modelPath, summary: null, config: this.config, outputFolder, inspectError: errorData(e) });
    }
  }

  protected async handle(msg: FromWebview): Promise<void> {
    switch (msg.type) {
      case 'pick': {
        const folder = msg.field === 'outputFolder';
        const picked = await vscode.window.showOpenDialog({
          canSelectFiles: !folder,
          canSelectFolders: folder,
          canSelectMany: false,
          title: folder ? 'LoPRo: output folder' : 'LoPRo: calibration text',
          filters: folder ? undefined : { Text: ['txt', 'md', 'jsonl', '*'] },
          defaultUri: vscode.Uri.file(path.dirname(this.modelPath)),
        });
        if (picked?.[0]) this.post({ type: 'picked', field: msg.field, path: picked[0].fsPath });
        return;
      }
      case 'start': {
        // parseFromWebview checked the config's shape; its rules are checked once, by startRun.
        if (!msg.outputFolder.trim()) throw new ProtocolError(ErrorCode.BadConfig, 'choose an output folder', 'outputFolder');
        this.config = msg.config;
        try {
          await this.host.startRun(this.modelPath, msg.config, msg.outputFolder.trim(), false);
        } finally {
          // The run's own panel shows how it ended; here it only re-enables Start with a fresh folder.
          this.post({ type: 'progress', value: { kind: 'end', message: 'The run ended: see its results panel.' } });
          this.post({ type: 'picked', field: 'outputFolder', path: this.host.defaultRunDir(this.modelPath) });
        }
        return;
      }
      case 'measure': {
        if (!msg.outputFolder.trim()) throw new ProtocolError(ErrorCode.BadConfig, 'choose an output folder', 'outputFolder');
        this.config = msg.config;
        const measurements = await this.host.measure(this.modelPath, msg.config, msg.outputFolder.trim(), (value) => this.post({ type: 'progress', value }));
        this.post({ type: 'plan/measured', measurements });
        return;
      }
      case 'cancel':
        this.host.cancel();
        return;
      default:
        return;
    }
  }
}

export class ResultsPanel extends Panel {
  private static readonly byRun = new PanelRegistry<ResultsPanel>();

  static forRun(runDir: string, extensionUri: vscode.Uri, log: vscode.OutputChannel, host: PanelHost, revived?: vscode.WebviewPanel): ResultsPanel {
    return ResultsPanel.byRun.open(runDir, () => new ResultsPanel(runDir, extensionUri, log, host, revived), revived);
  }

  /** The results panel that was focused last (for the palette's Export commands). */
  static get active(): ResultsPanel | undefined {
    const open = ResultsPanel.byRun.all();
    return open.find((p) => p.panel.active) ?? open.at(-1);
  }

  private constructor(
    readonly runDir: string,
    extensionUri: vscode.Uri,
    log: vscode.OutputChannel,
    private readonly host: PanelHost,
    revived?: vscode.WebviewPanel,
  ) {
    super(ResultsPanel.viewType, `LoPRo Results: ${path.basename(runDir)}`, 'results', extensionUri, log, revived);
  }

  static readonly viewType = 'lopro.results';

  protected async handle(msg: FromWebview): Promise<void> {
    switch (msg.type) {
      case 'openLayer':
        return this.host.openLayer(this, msg.layer);
      case 'requantize':
        return this.host.requantize(this, msg.layer, msg.overrides);
      case 'apply':
        return this.host.apply(this, msg.layer, msg.candidateId);
      case 'export':
        return this.host.exportRun(this.runDir, msg.format, this);
      case 'evaluate':
        return this.host.evaluate(this);
      case 'tryIt':
        return this.host.tryIt(this.runDir);
      case 'cancel':
        this.host.cancel();
        return;
      default:
        return;
    }
  }
}

export class ComparePanel extends Panel {
  constructor(title: string, extensionUri: vscode.Uri, log: vscode.OutputChannel) {
    super('lopro.compare', title, 'compare', extensionUri, log);
  }
  protected async handle(): Promise<void> {}
}
