// Integration tests inside code-server's extension host (real VS Code API, real engine child
// process). The workspace holds a copy of fixtures/tiny (see scripts/e2e/run-exthost.sh).
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as vscode from 'vscode';
import { DEFAULT_CONFIG, validateConfig } from '../../src/protocol/config';
import { ErrorCode } from '../../src/protocol/messages';
import type { LoproApi } from '../../src/extension/extension';

const EXT_ID = 'lopro.lopro-vscode';
const ws = () => vscode.workspace.workspaceFolders![0].uri.fsPath;

async function api(): Promise<LoproApi> {
  const ext = vscode.extensions.getExtension<LoproApi>(EXT_ID);
  assert.ok(ext, `extension ${EXT_ID} not found`);
  return ext.activate();
}

async function waitFor<T>(fn: () => T | undefined, ms = 15000): Promise<T | undefined> {
  const end = Date.now() + ms;
  for (;;) {
    const v = fn();
    if (v || Date.now() > end) return v;
    await new Promise((r) => setTimeout(r, 100));
  }
}

suite('LoPRo extension in a real VS Code extension host', () => {
  test('activates, and every contributed command is registered', async () => {
    await api();
    const ext = vscode.extensions.getExtension(EXT_ID)!;
    assert.ok(ext.isActive);
    const contributed: string[] = ext.packageJSON.contributes.commands.map((c: { command: string }) => c.command);
    assert.deepEqual(contributed.sort(), [
      'lopro.cancel',
      'lopro.compareRuns',
      'lopro.exportF16',
      'lopro.exportNative',
      'lopro.exportOnnx',
      'lopro.openResults',
      'lopro.quantize',
      'lopro.showLog',
      'lopro.tryIt',
    ]);
    const registered = new Set(await vscode.commands.getCommands(true));
    for (const c of contributed) assert.ok(registered.has(c), `${c} is contributed but not registered`);
  });

  test('the Explorer context key lists the tiny model folder', async () => {
    const folders = await (await api()).modelFolders();
    assert.ok(folders.includes(path.join(ws(), 'tiny')), `model folders: ${folders.join(', ')}`);
  });

  test('engine client round trip: engine/hello, then model/inspect on fixtures/tiny', async () => {
    const { engine } = await api();
    const hello = await engine.request('engine/hello', { clientVersion: 'exthost-test' }, { timeoutMs: 30000 });
    assert.match(hello.engineVersion, /\d/);
    assert.ok(hello.availableEps.includes('cpu'), `EPs: ${hello.availableEps}`);
    assert.ok(hello.pid > 0 && hello.pid !== process.pid, 'the engine runs in its own process');
    const s = await engine.request('model/inspect', { path: path.join(ws(), 'tiny') }, { timeoutMs: 60000 });
    assert.equal(s.kind, 'llama');
    assert.equal(s.numBlocks, 4);
    assert.equal(s.linears.length, 28); // 4 blocks × q,k,v,o,gate,up,down
    const q = s.linears.find((l) => l.name === 'model.layers.0.self_attn.q_proj');
    assert.deepEqual(q && [q.rows, q.cols], [256, 256]);
  });

  test('model/inspect of a missing path fails with a coded error naming the path', async () => {
    const { engine } = await api();
    const bad = path.join(ws(), 'no-such-model');
    await assert.rejects(engine.request('model/inspect', { path: bad }, { timeoutMs: 30000 }), (e: { code?: string; message?: string; where?: string }) => {
      assert.ok(e.code && e.code !== ErrorCode.EngineCrashed, `code ${e.code}`);
      assert.ok(`${e.message} ${e.where ?? ''}`.includes('no-such-model'), `message: ${e.message}`);
      return true;
    });
  });

  test('settings mirror DEFAULT_CONFIG, and an invalid setting is explained by field', async () => {
    const a = await api();
    assert.deepEqual(a.readQuantizeConfig(), { ...DEFAULT_CONFIG, layerOverrides: {} });
    const cfg = vscode.workspace.getConfiguration('lopro.quantize');
    await cfg.update('hadamardBlock', 100, vscode.ConfigurationTarget.Global);
    await cfg.update('bits', 5, vscode.ConfigurationTarget.Global);
    await cfg.update('threads', 300, vscode.ConfigurationTarget.Global);
    try {
      const issues = validateConfig(a.readQuantizeConfig());
      const byField = new Map(issues.map((i) => [i.field, i.message]));
      assert.match(byField.get('hadamardBlock') ?? '', /power of two ≤ 4096, got 100/);
      assert.match(byField.get('bits') ?? '', /2, 3, 4 or 8, got 5/);
      assert.match(byField.get('threads') ?? '', /integer in \[0, 256\], got 300/);
      // The run manager refuses to start such a run, naming the fields.
      await assert.rejects(a.runs.startRun(path.join(ws(), 'tiny'), a.readQuantizeConfig(), path.join(ws(), 'runs', 'never'), false), (e: { code?: string; message?: string }) => {
        assert.equal(e.code, ErrorCode.BadConfig);
        assert.match(e.message ?? '', /hadamardBlock/);
        return true;
      });
    } finally {
      await cfg.update('hadamardBlock', undefined, vscode.ConfigurationTarget.Global);
      await cfg.update('bits', undefined, vscode.ConfigurationTarget.Global);
      await cfg.update('threads', undefined, vscode.ConfigurationTarget.Global);
    }
  });

  test('the webview message validator rejects junk and accepts the real messages', async () => {
    const { parseFromWebview } = await api();
    const junk: unknown[] = [
      null,
      42,
      'ready',
      [],
      {},
      { type: 'nope' },
      { type: 'ready', extra: 1 },
      { type: 'start' },
      { type: 'start', config: { bits: 2 }, outputFolder: '/x' },
      { type: 'start', config: { ...DEFAULT_CONFIG, bits: '2' }, outputFolder: '/x' },
      { type: 'start', config: { ...DEFAULT_CONFIG, evil: true }, outputFolder: '/x' },
      { type: 'start', config: { ...DEFAULT_CONFIG, layerOverrides: { '*': { bits: NaN } } }, outputFolder: '/x' },
      { type: 'openLayer', layer: '' },
      { type: 'openLayer', layer: 7 },
      { type: 'requantize', layer: 'a', overrides: { bits: 3, rm: '-rf' } },
      { type: 'apply', layer: 'a' },
      { type: 'export', format: 'exe' },
      { type: 'pick', field: '/etc/passwd' },
    ];
    for (const j of junk) assert.equal(parseFromWebview(j), undefined, `accepted junk: ${JSON.stringify(j)}`);
    const good: unknown[] = [
      { type: 'ready' },
      { type: 'cancel' },
      { type: 'pick', field: 'calibText' },
      { type: 'start', config: { ...DEFAULT_CONFIG, layerOverrides: { '*.down_proj': { bits: 4 } } }, outputFolder: '/tmp/run' },
      { type: 'openLayer', layer: 'model.layers.0.mlp.up_proj' },
      { type: 'requantize', layer: 'l', overrides: { bits: 4, rank: 8 } },
      { type: 'apply', layer: 'l', candidateId: 'c1' },
      { type: 'export', format: 'onnx' },
    ];
    for (const g of good) assert.deepEqual(parseFromWebview(g), g);
  });

  test('LoPRo: Quantize… on the tiny folder opens the config panel', async () => {
    await api();
    await vscode.commands.executeCommand('lopro.quantize', vscode.Uri.file(path.join(ws(), 'tiny')));
    const tab = await waitFor(() =>
      vscode.window.tabGroups.all.flatMap((g) => g.tabs).find((t) => t.input instanceof vscode.TabInputWebview && t.label === 'LoPRo: Quantize tiny'),
    );
    assert.ok(tab, 'config panel tab not found');
  });
});

