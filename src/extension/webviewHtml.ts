// The one HTML shell of every LoPRo webview: strict CSP, one nonce'd script (dist/webview.js, which
// bundles chart.js and @vscode-elements/elements), theme-aware CSS from media/. No remote content.

import { randomBytes } from 'node:crypto';
import * as vscode from 'vscode';
import type { ViewKind } from '../protocol/webview';

/** Webview options: scripts on, and only dist/ and media/ of the extension readable. */
export function webviewOptions(extensionUri: vscode.Uri): vscode.WebviewPanelOptions & vscode.WebviewOptions {
  return {
    enableScripts: true,
    retainContextWhenHidden: true,
    localResourceRoots: [vscode.Uri.joinPath(extensionUri, 'dist'), vscode.Uri.joinPath(extensionUri, 'media')],
  };
}

/**
 * CSP: `default-src 'none'`; scripts only with the nonce; styles from the extension plus the
 * nonce'd <style>. Exceptions, and why:
 *  - none for chart.js 4: it sets canvas sizes through CSSOM (`el.style.x = ...`), which CSP does
 *    not govern, and no longer injects a stylesheet (2.x needed 'unsafe-inline', Chart.js#5208).
 *  - none for @vscode-elements/elements (Lit): its styles are constructable stylesheets
 *    (`adoptedStyleSheets`), which `style-src` does not block in Chromium.
 *  - img-src / font-src: only `${cspSource}` (the extension's own media/), nothing remote, no data:.
 */
export function webviewHtml(webview: vscode.Webview, extensionUri: vscode.Uri, view: ViewKind, title: string): string {
  const nonce = randomBytes(16).toString('base64');
  const script = webview.asWebviewUri(vscode.Uri.joinPath(extensionUri, 'dist', 'webview.js'));
  const css = webview.asWebviewUri(vscode.Uri.joinPath(extensionUri, 'media', 'webview.css'));
  const csp = [
    "default-src 'none'",
    `script-src 'nonce-${nonce}'`,
    `style-src ${webview.cspSource} 'nonce-${nonce}'`,
    `img-src ${webview.cspSource}`,
    `font-src ${webview.cspSource}`,
  ].join('; ');
  const esc = (s: string) => s.replace(/[&<>"]/g, (c) => `&#${c.charCodeAt(0)};`);
  return `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="UTF-8">
<meta http-equiv="Content-Security-Policy" content="${csp}">
<meta name="viewport" content="width=device-width, initial-scale=1.0">
<link rel="stylesheet" href="${css}">
<title>${esc(title)}</title>
</head>
<body data-view="${view}">
<div id="app"><p class="muted">Loading…</p></div>
<script nonce="${nonce}" src="${script}"></script>
</body>
</html>`;
}
