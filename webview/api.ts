// The webview's side of the host channel: typed post, and a receive hook that drops anything
// parseToWebview does not recognise. acquireVsCodeApi may be called once per page.

import { parseToWebview, type FromWebview, type ToWebview } from '../src/protocol/webview';

interface VsCodeApi {
  postMessage(m: unknown): void;
  getState(): unknown;
  setState(s: unknown): void;
}
declare function acquireVsCodeApi(): VsCodeApi;

const vscode = acquireVsCodeApi();

export const post = (m: FromWebview): void => vscode.postMessage(m);
export const getState = <T>(): T | undefined => vscode.getState() as T | undefined;
export const setState = (s: unknown): void => vscode.setState(s);

export function onHostMessage(handler: (m: ToWebview) => void): void {
  window.addEventListener('message', (e: MessageEvent) => {
    const m = parseToWebview(e.data);
    if (!m) {
      console.warn('LoPRo webview: dropped unknown message', e.data);
      return;
    }
    handler(m);
  });
}