suite('LoPRo runs through the real engine (cancel, crash, resume)', function () {
  this.timeout(240000);
  const tiny = () => path.join(ws(), 'tiny');
  // Small but real: 8 windows of 64 tokens of a held-out text, 3 bits.
  const fast = () => ({ ...DEFAULT_CONFIG, layerOverrides: {}, calibText: path.join(ws(), 'calib.txt'), calibSamples: 8, ctx: 64, bits: 3 });

  test('cancel ends a run within 2 s, and the engine answers afterwards', async () => {
    const a = await api();
    const runDir = path.join(ws(), 'runs', 'cancelled');
    const done = a.runs.startRun(tiny(), fast(), runDir, false);
    assert.ok(await waitFor(() => a.runs.isRunning || undefined, 10000), 'run did not start');
    await new Promise((r) => setTimeout(r, 3000)); // into calibration / the first block
    const t0 = Date.now();
    a.runs.cancel();
    await done;
    const ms = Date.now() - t0;
    assert.ok(!a.runs.isRunning);
    // 2 s deadline (CANCEL_DEADLINE_MS) plus IPC/exit slack; measured: see lastCancel in the log.
    assert.ok(ms < 2500, `cancel took ${ms} ms`);
    assert.ok(a.engine.lastCancel, 'no cancel outcome recorded');
    assert.ok(a.engine.lastCancel.ms <= 2200, JSON.stringify(a.engine.lastCancel));
    const hello = await a.engine.request('engine/hello', { clientVersion: 'after-cancel' }, { timeoutMs: 30000 });
    assert.ok(hello.pid > 0);
  });

  test('engine crash mid-run → clear E_ENGINE_CRASHED error; resume finishes the run from its checkpoint', async () => {
    const { engine } = await api();
    const runDir = path.join(ws(), 'runs', 'crashed');
    const { pid } = await engine.request('engine/hello', { clientVersion: 'crash-test' }, { timeoutMs: 30000 });
    let killed = false;
    const first = engine.request(
      'run/start',
      { modelPath: tiny(), config: fast(), runDir, resume: false },
      {
        callbacks: {
          // Killed once block 0 is committed ("block 1/N done" is sent after its run.json is written; block
          // commits run in the background while the next block computes, so a layer count says nothing).
          onProgress: (v) => {
            if (!killed && v.kind === 'report' && /^block 1\/\d+ done/.test(v.message ?? '')) {
              killed = true;
              process.kill(pid, 'SIGKILL');
            }
          },
        },
      },
    );
    await assert.rejects(first, (e: { code?: string; message?: string }) => {
      assert.equal(e.code, ErrorCode.EngineCrashed);
      assert.match(e.message ?? '', /engine stopped during run\/start \(killed by SIGKILL\)/);
      return true;
    });
    let after = 0;
    const s = await engine.request('run/start', { modelPath: tiny(), config: fast(), runDir, resume: true }, { callbacks: { onLayerDone: () => void after++ } });
    assert.equal(s.layers.length, 28);
    assert.equal(s.resumed, true);
    assert.ok(after <= 28 - 7, `resume redid ${after} layers; block 0 was complete before the crash`);
  });
});

