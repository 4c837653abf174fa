// Activation: output channel, engine client, status bar, commands, and the `lopro.modelFolders`
// context key that puts "LoPRo: Quantize…" on model folders in the Explorer.
//
// Why a context key for folders: a when clause cannot look inside a folder, and
// `explorerResourceIsFolder` alone would offer Quantize on every folder. So the extension finds
// folders holding a config.json (workspace.findFiles, kept fresh by a file watcher) and publishes
// them as an object keyed by path; the menu's when clause is
// `explorerResourceIsFolder && resourcePath in lopro.modelFolders`. `.safetensors` files need no key
// (`resourceExtname == .safetensors`). Activation is `workspaceContains` on either, so the key is
// set before the user opens the Explorer's menu.

import * as path from 'node:path';
import * as vscode from 'vscode';
import type { ExportFormat } from '../protocol/messages';
import { parseFromWebview } from '../protocol/webview';
import { EngineClient } from './engineClient';
import { RunManager } from './runs';
import { TryPanel } from './tryPanel';
import { ResultsPanel } from './panels';
import { RunStatusBar } from './statusBar';
import { readQuantizeConfig } from './settings';

export interface LoproApi {
  engine: EngineClient;
  runs: RunManager;
  /** Exposed for the extension-host tests: the validator every webview message goes through. */
  parseFromWebview: typeof parseFromWebview;
  readQuantizeConfig: typeof readQuantizeConfig;
  modelFolders(): Promise<string[]>;
}

async function findModelFolders(): Promise<string[]> {
  const files = await vscode.workspace.findFiles('**/config.json', '**/{node_modules,.git,lopro-runs}/**', 2000);
  return files.map((f) => path.dirname(f.fsPath));
}

async function refreshModelFolders(): Promise<string[]> {
  const folders = await findModelFolders();
  const key: Record<string, true> = {};
  for (const f of folders) {
    key[f] = true;
    key[vscode.Uri.file(f).path] = true; // resourcePath is the fsPath; the URI path differs on Windows only
  }
  await vscode.commands.executeCommand('setContext', 'lopro.modelFolders', key);
  return folders;
}

/** A model from the Explorer (folder or .safetensors) or, from the palette, a pick of the workspace's models. */
async function pickModel(uri?: vscode.Uri): Promise<string | undefined> {
  if (uri instanceof vscode.Uri) return uri.fsPath;
  const folders = await findModelFolders();
  const files = (await vscode.workspace.findFiles('**/*.safetensors', '**/{node_modules,.git,lopro-runs}/**', 200)).map((f) => f.fsPath);
  const items: vscode.QuickPickItem[] = [
    ...folders.map((f) => ({ label: path.basename(f), description: f, detail: 'model folder' })),
    ...files.filter((f) => !folders.includes(path.dirname(f))).map((f) => ({ label: path.basename(f), description: f, detail: 'safetensors file' })),
    { label: 'Browse…', description: '' },
  ];
  const pick = await vscode.window.showQuickPick(items, { title: 'LoPRo: model to quantize', ignoreFocusOut: true });
  if (!pick) return undefined;
  if (pick.label !== 'Browse…') return pick.description;
  const chosen = await vscode.window.showOpenDialog({ canSelectFiles: true, canSelectFolders: true, filters: { Safetensors: ['safetensors'] } });
  return chosen?.[0]?.fsPath;
}

async function pickRun(runs: RunManager, title: string): Promise<string | undefined> {
  const recent = runs.recentRuns();
  const items: vscode.QuickPickItem[] = [...recent.map((d) => ({ label: path.basename(d), description: d })), { label: 'Browse…', description: '' }];
  // ignoreFocusOut: a results panel still rendering a finished run can take focus, which would dismiss the pick
  // (seen in the UI e2e: the Compare Runs pick vanished under the cursor right after a run ended).
  const pick = await vscode.window.showQuickPick(items, { title, ignoreFocusOut: true });
  if (!pick) return undefined;
  if (pick.label !== 'Browse…') return pick.description;
  const chosen = await vscode.window.showOpenDialog({ canSelectFiles: false, canSelectFolders: true, title });
  return chosen?.[0]?.fsPath;
}

