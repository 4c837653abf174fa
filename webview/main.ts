// Webview entry (bundled to dist/webview.js with chart.js and @vscode-elements/elements).
// <body data-view="config|results|compare|try"> picks the view; every view talks to the host only
// through ./api (validated messages) and draws only what the host sends.

import '@vscode-elements/elements/dist/vscode-button/index.js';
import '@vscode-elements/elements/dist/vscode-checkbox/index.js';
import '@vscode-elements/elements/dist/vscode-form-group/index.js';
import '@vscode-elements/elements/dist/vscode-form-helper/index.js';
import '@vscode-elements/elements/dist/vscode-label/index.js';
import '@vscode-elements/elements/dist/vscode-option/index.js';
import '@vscode-elements/elements/dist/vscode-radio/index.js';
import '@vscode-elements/elements/dist/vscode-radio-group/index.js';
import '@vscode-elements/elements/dist/vscode-single-select/index.js';
import '@vscode-elements/elements/dist/vscode-textarea/index.js';
import '@vscode-elements/elements/dist/vscode-textfield/index.js';
import '@vscode-elements/elements/dist/vscode-progress-bar/index.js';
import { onHostMessage, post } from './api';
import { configView } from './configView';
import { resultsView } from './resultsView';
import { compareView } from './compareView';
import { tryView } from './tryView';

const root = document.getElementById('app')!;
const view = document.body.dataset.view;
const views = { config: configView, results: resultsView, compare: compareView, try: tryView };
const handler = (views[view as keyof typeof views] ?? compareView)(root);
onHostMessage(handler);
post({ type: 'ready' });
