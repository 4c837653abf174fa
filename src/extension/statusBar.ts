// The status bar item shown while a run is going: model, block / layer, percentage, ETA.
// Clicking it cancels the run (same as LoPRo: Cancel).

import * as vscode from 'vscode';
import type { ProgressValue } from '../protocol/messages';

export class RunStatusBar implements vscode.Disposable {
  private readonly item = vscode.window.createStatusBarItem('lopro.run', vscode.StatusBarAlignment.Left, 100);
  private model = '';

  constructor() {
    this.item.name = 'LoPRo run';
    this.item.command = 'lopro.cancel';
  }

  begin(model: string): void {
    this.model = model;
    this.item.text = `$(loading~spin) LoPRo: ${model}`;
    this.item.tooltip = 'LoPRo is quantizing. Click to cancel.';
    this.item.show();
  }

  update(v: ProgressValue): void {
    if (v.kind === 'end') return;
    const pct = v.percentage !== undefined ? ` ${Math.round(v.percentage)}%` : '';
    const where = v.kind === 'report' && v.block !== undefined ? ` block ${v.block}` : '';
    const eta = v.kind === 'report' && v.etaSeconds !== undefined ? ` · ${Math.ceil(v.etaSeconds)} s left` : '';
    this.item.text = `$(loading~spin) LoPRo: ${this.model}${where}${pct}${eta}`;
    if (v.message) this.item.tooltip = `${v.message}\nClick to cancel.`;
  }

  end(): void {
    this.item.hide();
  }

  dispose(): void {
    this.item.dispose();
  }
}