export function activate(context: vscode.ExtensionContext): LoproApi {
  const log = vscode.window.createOutputChannel('LoPRo');
  const engine = new EngineClient(context.asAbsolutePath(path.join('dist', 'engine.js')), log);
  const status = new RunStatusBar();
  const runs = new RunManager(context, engine, log, status);
  context.subscriptions.push(log, engine, status, runs);

  const guard =
    (action: string, f: (...args: never[]) => Promise<unknown>) =>
    (...args: never[]) =>
      f(...args).catch((e) => runs.showError(action, e));
  const exportCmd = (format: ExportFormat) =>
    guard(`export (${format})`, async (runDir?: unknown) => {
      const dir = typeof runDir === 'string' ? runDir : (runs.activeRunDir() ?? (await pickRun(runs, `LoPRo: run to export (${format})`)));
      if (dir) await runs.exportRun(dir, format);
    });

  context.subscriptions.push(
    vscode.commands.registerCommand(
      'lopro.quantize',
      guard('quantize', async (uri?: vscode.Uri) => {
        const model = await pickModel(uri);
        if (model) runs.openConfig(model);
      }),
    ),
    vscode.commands.registerCommand(
      'lopro.openResults',
      guard('open results', async (runDir?: unknown) => {
        const dir = typeof runDir === 'string' ? runDir : runDir instanceof vscode.Uri ? runDir.fsPath : await pickRun(runs, 'LoPRo: run to open');
        if (dir) await runs.openRun(dir);
      }),
    ),
    vscode.commands.registerCommand(
      'lopro.compareRuns',
      guard('compare runs', async (a?: unknown, b?: unknown) => {
        const runA = typeof a === 'string' ? a : await pickRun(runs, 'LoPRo: first run');
        if (!runA) return;
        const runB = typeof b === 'string' ? b : await pickRun(runs, 'LoPRo: second run');
        if (runB) await runs.compare(runA, runB);
      }),
    ),
    vscode.commands.registerCommand(
      'lopro.tryIt',
      guard('try it', async (runDir?: unknown) => {
        const dir = typeof runDir === 'string' ? runDir : runDir instanceof vscode.Uri ? runDir.fsPath : (runs.activeRunDir() ?? (await pickRun(runs, 'LoPRo: run to try')));
        if (dir) await runs.tryIt(dir);
      }),
    ),
    vscode.commands.registerCommand('lopro.exportNative', exportCmd('native')),
    vscode.commands.registerCommand('lopro.exportF16', exportCmd('f16')),
    vscode.commands.registerCommand('lopro.exportOnnx', exportCmd('onnx')),
    vscode.commands.registerCommand('lopro.cancel', () => runs.cancel()),
    vscode.commands.registerCommand('lopro.showLog', () => log.show(true)),
  );

  // Results and Try it panels come back after a window reload: the webview keeps its run dir in its state
  // (untrusted, so only a string is accepted, and run/load validates the folder).
  const restore = (what: string, open: (runDir: string, panel: vscode.WebviewPanel) => Promise<unknown>): vscode.WebviewPanelSerializer => ({
    async deserializeWebviewPanel(panel: vscode.WebviewPanel, state: unknown) {
      const runDir = (state as { runDir?: unknown } | undefined)?.runDir;
      if (typeof runDir !== 'string' || !runDir) return panel.dispose();
      await open(runDir, panel).catch((e) => {
        panel.dispose();
        runs.showError(what, e);
      });
    },
  });
  context.subscriptions.push(
    vscode.window.registerWebviewPanelSerializer(
      ResultsPanel.viewType,
      restore('restore results', (d, p) => runs.openRun(d, p)),
    ),
    vscode.window.registerWebviewPanelSerializer(
      TryPanel.viewType,
      restore('restore Try it', (d, p) => runs.tryIt(d, p)),
    ),
  );

  const watcher = vscode.workspace.createFileSystemWatcher('**/config.json');
  const refresh = () => void refreshModelFolders().catch((e) => log.appendLine(`[host] model folder scan failed: ${e}`));
  watcher.onDidCreate(refresh);
  watcher.onDidDelete(refresh);
  context.subscriptions.push(watcher, vscode.workspace.onDidChangeWorkspaceFolders(refresh));
  refresh();
  void vscode.commands.executeCommand('setContext', 'lopro.running', false);

  return { engine, runs, parseFromWebview, readQuantizeConfig, modelFolders: refreshModelFolders };
}

export function deactivate(): void {}