suite('LoPRo crash → "Resume" through the run manager (the path the UI uses)', function () {
  this.timeout(240000);
  test('a crashed run shows a clear error with Resume; choosing Resume finishes the run', async () => {
    const a = await api();
    const runDir = path.join(ws(), 'runs', 'ui-crash');
    const config = { ...DEFAULT_CONFIG, layerOverrides: {}, calibText: path.join(ws(), 'calib.txt'), calibSamples: 32, ctx: 64, bits: 3 };
    const original = a.runs.errorPrompt;
    let shown = '';
    let offered: string[] = [];
    // Stands in for the user: reads the error notification and clicks its first action.
    a.runs.errorPrompt = async (m: string, ...items: string[]) => {
      shown = m;
      offered = items;
      return items.includes('Resume') ? 'Resume' : undefined;
    };
    try {
      const { pid } = await a.engine.request('engine/hello', { clientVersion: 'ui-crash' }, { timeoutMs: 30000 });
      const first = a.runs.startRun(path.join(ws(), 'tiny'), config, runDir, false);
      assert.ok(await waitFor(() => a.runs.isRunning || undefined, 10000), 'run did not start');
      // Kill mid-run, once block 0 is committed (run.json is written last in a block commit; a fixed
      // delay let a fast machine finish the run before the kill).
      const block0 = path.join(runDir, 'run.json');
      const deadline = Date.now() + 120000;
      while (!fs.existsSync(block0) && a.runs.isRunning && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
      assert.ok(a.runs.isRunning, 'the run finished before block 0 was checkpointed: nothing left to crash');
      process.kill(pid, 'SIGKILL');
      await first;
      assert.ok(await waitFor(() => shown || undefined, 10000), 'no error message shown');
      assert.match(shown, /E_ENGINE_CRASHED/);
      assert.match(shown, /engine stopped during run\/start/);
      assert.deepEqual(offered, ['Resume', 'Show Log']);
      // Resume restarts the run with resume: true; wait for it to start and finish.
      assert.ok(await waitFor(() => a.runs.isRunning || undefined, 15000), 'Resume did not start a run');
      assert.ok(await waitFor(() => (!a.runs.isRunning ? true : undefined), 200000), 'resumed run did not finish');
      const s = await a.engine.request('run/load', { runDir }, { timeoutMs: 60000 });
      assert.equal(s.layers.length, 28);
    } finally {
      a.runs.errorPrompt = original;
    }
  });
});

suite('LoPRo commands on finished runs', function () {
  this.timeout(240000);
  test('Compare Runs loads two runs (run/load) and opens the compare panel; Open Results reopens a run', async () => {
    const { engine } = await api();
    const a = path.join(ws(), 'runs', 'crashed'); // finished by the resume test above
    const b = path.join(ws(), 'runs', 'rtn');
    const config = { ...DEFAULT_CONFIG, layerOverrides: {}, method: 'rtn' as const, bits: 3, calibText: path.join(ws(), 'calib.txt'), calibSamples: 8, ctx: 64 };
    const s = await engine.request('run/start', { modelPath: path.join(ws(), 'tiny'), config, runDir: b, resume: false });
    assert.equal(s.layers.length, 28);
    await vscode.commands.executeCommand('lopro.compareRuns', a, b);
    const tab = await waitFor(() =>
      vscode.window.tabGroups.all.flatMap((g) => g.tabs).find((t) => t.input instanceof vscode.TabInputWebview && t.label === 'LoPRo: crashed vs rtn'),
    );
    assert.ok(tab, 'compare panel tab not found');
    await vscode.commands.executeCommand('lopro.openResults', b);
    const results = await waitFor(() =>
      vscode.window.tabGroups.all.flatMap((g) => g.tabs).find((t) => t.input instanceof vscode.TabInputWebview && t.label === 'LoPRo Results: rtn'),
    );
    assert.ok(results, 'results panel tab not found');
  });
});

suite('LoPRo: Try It on a finished run', function () {
  this.timeout(240000);
  type Posted = {
    type: string;
    side?: string;
    delta?: string;
    tokens?: number;
    result?: { text: string; source: string; stop: string; tokens: number[] };
    cancelled?: boolean;
    error?: { code: string };
  };

  test('Try It opens one panel per run; both models stream their answers into it, and Stop cancels both', async () => {
    const a = await api();
    const runDir = path.join(ws(), 'runs', 'rtn'); // from the compare test
    await vscode.commands.executeCommand('lopro.tryIt', runDir);
    await vscode.commands.executeCommand('lopro.tryIt', runDir); // reveals the same panel
    const tabs = () => vscode.window.tabGroups.all.flatMap((g) => g.tabs).filter((t) => t.input instanceof vscode.TabInputWebview && t.label === 'LoPRo Try it: rtn');
    assert.ok(await waitFor(() => tabs()[0]), 'Try it panel tab not found');
    assert.equal(tabs().length, 1, 'a second Try It on the same run opened another panel');
    const panel = a.runs.tryPanel(runDir);
    assert.ok(panel, 'no Try it panel for the run');
    // What the panel sends its webview, as the webview would get it.
    const posted: Posted[] = [];
    const post = panel.post.bind(panel);
    panel.post = (m) => {
      posted.push(m as Posted);
      post(m);
    };
    const of = (type: string, side: string) => posted.filter((m) => m.type === type && m.side === side);

    await panel.generate({ prompt: 'The city council', maxTokens: 16, temperature: 0, topP: 1 });
    for (const [side, source] of [
      ['float', 'float'],
      ['quantized', 'native (quantized)'],
    ]) {
      const [done] = of('try/done', side);
      assert.ok(done?.result, `${side}: no result (${JSON.stringify(of('try/failed', side))})`);
      assert.equal(done.result.source, source);
      assert.ok(done.result.text.length > 0);
      assert.equal(
        of('try/text', side)
          .map((m) => m.delta)
          .join(''),
        done.result.text,
        `${side}: the streamed text is the result's`,
      );
      const counts = of('try/text', side).map((m) => m.tokens ?? 0);
      const n = done.result.tokens.length;
      assert.ok(
        counts.every((c, i) => c >= 1 && c <= n && (i === 0 || c > counts[i - 1])),
        `${side}: token counts ${counts.join(',')} of ${n}`,
      );
    }

    // Stop once both sides have streamed some of a long answer: both end as cancelled, within the 2 s deadline.
    posted.length = 0;
    const long = panel.generate({ prompt: 'The city council', maxTokens: 1500, temperature: 0, topP: 1 });
    assert.ok(await waitFor(() => (of('try/text', 'float').length && of('try/text', 'quantized').length) || undefined, 60000), 'no text streamed');
    const t0 = Date.now();
    panel.stop();
    await long;
    const ms = Date.now() - t0;
    for (const side of ['float', 'quantized']) {
      const [failed] = of('try/failed', side);
      assert.ok(failed?.cancelled, `${side}: ${JSON.stringify(failed ?? of('try/done', side)[0])}`);
    }
    assert.ok(ms < 2500, `Stop took ${ms} ms`);
    assert.ok(!panel.generating);
  });
});

suite('LoPRo export commands', function () {
  this.timeout(300000);
  for (const [command, format] of [
    ['lopro.exportF16', 'f16'],
    ['lopro.exportOnnx', 'onnx'],
  ] as const) {
    test(`${command} writes the export, loads it back and reproduces the run perplexity`, async () => {
      const a = await api();
      const runDir = path.join(ws(), 'runs', 'rtn'); // from the compare test
      const previous = a.runs.lastExport;
      await vscode.commands.executeCommand(command, runDir);
      const e = a.runs.lastExport;
      assert.notEqual(e, previous, 'the command did not export (see the LoPRo output channel)');
      assert.ok(e, 'no export result (see the LoPRo output channel)');
      assert.equal(e.format, format);
      assert.equal(e.result.outDir, path.join(runDir, `export-${format}`));
      assert.ok(e.result.files.length > 0 && e.result.bytes > 0);
      for (const f of e.result.files) assert.ok(fs.existsSync(path.isAbsolute(f) ? f : path.join(e.result.outDir, f)), `missing ${f}`);
      assert.ok(e.result.perplexity !== undefined && e.result.runPerplexity !== undefined, 'no perplexity check');
      // F16 / ONNX hold the dequantized weights: float rounding only (measured: see the log line).
      assert.ok(Math.abs(e.result.perplexity - e.result.runPerplexity) <= 0.01 * e.result.runPerplexity, `export ${e.result.perplexity} vs run ${e.result.runPerplexity}`);
    });
  }
});
